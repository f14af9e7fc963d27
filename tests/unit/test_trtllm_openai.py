"""OpenAI /v1 against the TensorRT-LLM ensemble: what app/llm sends
is accepted and mapped onto the engine's inputs, the rest is refused naming the field,
and streamed text arrives as whole characters."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from app.llm.generation import GenerationParams, ModelInputs, _delta, build_request, text_decoder
from tests.conftest import MODEL_REPOSITORY


def _load(model: str, name: str) -> ModuleType:
    path = MODEL_REPOSITORY / model / "1" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sampling = _load("llama3-8b-trtllm-preprocess", "sampling")
detokenize = _load("llama3-8b-trtllm-postprocess", "detokenize")

ENSEMBLE = SimpleNamespace(
    max_batch_size=64,
    input=[
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": [1]},
        {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1]},
    ],
)


def _sent(params: GenerationParams) -> Any:
    request = build_request("llama3-8b-trtllm", ModelInputs.from_config(ENSEMBLE), "hi", params)
    return request.inputs["sampling_parameters"].reshape(-1)[0]


def test_what_openai_requests_send_reaches_the_engine() -> None:
    params = GenerationParams(
        max_tokens=8,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop=("\n\n", "END"),
        presence_penalty=0.5,
        frequency_penalty=-0.25,
    )
    parsed = sampling.parse_sampling(_sent(params), None)
    assert parsed["seed"] == 7 and parsed["stop"] == ["\n\n", "END"]
    assert parsed["presence_penalty"] == 0.5 and parsed["frequency_penalty"] == -0.25
    assert parsed["repetition_penalty"] == 1.0 and parsed["min_tokens"] == 0


def test_every_vllm_name_accepted_has_an_engine_input() -> None:
    engine = (MODEL_REPOSITORY / "llama3-8b-trtllm-engine" / "config.pbtxt").read_text()
    for name, engine_input in sampling.MAPPED.items():
        assert f'name: "{engine_input.split()[0]}"' in engine, name


def test_ignore_eos_holds_the_engine_to_max_tokens_and_no_seed_draws_one() -> None:
    parsed = sampling.parse_sampling(json.dumps({"max_tokens": 9, "ignore_eos": True}), None)
    assert parsed["min_tokens"] == 9
    seeds = {sampling.parse_sampling(None, None)["seed"] for _ in range(4)}
    assert len(seeds) > 1  # the engine's fixed default would make samples alike


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"logprobs": 2}, "logprobs"),
        ({"min_p": 0.1}, "min_p"),
        ({"best_of": 2}, "best_of"),
        ({"seed": -1}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_the_rest_is_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        sampling.parse_sampling(json.dumps(options), None)


def test_stop_words_take_tensorrt_llms_flat_ids_and_offsets() -> None:
    encode = {"a": [5], "b c": [6, 7], "": []}.__getitem__
    assert sampling.word_list(encode, ["a", "", "b c"]) == ([5, 6, 7], [1, 3])


def _byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte, as a byte-level BPE without merges: every multi-byte
    character is split across tokens."""
    alphabet = detokenize.byte_alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet, key=alphabet.__getitem__))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


def test_a_character_split_across_tokens_arrives_whole() -> None:
    tokenizer = _byte_level_tokenizer()
    ids = tokenizer.encode("né€", add_special_tokens=False)
    assert len(ids) == 6  # n, 2 bytes of é, 3 of €
    token_bytes = detokenize.TokenBytes(tokenizer)
    # The engine streams one token per response; the postprocess sends its bytes.
    chunks = [token_bytes.of([i]) for i in ids] + [token_bytes.of([tokenizer.eos_token_id])]
    assert b"".join(chunks) == "né€".encode()
    decoder = text_decoder()
    texts = []
    for chunk in chunks:
        outputs = {"text_output": np.array([chunk], dtype=object)}
        texts.append(_delta(0, outputs, decoder).text)
    assert texts == ["n", "", "é", "", "", "€", ""]
    assert "\ufffd" not in "".join(texts)


def test_a_character_cut_by_the_end_of_the_stream_is_replaced_not_lost() -> None:
    decoder = text_decoder()
    first = {"text_output": np.array([b"a" + "é".encode()[:1]], dtype=object)}
    assert _delta(0, first, decoder).text == "a"
    last = {
        "text_output": np.array([b""], dtype=object),
        "finish_reason": np.array([b"length"], dtype=object),
    }
    assert _delta(0, last, decoder).text == "\ufffd"


def test_sentencepiece_byte_tokens_map_to_their_bytes(tmp_path: Path) -> None:
    assert detokenize._token_bytes("<0xC3>", None) == b"\xc3"
    assert detokenize._token_bytes("\u2581hello", None) == b" hello"
