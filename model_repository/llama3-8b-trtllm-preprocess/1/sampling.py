"""Sampling options of one request row -> the TensorRT-LLM engine's inputs.

The options mean what they mean for the vLLM models (vLLM's SamplingParams), so a
client can send the same sampling_parameters to every LLM here. What the engine has an
input for is mapped (the engine's inputs: tensorrtllm_backend
all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt); anything else is refused
naming the field, never dropped. NumPy-free and Triton-free, so it is tested without
either.
"""

import json
import secrets

DEFAULT_MAX_TOKENS = 16  # vLLM's default
MAX_STOP = 16
# vLLM name -> engine input it becomes.
MAPPED = {
    "max_tokens": "request_output_len",
    "temperature": "temperature",
    "top_p": "runtime_top_p",
    "top_k": "runtime_top_k",
    "seed": "random_seed",
    "stop": "stop_words_list",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "min_tokens": "min_length",
    "ignore_eos": "min_length (= max_tokens)",
}
KNOWN = tuple(MAPPED)


def parse_sampling(raw, max_tokens):
    """(raw JSON bytes/str or None, MAX_TOKENS value or None) -> dict of engine values.

    Raises ValueError naming the field. temperature 0 means greedy (vLLM's
    convention): top_k 1. top_k 0 or -1 means no top-k cut (TensorRT-LLM's 0). No seed
    draws one: the engine's default seed (0) would make every request alike.
    """
    options = {}
    if raw is not None:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        try:
            options = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"sampling_parameters: not JSON ({exc})") from None
        if not isinstance(options, dict):
            raise ValueError("sampling_parameters: must be a JSON object")
        unknown = sorted(set(options) - set(KNOWN))
        if unknown:
            raise ValueError(
                f"sampling_parameters: unsupported {unknown} (TensorRT-LLM has no input for "
                f"them); supported {list(KNOWN)}"
            )
    tokens = max_tokens if max_tokens is not None else options.get("max_tokens", DEFAULT_MAX_TOKENS)
    temperature = _number(options, "temperature", 1.0)
    top_p = _number(options, "top_p", 1.0)
    top_k = options.get("top_k", 0)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"max_tokens: must be an integer >= 1, got {tokens!r}")
    if temperature < 0:
        raise ValueError(f"sampling_parameters.temperature: must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"sampling_parameters.top_p: must be in (0, 1], got {top_p}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1:
        raise ValueError(f"sampling_parameters.top_k: must be an integer >= -1, got {top_k!r}")
    top_k = max(top_k, 0)
    if temperature == 0:
        temperature, top_k = 1.0, 1
    seed = options.get("seed")
    if seed is None:
        seed = secrets.randbits(63)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"sampling_parameters.seed: must be an integer >= 0, got {seed!r}")
    repetition = _number(options, "repetition_penalty", 1.0)
    if repetition <= 0:
        raise ValueError(f"sampling_parameters.repetition_penalty: must be > 0, got {repetition}")
    presence = _number(options, "presence_penalty", 0.0)
    frequency = _number(options, "frequency_penalty", 0.0)
    for name, value in (("presence_penalty", presence), ("frequency_penalty", frequency)):
        if not -2 <= value <= 2:
            raise ValueError(f"sampling_parameters.{name}: must be in [-2, 2], got {value}")
    min_tokens = options.get("min_tokens", 0)
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
        raise ValueError(
            f"sampling_parameters.min_tokens: must be an integer >= 0, got {min_tokens!r}"
        )
    ignore_eos = options.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise ValueError(f"sampling_parameters.ignore_eos: must be a boolean, got {ignore_eos!r}")
    if ignore_eos:
        min_tokens = tokens  # the engine may not end before max_tokens
    return {
        "max_tokens": tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        "stop": _stops(options.get("stop")),
        "repetition_penalty": repetition,
        "presence_penalty": presence,
        "frequency_penalty": frequency,
        "min_tokens": min(min_tokens, tokens),
    }


def word_list(encode, words):
    """TensorRT-LLM's stop-word format for one row: (token ids of every word, one
    after the other; the cumulative end offset of each word). Words that encode to no
    token are left out. ``encode``: text -> ids without special tokens."""
    flat, offsets = [], []
    for word in words:
        ids = list(encode(word))
        if ids:
            flat += ids
            offsets.append(len(flat))
    return flat, offsets


def _stops(value):
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ValueError("sampling_parameters.stop: must be a string or a list of non-empty strings")
    if len(stops) > MAX_STOP:
        raise ValueError(f"sampling_parameters.stop: at most {MAX_STOP} strings, got {len(stops)}")
    return stops


def _number(options, name, default):
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"sampling_parameters.{name}: must be a number, got {value!r}")
    return float(value)
