"""OpenAI request parsing and the mapping of sampling fields onto LLM model inputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.errors import BadRequest, Unavailable
from app.llm.generation import GenerationParams, ModelInputs, build_request
from app.llm.tokenizer import ChatTokenizer, tokenizer_source
from app.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_openai_body,
)

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def test_completion_defaults_follow_openai() -> None:
    req = parse_openai_body(CompletionRequest, b'{"model": "m", "prompt": "hi"}')
    assert (req.max_tokens, req.temperature, req.top_p, req.n, req.stream) == (
        16,
        1.0,
        1.0,
        1,
        False,
    )
    assert req.prompts() == ["hi"]
    assert req.stop_list() == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": "m", "prompt": "x", "seed": -1}, "seed"),
        ({"model": "m", "prompt": "x", "stop": ""}, "stop"),
        ({"model": "m", "prompt": "x", "logit_bias": {"1": 2.0}}, "logit_bias"),
        ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        ({"model": "m", "prompt": [1, 2]}, "prompt"),
        ({"model": "", "prompt": "x"}, "model"),
    ],
)
def test_bad_completion_fields_are_400_with_param(body: dict, param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_openai_body(CompletionRequest, json.dumps(body).encode())
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_body_must_be_a_json_object() -> None:
    for raw in (b"[]", b"12", b"{", b""):
        with pytest.raises(BadRequest):
            parse_openai_body(CompletionRequest, raw)


def test_chat_token_limit_prefers_max_completion_tokens() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "max_tokens": 5,
            "max_completion_tokens": 9,
        }
    )
    assert req.token_limit() == 9
    assert req.chat() == [{"role": "user", "content": "a"}]


def test_chat_refuses_what_it_cannot_honour() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for extra in (
        {"logprobs": True},
        {"tool_choice": "auto"},
        {"response_format": {"type": "json_object"}},
    ):
        with pytest.raises(BadRequest):
            parse_openai_body(ChatCompletionRequest, json.dumps(base | extra).encode())


def test_embedding_inputs() -> None:
    assert EmbeddingRequest.model_validate({"model": "m", "input": "a"}).texts() == ["a"]
    with pytest.raises(BadRequest) as caught:
        parse_openai_body(EmbeddingRequest, b'{"model": "m", "input": []}')
    assert caught.value.param == "input"


VLLM_STYLE = SimpleNamespace(
    max_batch_size=0,
    input=[
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1]},
        {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1]},
        {"name": "return_num_output_tokens", "data_type": "TYPE_BOOL", "dims": [1]},
    ],
)
TRTLLM_STYLE = SimpleNamespace(
    max_batch_size=64,
    input=[
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": [1]},
        {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1]},
        {"name": "temperature", "data_type": "TYPE_FP32", "dims": [1]},
        {"name": "random_seed", "data_type": "TYPE_UINT64", "dims": [1]},
    ],
)


def test_vllm_style_models_get_sampling_parameters_json() -> None:
    params = GenerationParams(max_tokens=5, temperature=0.5, seed=3, stop=("x",))
    request = build_request("m", ModelInputs.from_config(VLLM_STYLE), "hello", params)
    inputs = dict(request.inputs)
    assert inputs["text_input"].tolist() == [b"hello"]
    assert inputs["stream"].tolist() == [True]
    assert inputs["exclude_input_in_output"].tolist() == [True]
    assert inputs["return_num_output_tokens"].tolist() == [True]
    sent = json.loads(inputs["sampling_parameters"][0])
    assert sent == {"max_tokens": 5, "temperature": 0.5, "seed": 3, "stop": ["x"]}
    assert dict(request.parameters) == {}


def test_trtllm_style_models_get_one_input_per_field() -> None:
    params = GenerationParams(max_tokens=5, temperature=0.5, seed=3)
    request = build_request("m", ModelInputs.from_config(TRTLLM_STYLE), "hello", params)
    inputs = dict(request.inputs)
    assert inputs["text_input"].shape == (1, 1)
    assert inputs["max_tokens"].dtype == np.int32 and inputs["max_tokens"].item() == 5
    assert inputs["random_seed"].dtype == np.uint64 and inputs["random_seed"].item() == 3
    assert inputs["temperature"].dtype == np.float32
    assert dict(request.parameters) == {}


def test_a_field_the_model_has_no_input_for_is_refused_naming_it() -> None:
    params = GenerationParams(max_tokens=5, top_p=0.9)
    with pytest.raises(BadRequest) as caught:
        build_request("m", ModelInputs.from_config(TRTLLM_STYLE), "hello", params)
    assert caught.value.param == "top_p" and "top_p" in caught.value.message


def test_a_model_without_text_input_is_not_a_generator() -> None:
    config = SimpleNamespace(max_batch_size=0, input=[{"name": "X", "data_type": "TYPE_FP32"}])
    with pytest.raises(BadRequest):
        build_request("m", ModelInputs.from_config(config), "x", GenerationParams())


def test_tokenizer_comes_from_model_json_relative_to_the_version() -> None:
    source = tokenizer_source(str(REPO), "tiny-llm", None)
    assert source == str(REPO / "tiny-llm" / "1" / "hf")
    assert tokenizer_source(str(REPO), "tiny-llm", "org/name") == "org/name"
    with pytest.raises(Unavailable):
        tokenizer_source(str(REPO), "echo", None)


def test_chat_template_of_the_stand_in() -> None:
    tokenizer = ChatTokenizer(str(REPO / "tiny-llm" / "1" / "hf"))
    prompt = tokenizer.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert tokenizer.count("Hi") >= 1
    plain = ChatTokenizer(str(REPO / "tiny-llm" / "1" / "hf"), chat_template="{{ 'X' }}")
    assert plain.chat_prompt([{"role": "user", "content": "Hi"}]) == "X"


def test_missing_tokenizer_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        ChatTokenizer(str(tmp_path / "nothing-here"))
