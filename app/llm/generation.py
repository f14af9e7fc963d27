"""Text generation through the in-process Triton, whatever LLM backend serves the model.

The request speaks the tensors of Triton's vLLM backend (``text_input``, ``stream``,
``sampling_parameters`` JSON, ``exclude_input_in_output``, ``return_*``) and falls back
to per-field inputs (``max_tokens``, ``temperature``...) that TensorRT-LLM ensembles
declare; a field the model has no input for is refused (400 naming it), not dropped.
Text arrives as bytes and is decoded across responses (``text_decoder``). Generation
always streams inside the replica, so time to first token, cancellation and ``n`` work
the same for streaming and non-streaming clients.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import BadRequest, from_triton
from app.triton import DataType, InferenceRequest, Server, TritonError
from app.triton.inference import AsyncResponseIterator

__all__ = ["Delta", "GenerationParams", "ModelInputs", "generate", "generate_many"]

# Per-field inputs of TensorRT-LLM style models: parameter -> candidate input names.
_FIELD_INPUTS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens",),
    "temperature": ("temperature",),
    "top_p": ("top_p", "runtime_top_p"),
    "seed": ("seed", "random_seed"),
    "presence_penalty": ("presence_penalty",),
    "frequency_penalty": ("frequency_penalty",),
    "stop": ("stop_words", "stop"),  # every word: BYTES [-1]
}
_RETURN_SWITCHES = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")


@dataclass(frozen=True)
class ModelInputs:
    """What the model declares: input name -> (datatype, dims), and batching."""

    inputs: Mapping[str, tuple[DataType, tuple[int, ...]]]
    max_batch_size: int

    @classmethod
    def from_config(cls, config: Any) -> ModelInputs:
        inputs = {
            i["name"]: (
                DataType.from_string(i["data_type"]),
                tuple(int(d) for d in i.get("dims", [])),
            )
            for i in config.input
        }
        return cls(inputs, int(config.max_batch_size))

    def tensor(self, name: str, value: Any) -> np.ndarray[Any, Any]:
        datatype, _dims = self.inputs[name]
        if datatype is DataType.BYTES:
            data = np.array([value if isinstance(value, bytes) else str(value).encode()], object)
        else:
            data = np.array([value], dtype=datatype.numpy_dtype)
        return data.reshape(1, 1) if self.max_batch_size > 0 else data

    def words(self, words: list[str]) -> np.ndarray[Any, Any]:
        """A list of strings as one BYTES row (e.g. TensorRT-LLM's ``stop_words``)."""
        data = np.array([w.encode() for w in words], dtype=object)
        return data.reshape(1, -1) if self.max_batch_size > 0 else data


@dataclass(frozen=True)
class GenerationParams:
    """Sampling as OpenAI and vLLM share it; ``None`` leaves the engine's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            k: v
            for k, v in (
                ("max_tokens", self.max_tokens),
                ("temperature", self.temperature),
                ("top_p", self.top_p),
                ("seed", self.seed),
                ("presence_penalty", self.presence_penalty or None),
                ("frequency_penalty", self.frequency_penalty or None),
            )
            if v is not None
        }
        if self.stop:
            values["stop"] = list(self.stop)
        return values


@dataclass(frozen=True)
class Delta:
    """New text of one sequence; the last one has ``finish_reason``."""

    index: int
    text: str
    finish_reason: str | None = None
    output_tokens: int | None = None  # tokens in this delta, when the engine says
    prompt_tokens: int | None = None


def build_request(
    model: str, shape: ModelInputs, prompt: str, params: GenerationParams
) -> InferenceRequest:
    declared = shape.inputs
    if "text_input" not in declared:
        raise BadRequest(f"model '{model}' has no text_input: it is not a text generator")
    inputs: dict[str, Any] = {"text_input": shape.tensor("text_input", prompt.encode())}
    for name, value in (("stream", True), ("exclude_input_in_output", True)):
        if name in declared:
            inputs[name] = shape.tensor(name, value)
    for name in _RETURN_SWITCHES:
        if name in declared:
            inputs[name] = shape.tensor(name, True)
    wanted = params.as_dict()
    parameters: dict[str, str | int | float | bool] = {}
    if "sampling_parameters" in declared:
        inputs["sampling_parameters"] = shape.tensor(
            "sampling_parameters", json.dumps(wanted).encode()
        )
    else:
        # An engine ignores request parameters it does not know, so a field without an
        # input would be dropped without a word: refuse it instead.
        for key, value in wanted.items():
            found = next((n for n in _FIELD_INPUTS[key] if n in declared), None)
            if found is None:
                raise BadRequest(
                    f"{key} is not supported by model '{model}' (it has no input for it)",
                    param=key,
                )
            inputs[found] = shape.tensor(found, value) if key != "stop" else shape.words(value)
    return InferenceRequest(model_name=model, inputs=inputs, parameters=parameters)


async def generate(server: Server, request: InferenceRequest, index: int) -> AsyncIterator[Delta]:
    """Deltas of one sequence; cancelling (closing) the iterator cancels the request."""
    try:
        stream = AsyncResponseIterator(server, request)
    except TritonError as exc:
        raise from_triton(exc) from exc
    finished = False
    decoder = text_decoder()
    try:
        async for response in stream:
            delta = _delta(index, response.outputs, decoder)
            if delta.text or delta.finish_reason or delta.output_tokens:
                finished = finished or delta.finish_reason is not None
                yield delta
        if not finished:  # the engine gave no reason
            yield Delta(index, decoder.decode(b"", final=True), finish_reason="")
    except TritonError as exc:
        raise from_triton(exc) from exc
    finally:
        stream.cancel()


def text_decoder() -> codecs.IncrementalDecoder:
    """UTF-8 across responses: an engine may send a character's bytes in two (the
    TensorRT-LLM ensemble sends each token's bytes), so a partial one waits for the rest."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _delta(index: int, outputs: dict[str, Any], decoder: codecs.IncrementalDecoder) -> Delta:
    def first(name: str) -> Any:
        values = outputs.get(name)
        return None if values is None or values.size == 0 else values.reshape(-1)[0]

    text = first("text_output")
    reason = first("finish_reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    out_tokens = first("num_output_tokens")
    in_tokens = first("num_input_tokens")
    reason = reason if reason not in (None, "", "None") else None
    final = reason is not None
    return Delta(
        index=index,
        text=decoder.decode(text, final) if isinstance(text, bytes) else str(text or ""),
        finish_reason=reason,
        output_tokens=None if out_tokens is None else int(out_tokens),
        prompt_tokens=None if in_tokens is None else int(in_tokens),
    )


async def generate_many(
    server: Server, requests: list[InferenceRequest], queue_size: int = 64
) -> AsyncGenerator[Delta, None]:
    """Several sequences at once (``n``, several prompts), merged as they arrive.

    The queue is bounded: a slow client slows the producers rather than growing
    memory. Closing the iterator cancels every request still running.
    """
    if len(requests) == 1:
        async for delta in generate(server, requests[0], 0):
            yield delta
        return
    queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue(queue_size)

    async def pump(index: int, request: InferenceRequest) -> None:
        try:
            async for delta in generate(server, request, index):
                await queue.put(delta)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which stops at the first
            await queue.put(exc)
            return
        await queue.put(None)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    running = len(tasks)
    try:
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
