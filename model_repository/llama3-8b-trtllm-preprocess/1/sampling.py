"""Sampling options of one request row -> the TensorRT-LLM engine's inputs.

The options mean what they mean for the vLLM models (vLLM's SamplingParams), so a
client can send the same sampling_parameters to every LLM here. NumPy-free and
Triton-free, so it is tested without either.
"""

import json

DEFAULT_MAX_TOKENS = 16  # vLLM's default
KNOWN = ("max_tokens", "temperature", "top_p", "top_k")


def parse_sampling(raw, max_tokens):
    """(raw JSON bytes/str or None, MAX_TOKENS value or None) -> dict of engine values.

    Returns {"max_tokens", "temperature", "top_k", "top_p"}; raises ValueError naming
    the field. temperature 0 means greedy (vLLM's convention): top_k 1. top_k 0 or -1
    means no top-k cut (TensorRT-LLM's 0).
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
            raise ValueError(f"sampling_parameters: unsupported {unknown}; supported {list(KNOWN)}")
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
    return {"max_tokens": tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p}


def _number(options, name, default):
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"sampling_parameters.{name}: must be a number, got {value!r}")
    return float(value)
