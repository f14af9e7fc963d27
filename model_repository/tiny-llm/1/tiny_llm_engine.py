"""The generation loop of the CPU stand-in LLM: sampling parameters as vLLM takes them,
token-by-token decoding with a KV cache, stop strings, streaming deltas.

Independent of Triton so it can be exercised directly; ``model.py`` is the glue.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache

# vLLM's SamplingParams defaults for the fields the stand-in implements.
_DEFAULTS = {
    "n": 1,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "seed": None,
    "max_tokens": 16,
    "min_tokens": 0,
    "stop": None,
    "ignore_eos": False,
    "include_stop_str_in_output": False,
}
# Accepted and ignored: they change nothing observable in a random-weights model.
_IGNORED = {"presence_penalty", "frequency_penalty", "repetition_penalty", "skip_special_tokens"}


class SamplingError(ValueError):
    """A sampling parameter vLLM would reject; the message names it."""


@dataclass
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False


def parse_sampling(text_or_dict):
    """``sampling_parameters`` (a JSON string, or the request parameters) -> Sampling."""
    if isinstance(text_or_dict, str | bytes):
        try:
            values = json.loads(text_or_dict or "{}")
        except json.JSONDecodeError as exc:
            raise SamplingError(f"sampling_parameters is not valid JSON: {exc}") from None
    else:
        values = dict(text_or_dict)
    if not isinstance(values, dict):
        raise SamplingError("sampling_parameters must be a JSON object")
    values.pop("stream", None)  # Triton users put it in the parameters too
    unknown = sorted(set(values) - set(_DEFAULTS) - _IGNORED)
    if unknown:
        raise SamplingError(f"unknown sampling parameter(s): {', '.join(unknown)}")
    merged = {**_DEFAULTS, **{k: v for k, v in values.items() if k in _DEFAULTS}}
    s = Sampling(
        n=_integer(merged, "n", 1),
        temperature=_number(merged, "temperature", 0.0),
        top_p=_number(merged, "top_p", 0.0),
        top_k=_integer(merged, "top_k", -1),
        seed=None if merged["seed"] is None else _integer(merged, "seed", None),
        max_tokens=None if merged["max_tokens"] is None else _integer(merged, "max_tokens", 1),
        min_tokens=_integer(merged, "min_tokens", 0),
        stop=_stops(merged["stop"]),
        ignore_eos=_flag(merged, "ignore_eos"),
        include_stop_str_in_output=_flag(merged, "include_stop_str_in_output"),
    )
    if s.n != 1:
        raise SamplingError("n must be 1 for this model; send one request per sequence")
    if not 0.0 < s.top_p <= 1.0:
        raise SamplingError(f"top_p must be in (0, 1], got {s.top_p}")
    return s


def _number(values, name, low):
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SamplingError(f"{name} must be a number, got {value!r}")
    if value < low:
        raise SamplingError(f"{name} must be >= {low}, got {value}")
    return float(value)


def _integer(values, name, low):
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplingError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise SamplingError(f"{name} must be >= {low}, got {value}")
    return value


def _flag(values, name):
    if not isinstance(values[name], bool):
        raise SamplingError(f"{name} must be true or false, got {values[name]!r}")
    return values[name]


def _stops(value):
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise SamplingError("stop must be a non-empty string or a list of them")
    return stops


@dataclass
class Step:
    """What one decoding step adds: new text (possibly empty), and the end if reached."""

    text: str
    tokens: int
    finish_reason: str | None
    cumulative_logprob: float


class TinyLLM:
    """A small causal LM built from a config directory with weights from a fixed seed."""

    def __init__(self, directory, seed, max_model_len):
        directory = Path(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        config = AutoConfig.from_pretrained(directory)
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_config(config).eval()
        self.config = config
        self.max_model_len = min(max_model_len, config.max_position_embeddings)
        self.eos_token_id = self.tokenizer.eos_token_id

    def prompt_tokens(self, prompt):
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, prompt_ids, sampling, is_cancelled):
        """Yield a ``Step`` per token; stops at EOS, a stop string, max_tokens, the
        context length, or as soon as ``is_cancelled()`` says so (nothing more is
        computed then)."""
        if not prompt_ids:
            raise SamplingError("the prompt is empty")
        room = self.max_model_len - len(prompt_ids)
        if room <= 0 or (sampling.max_tokens is not None and sampling.max_tokens > room):
            wanted = sampling.max_tokens if sampling.max_tokens is not None else 1
            raise SamplingError(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, you requested {len(prompt_ids) + wanted} tokens "
                f"({len(prompt_ids)} in the prompt, {wanted} for the completion)."
            )
        limit = sampling.max_tokens if sampling.max_tokens is not None else room
        generator = torch.Generator()
        generator.manual_seed(sampling.seed if sampling.seed is not None else _fresh_seed())
        cache = DynamicCache(config=self.config)
        inputs = torch.tensor([prompt_ids])
        produced = []
        emitted = 0  # characters of the output already sent
        holdback = max((len(s) for s in sampling.stop), default=1) - 1
        logprob_sum = 0.0
        with torch.no_grad():
            while True:
                if is_cancelled():
                    return
                logits = self.model(input_ids=inputs, cache=cache, use_cache=True).logits[0, -1]
                token, logprob = _sample(logits, sampling, generator)
                logprob_sum += logprob
                produced.append(token)
                inputs = torch.tensor([[token]])
                finish = None
                if token == self.eos_token_id and not sampling.ignore_eos:
                    if len(produced) > sampling.min_tokens:
                        produced.pop()
                        finish = "stop"
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                cut = _first_stop(text, sampling.stop, sampling.include_stop_str_in_output)
                if cut is not None and len(produced) >= sampling.min_tokens:
                    text, finish = text[:cut], "stop"
                if finish is None and len(produced) >= limit:
                    finish = "length"
                if finish is None:
                    # Hold back an incomplete UTF-8 sequence and what may start a stop string.
                    safe = len(text) - (holdback if sampling.stop else 0)
                    if text.endswith("\ufffd"):
                        safe = min(safe, len(text) - 1)
                    safe = max(safe, emitted)
                    yield Step(text[emitted:safe], 1, None, logprob_sum)
                    emitted = safe
                    continue
                yield Step(text[emitted:], 1 if produced else 0, finish, logprob_sum)
                return


def _sample(logits, sampling, generator):
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if sampling.temperature == 0.0:
        token = int(torch.argmax(logits))
        return token, float(logprobs[token])
    scaled = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(scaled, min(sampling.top_k, scaled.numel())).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < sampling.top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(logprobs[token])


def _first_stop(text, stops, include):
    best = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            end = at + len(stop) if include else at
            best = end if best is None else min(best, end)
    return best


def _fresh_seed():
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
