"""The official ``openai`` client against the OpenAI-compatible API, unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

MODEL = "tiny-llm"


@pytest.fixture(scope="module")
def client(llm_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{llm_url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_models_lists_the_openai_models(client: openai.OpenAI) -> None:
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["minilm", "tiny-llm"]
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion_respects_max_tokens_and_counts_usage(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=7, seed=1)
    assert done.object == "text_completion"
    assert len(done.choices) == 1
    assert done.choices[0].finish_reason == "length"
    assert done.choices[0].text
    assert done.usage is not None
    assert done.usage.completion_tokens == 7
    assert done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + 7


def test_completion_defaults_to_16_tokens(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="Hello")
    assert done.usage is not None and done.usage.completion_tokens == 16


def test_same_seed_same_text_and_greedy_is_deterministic(client: openai.OpenAI) -> None:
    def text(**kw: object) -> str:
        out = client.completions.create(model=MODEL, prompt="A story", max_tokens=12, **kw)  # type: ignore[call-overload]
        return str(out.choices[0].text)

    assert text(seed=7, temperature=1.0) == text(seed=7, temperature=1.0)
    assert text(temperature=0) == text(temperature=0)
    samples = {text(seed=s, temperature=1.5) for s in range(4)}
    assert len(samples) > 1


def test_stop_sequence_ends_the_text_before_it(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="Stop here", max_tokens=20, temperature=0)
    text = free.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    cut = client.completions.create(
        model=MODEL, prompt="Stop here", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


def test_n_and_several_prompts_give_one_choice_each(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt=["one", "two"], n=2, max_tokens=3, seed=3)
    assert [c.index for c in done.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" for c in done.choices)
    assert done.usage is not None and done.usage.completion_tokens == 12


def test_echo_prepends_the_prompt(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="Echo me", max_tokens=2, echo=True)
    assert done.choices[0].text.startswith("Echo me")


def test_streamed_completion_equals_the_whole_one(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="Stream", max_tokens=10, temperature=0)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="Stream", max_tokens=10, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_uses_the_chat_template(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi!"},
        ],
        max_tokens=5,
    )
    assert done.object == "chat.completion"
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content
    assert done.usage is not None
    # The template wraps each message in role markers: more tokens than the raw text.
    raw = client.completions.create(model=MODEL, prompt="You are terse.Hi!", max_tokens=1)
    assert raw.usage is not None
    assert done.usage.prompt_tokens > raw.usage.prompt_tokens


def test_chat_stream_with_usage_ends_with_done(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count"}],
        max_completion_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        n=2,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    assert chunks[-1].choices == []
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == ["length", "length"]
    text = {0: "", 1: ""}
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
    assert text[0] and text[1]


def test_raw_stream_is_sse_ending_with_done(llm_url: str) -> None:
    body = {"model": MODEL, "prompt": "Raw", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{llm_url}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_embeddings_follow_meaning(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model="minilm", input=["cat", "kitten", "car"])
    assert [d.index for d in out.data] == [0, 1, 2]
    cat, kitten, car = (np.array(d.embedding) for d in out.data)
    assert cat.shape == (384,)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(cat, kitten) > cosine(cat, car)
    assert out.usage.prompt_tokens >= 3


def test_embeddings_base64_match_floats(llm_url: str) -> None:
    import base64

    def embed(fmt: str) -> object:
        body = {"model": "minilm", "input": "hello", "encoding_format": fmt}
        return httpx.post(f"{llm_url}/v1/embeddings", json=body, timeout=60).json()

    floats = np.array(embed("float")["data"][0]["embedding"], np.float32)  # type: ignore[index]
    packed = embed("base64")["data"][0]["embedding"]  # type: ignore[index]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(packed), "<f4"), floats, rtol=1e-6)


# ---- errors: OpenAI's error object and status ----


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="nope", prompt="x")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])


def test_wrong_task_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input="x")
    assert "/v1/completions" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="minilm", prompt="x")


def test_prompt_longer_than_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="word " * 100, max_tokens=5000)
    assert "maximum context length" in caught.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "temperature": 3}, "temperature"),
        ({"model": MODEL, "prompt": "x", "n": 100}, "n"),
        ({"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL, "prompt": "x", "logprobs": 2}, "logprobs"),
        ({"model": MODEL, "prompt": "x", "bogus": 1}, "bogus"),
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"prompt": "x"}, "model"),
    ],
)
def test_invalid_completion_fields_name_the_param(llm_url: str, body: dict, param: str) -> None:
    response = httpx.post(f"{llm_url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_chat_errors(llm_url: str) -> None:
    bad = [
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [{"a": 1}]},
    ]
    for body in bad:
        response = httpx.post(f"{llm_url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_400_openai_error(llm_url: str) -> None:
    response = httpx.post(
        f"{llm_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_streaming_error_before_start_is_a_status(llm_url: str) -> None:
    body = {"model": MODEL, "prompt": "x " * 50, "max_tokens": 4000, "stream": True}
    response = httpx.post(f"{llm_url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert "maximum context length" in response.json()["error"]["message"]
