"""KServe v2 (Triton's HTTP protocol) next to Triton: request bodies arrive undecoded
from the router and are validated and decoded here, so the router never touches
tensors; model information (metadata, config, readiness, statistics) too."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from app.contract import GenerateCall, InferCall, InferResult, ModelRef, StatisticsCall
from app.errors import BadRequest, NotFound, from_triton
from app.protocol.kserve_v2 import (
    classify,
    decode_generate_request,
    decode_infer_request,
    encode_generate_response,
    encode_infer_response,
    split_scheduling,
    sse_error_event,
    sse_event,
)
from app.replica.host import ReplicaHost, engine_request, typed_outputs
from app.replica.streaming import coalesce
from app.triton import DataType, InferenceRequest, TritonError
from app.triton.inference import AsyncResponseIterator, infer_once

__all__ = ["LARGE_JSON_BYTES", "KServeAdapter"]

LARGE_JSON_BYTES = 256 * 1024


class KServeAdapter:
    """The KServe v2 calls of ``app.contract.ReplicaAPI``, on ``host``'s Triton."""

    def __init__(self, host: ReplicaHost) -> None:
        self.host = host
        self.server = host.server

    async def infer(self, call: InferCall) -> InferResult:
        host, model, body = self.host, call.model, call.body
        number = host.owned(model, call.version)
        decode = functools.partial(
            decode_infer_request,
            body,
            call.header_length,
            max_elements=host.cfg.max_tensor_elements,
            max_bytes_element=host.cfg.max_bytes_element_bytes,
        )
        # Large JSON tensors take long enough to parse to stall other requests.
        json_bytes = len(body) if call.header_length is None else call.header_length
        decoded = await asyncio.to_thread(decode) if json_bytes > LARGE_JSON_BYTES else decode()
        shape = await host.shape(model, number)
        if shape.decoupled:
            raise BadRequest(f"model '{model}' is decoupled; use generate_stream or gRPC streaming")
        request = engine_request(model, number, decoded)
        response = await host.run(model, infer_once(self.server, request))
        classes = {o.name: o.classification for o in decoded.outputs or () if o.classification}
        outputs = []
        for name, array in response.outputs.items():
            if name in classes:  # Triton's classification extension
                array = classify(array, classes[name], batched=shape.max_batch_size > 0)
            outputs.append((name, DataType.from_numpy(array.dtype), array))
        payload, header_length = encode_infer_response(
            model,
            shape.version_label,
            decoded.id,
            outputs,
            binary_outputs=decoded.binary_outputs(),
        )
        return InferResult(payload, header_length)

    async def generate(self, call: GenerateCall) -> dict[str, Any]:
        model = call.model
        number = self.host.owned(model, call.version)
        request = await self._generate_request(model, number, call.body)
        response = await self.host.run(model, infer_once(self.server, request))
        return encode_generate_response(
            model,
            (await self.host.shape(model, number)).version_label,
            typed_outputs(response.outputs),
            request_id=request.request_id or None,
        )

    async def generate_stream(self, call: GenerateCall) -> AsyncIterator[bytes]:
        """SSE events. The first item is ``b""`` once the request is accepted, so the
        router can turn an early error into a proper status instead of a broken stream;
        events already waiting travel together (``coalesce``)."""
        async for chunk in coalesce(self._generate_events(call)):
            yield chunk

    async def _generate_events(self, call: GenerateCall) -> AsyncGenerator[bytes, None]:
        model = call.model
        number = self.host.owned(model, call.version)
        request = await self._generate_request(model, number, call.body)
        try:
            stream = AsyncResponseIterator(self.server, request)
        except TritonError as exc:
            raise from_triton(exc) from exc
        yield b""
        label = (await self.host.shape(model, number)).version_label
        try:
            async for response in stream:
                if response.outputs:
                    yield sse_event(
                        encode_generate_response(
                            model,
                            label,
                            typed_outputs(response.outputs),
                            request_id=request.request_id or None,
                        )
                    )
        except TritonError as exc:
            yield sse_error_event(from_triton(exc))
        finally:
            stream.cancel()

    async def _generate_request(self, model: str, version: int, body: bytes) -> InferenceRequest:
        shape = await self.host.shape(model, version)
        decoded = decode_generate_request(
            body,
            shape.inputs,
            shape.max_batch_size,
            max_elements=self.host.cfg.max_tensor_elements,
            max_bytes_element=self.host.cfg.max_bytes_element_bytes,
        )
        priority, timeout_us, parameters = split_scheduling(decoded.parameters)
        return InferenceRequest(
            model_name=model,
            model_version=version,
            inputs={i.name: i.to_tensor() for i in decoded.inputs},
            request_id=decoded.request_id or "",
            parameters=parameters,
            priority=priority,
            timeout_us=timeout_us,
        )

    # ---- model information ----

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        number = self.host.owned(ref.model, ref.version)
        return self.host.call(lambda: self.server.model(ref.model, number).metadata().model_dump())

    async def model_config(self, ref: ModelRef) -> dict[str, Any]:
        number = self.host.owned(ref.model, ref.version)
        return self.host.call(lambda: self.server.model(ref.model, number).config().model_dump())

    async def model_ready(self, ref: ModelRef) -> bool:
        number = self.host.owned(ref.model, ref.version, serving=False)
        stubs = self.host.stubs
        stubs.check()
        if stubs.why_unavailable(ref.model):
            return False
        try:
            return self.server.model(ref.model, number).ready()
        except TritonError:
            return False

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]:
        """Statistics of one hosted model, or of all of them when ``model`` is None."""
        model = call.model
        number = self.host.owned(model, call.version) if model else -1
        stats: list[dict[str, Any]] = []
        for name in [model] if model else self.host.models:
            with contextlib.suppress(TritonError):
                stats += [s.model_dump() for s in self.server.statistics(name, number)]
        if model and not stats:
            raise NotFound(f"no statistics for model '{model}' (is it loaded?)")
        return {"model_stats": stats}
