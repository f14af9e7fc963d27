"""Triton's gRPC protocol next to Triton: serialized messages in and out, decoded
here like HTTP bodies, so the router forwards bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.contract import GrpcInferCall
from app.errors import NotImplementedFeature, from_triton
from app.protocol.kserve_v2 import DecodedInferRequest
from app.protocol.kserve_v2 import grpc as kserve_v2_grpc
from app.replica.host import ReplicaHost, engine_request, typed_outputs
from app.triton import TritonError
from app.triton.inference import AsyncResponseIterator, infer_once

__all__ = ["GrpcAdapter"]


class GrpcAdapter:
    """The gRPC calls of ``app.contract.ReplicaAPI``, on ``host``'s Triton."""

    def __init__(self, host: ReplicaHost) -> None:
        self.host = host
        self.server = host.server

    async def grpc_infer(self, call: GrpcInferCall) -> bytes:
        """A serialized ``ModelInferRequest`` in, a serialized ``ModelInferResponse`` out."""
        model = call.model
        number = self.host.owned(model, call.version)
        decoded, _ = self._decode(call.message)
        shape = await self.host.shape(model, number)
        if shape.decoupled:
            raise NotImplementedFeature(
                f"ModelInfer RPC doesn't support models with decoupled transaction policy "
                f"('{model}'); use ModelStreamInfer"
            )
        request = engine_request(model, number, decoded)
        response = await self.host.run(model, infer_once(self.server, request))
        encoded = kserve_v2_grpc.encode_infer_response(
            model,
            shape.version_label,
            decoded.id,
            typed_outputs(response.outputs),
            response.parameters,
        )
        return bytes(encoded.SerializeToString())

    async def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]:
        """Serialized ``ModelStreamInferResponse``s of one request of a stream, as
        Triton sends them: responses without outputs only when the client asked for
        an empty final response, each then flagged with ``triton_final_response``;
        an engine error mid-stream raises its ``ServingError`` after the responses
        before it (the router turns it into the stream's ``error_message``). The
        first item is ``b""`` once the request is accepted (errors before it raise)."""
        model = call.model
        number = self.host.owned(model, call.version)
        decoded, empty_final = self._decode(call.message)
        label = (await self.host.shape(model, number)).version_label
        try:
            stream = AsyncResponseIterator(self.server, engine_request(model, number, decoded))
        except TritonError as exc:
            raise from_triton(exc) from exc
        yield b""
        try:
            async for response in stream:
                if not response.outputs and not (response.final and empty_final):
                    continue
                parameters = dict(response.parameters)
                if empty_final:
                    parameters[kserve_v2_grpc.FINAL_RESPONSE_PARAMETER] = response.final
                encoded = kserve_v2_grpc.encode_infer_response(
                    model, label, decoded.id, typed_outputs(response.outputs), parameters
                )
                yield bytes(kserve_v2_grpc.stream_response(encoded).SerializeToString())
        except TritonError as exc:
            # Raised, not sent as an in-stream error: the router answers it in the
            # stream, or ends the stream with its status when the client asked so.
            raise from_triton(exc) from exc
        finally:
            stream.cancel()

    def _decode(self, message: bytes) -> tuple[DecodedInferRequest, bool]:
        return kserve_v2_grpc.decode_infer_request(
            kserve_v2_grpc.parse_infer_request(message),
            max_elements=self.host.cfg.max_tensor_elements,
            max_bytes_element=self.host.cfg.max_bytes_element_bytes,
        )
