"""bench/llm.py counts tokens of models that return no num_output_tokens (the
TensorRT-LLM ensemble): one per streamed response with text."""

from __future__ import annotations

from bench.llm import event_tokens


def test_the_engines_count_wins() -> None:
    assert event_tokens({"text_output": "ab", "num_output_tokens": 2}) == 2
    assert event_tokens({"text_output": "", "num_output_tokens": 0}) == 0


def test_without_a_count_each_response_with_text_is_one_token() -> None:
    events = [{"text_output": "He"}, {"text_output": "llo"}, {"text_output": ""}]
    assert sum(event_tokens(e) for e in events) == 2
