"""``inference.GRPCInferenceService`` on the router, reached through Serve's gRPC proxy.

Serve's proxy (``grpc_options.grpc_servicer_functions`` =
``app.grpc.servicer.add_inference_service_to_server``) calls the ingress
deployment's method named like each RPC with the request message and a
``grpc_context``; ``ModelStreamInfer`` (bidirectional) gets an async iterator of
requests and answers with an async generator. The methods here are mixed into
``Router``, so one router replica serves HTTP and gRPC with the same data plane.

Why Serve's proxy and not a gRPC server of our own: the proxy carries unary,
server-streaming and bidirectional RPCs (each client message reaches the replica
as it is sent; responses stream back as they are yielded), sets the statuses a
replica puts on ``grpc_context``, and needs no ``application`` metadata when one
application runs, so ``tritonclient.grpc`` works unchanged and no second server
has to be run, secured and scaled beside Serve's (the measured round trip is in
docs/benchmarks.md). The one obstacle, tritonclient's messages not pickling, is solved in
``app.grpc.servicer``.

Errors are answered as the HTTP routes answer them (same checks, same
``ServingError``), with the gRPC status of ``app.grpc.status``; on
``ModelStreamInfer`` they are in-stream ``error_message``s, as Triton sends them.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from app.config import AppConfig
from app.contract import GrpcInferCall, ModelRef, StatisticsCall
from app.errors import NotImplementedFeature, PayloadTooLarge, ServingError
from app.grpc.edge import (
    identify,
    metadata_value,
    run_unary,
    set_error,
    set_target,
    traffic_of,
)
from app.grpc.servicer import register_proto_modules
from app.grpc.stream import StreamAbort, multiplex
from app.http.kserve_routes import EXTENSIONS
from app.observability import RouterMetrics
from app.protocol.kserve_v2 import grpc as convert
from app.router.client import call_error
from app.router.dataplane import DataPlane
from app.router.repository import READY_TIMEOUT_S
from app.router.traffic import traffic_request
from app.security.context import current_key, request_timeout_s
from app.security.guard import Guard
from app.security.limits import Slot

__all__ = ["GRPC_ERROR_METADATA", "TritonGrpcMethods"]

# Triton's stream option: end the stream with the error's status instead of sending
# the error in the stream.
GRPC_ERROR_METADATA = "triton_grpc_error"
# Whether the current stream's errors end it (``GRPC_ERROR_METADATA``).
_stream_aborts: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "stream_aborts", default=False
)


class Serialized:
    """A message the model replica already serialized: Serve sends
    ``SerializeToString()`` to the client, so tensors are not decoded and encoded
    again in the router."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


def _version(text: str) -> str | None:
    return text or None


def _unsupported(rpc: str, what: str) -> Callable[..., Awaitable[Any]]:
    async def method(self: Any, request: Any, grpc_context: Any = None) -> Any:
        set_error(grpc_context, NotImplementedFeature(f"{rpc}: {what} is not supported here"))
        return getattr(pb, f"{rpc}Response")()

    method.__name__ = rpc
    return method


class TritonGrpcMethods:
    """The RPCs of ``inference.GRPCInferenceService``, named as Serve's proxy calls them.

    The class using it sets ``dataplane``, ``guard`` and ``router_metrics`` and
    calls ``init_grpc`` in its ``__init__``.
    """

    dataplane: DataPlane
    guard: Guard
    router_metrics: RouterMetrics

    def init_grpc(self, cfg: AppConfig) -> None:
        # Messages arrive pickled from the proxy; unpickling needs tritonclient's
        # modules under the names its classes carry.
        register_proto_modules()
        self.grpc_cfg = cfg.grpc

    async def _unary(
        self,
        grpc_context: Any,
        call: tuple[str, str, str],
        work: Callable[[], Awaitable[Any]],
        empty: Any,
    ) -> Any:
        return await run_unary(self.guard, self.router_metrics, grpc_context, call, work, empty)

    # ---- health and metadata ----

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:
        async def work() -> Any:
            return pb.ServerLiveResponse(live=True)

        call = ("/v2/health/live", "", "ServerLive")
        return await self._unary(grpc_context, call, work, pb.ServerLiveResponse())

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:
        async def work() -> Any:
            return pb.ServerReadyResponse(ready=not await self.dataplane.not_ready())

        call = ("/v2/health/ready", "", "ServerReady")
        return await self._unary(grpc_context, call, work, pb.ServerReadyResponse())

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:
        model, version = request.name, _version(request.version)

        async def work() -> Any:
            ready = await self.dataplane.repository.ready(ModelRef(model, version))
            return pb.ModelReadyResponse(ready=ready)

        call = (f"/v2/models/{model}/ready", model, "ModelReady")
        return await self._unary(grpc_context, call, work, pb.ModelReadyResponse())

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        async def work() -> Any:
            reports = await self.dataplane.reports()
            version = next((r.triton_version for r in reports if r.triton_version), "")
            return pb.ServerMetadataResponse(name="triton", version=version, extensions=EXTENSIONS)

        return await self._unary(
            grpc_context, ("/v2", "", "ServerMetadata"), work, pb.ServerMetadataResponse()
        )

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:
        model, version = request.name, _version(request.version)

        async def work() -> Any:
            metadata = await self.dataplane.repository.metadata(ModelRef(model, version))
            return convert.encode_model_metadata(metadata)

        call = (f"/v2/models/{model}", model, "ModelMetadata")
        return await self._unary(grpc_context, call, work, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, grpc_context: Any = None) -> Any:
        model, version = request.name, _version(request.version)

        async def work() -> Any:
            config = await self.dataplane.replicas.model_config(ModelRef(model, version))
            return convert.encode_model_config(config)

        call = (f"/v2/models/{model}/config", model, "ModelConfig")
        return await self._unary(grpc_context, call, work, pb.ModelConfigResponse())

    async def ModelStatistics(self, request: Any, grpc_context: Any = None) -> Any:
        model, version = request.name, _version(request.version)

        async def work() -> Any:
            if model:
                call = StatisticsCall(model, version)
                result = await self.dataplane.replicas.model_statistics(call)
                return convert.encode_statistics(result["model_stats"])
            return convert.encode_statistics(await self._all_statistics())

        call = (f"/v2/models/{model or 'stats'}/stats", model, "ModelStatistics")
        return await self._unary(grpc_context, call, work, pb.ModelStatisticsResponse())

    async def _all_statistics(self) -> list[Any]:
        """Every permitted model's statistics, as on HTTP."""
        return await self.dataplane.replicas.all_statistics(READY_TIMEOUT_S)

    # ---- repository ----

    async def RepositoryIndex(self, request: Any, grpc_context: Any = None) -> Any:
        async def work() -> Any:
            if request.repository_name:
                raise NotImplementedFeature("repository_name: this server has one repository")
            index = await self.dataplane.repository.index(ready_only=request.ready)
            return convert.encode_repository_index(index)

        call = ("/v2/repository/index", "", "RepositoryIndex")
        return await self._unary(grpc_context, call, work, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(self, request: Any, grpc_context: Any = None) -> Any:
        model = request.model_name

        async def work() -> Any:
            self.dataplane.replicas.deployment_of(model)  # 403/404 before decoding
            load = convert.decode_load_request(request)
            await self.dataplane.repository.load(model, load)
            return pb.RepositoryModelLoadResponse()

        call = (f"/v2/repository/models/{model}/load", model, "RepositoryModelLoad")
        return await self._unary(grpc_context, call, work, pb.RepositoryModelLoadResponse())

    async def RepositoryModelUnload(self, request: Any, grpc_context: Any = None) -> Any:
        model = request.model_name

        async def work() -> Any:
            self.dataplane.replicas.deployment_of(model)  # 403/404 before decoding
            dependents = convert.decode_unload_dependents(request)
            await self.dataplane.repository.unload(model, dependents)
            return pb.RepositoryModelUnloadResponse()

        call = (f"/v2/repository/models/{model}/unload", model, "RepositoryModelUnload")
        return await self._unary(grpc_context, call, work, pb.RepositoryModelUnloadResponse())

    # ---- inference ----

    def _forwardable(self, request: Any) -> bytes:
        """The request serialized for the model replica; 413 over the body limit."""
        limit = self.dataplane.cfg.max_request_body_bytes
        size = request.ByteSize()
        if size > limit:
            raise PayloadTooLarge(
                f"ModelInferRequest of {size} bytes exceeds the limit of {limit} bytes"
            )
        return bytes(request.SerializeToString())

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:
        model, version = request.model_name, _version(request.model_version)

        async def work() -> Any:
            self.dataplane.replicas.deployment_of(model)
            message = self._forwardable(request)
            call = GrpcInferCall(model, version, message)
            return Serialized(await self.dataplane.replicas.grpc_infer(call))

        call = (f"/v2/models/{model}/infer", model, "ModelInfer")
        return await self._unary(grpc_context, call, work, pb.ModelInferResponse())

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], grpc_context: Any = None
    ) -> AsyncIterator[Serialized]:
        """One stream: its key is checked when it opens; each request inside counts
        against the key's rate and concurrency limits as a unary call would, and is
        checked against the key's models. A refused stream ends with its status
        before any response; a refused request answers with an in-stream error, or
        ends the stream with its status when the client asked for that
        (``triton_grpc_error: true``, as Triton does)."""
        try:
            key, timeout = await identify(self.guard, "/v2/models/stream", grpc_context)
        except ServingError as err:
            set_error(grpc_context, err)
            # Raised, not returned: a stream that yields nothing carries no status.
            raise
        abort_on_error = (metadata_value(grpc_context, GRPC_ERROR_METADATA) or "").lower()
        context = contextvars.copy_context()
        context.run(current_key.set, key)
        context.run(request_timeout_s.set, timeout)
        traffic = traffic_of(grpc_context)
        context.run(traffic_request.set, traffic)
        context.run(_stream_aborts.set, abort_on_error == "true")
        try:
            async for response in multiplex(
                requests,
                self._stream_one,
                max_in_flight=self.grpc_cfg.max_stream_requests_in_flight,
                buffer=self.grpc_cfg.stream_response_buffer,
                context=context,
            ):
                set_target(grpc_context, traffic)  # sent with the responses, as they go
                yield Serialized(response)
        except ServingError as err:
            set_error(grpc_context, err)
            raise

    async def _stream_one(self, request: Any) -> AsyncIterator[bytes]:
        model, version = request.model_name, _version(request.model_version)
        started = time.perf_counter()
        status = 200
        slot: Slot | None = None
        try:
            slot = self.guard.limit(current_key.get())
            message = self._forwardable(request)
            call = GrpcInferCall(model, version, message)
            events = await self.dataplane.replicas.grpc_stream_infer(call)
            async for event in events:
                yield event
        except Exception as exc:
            err = exc if isinstance(exc, ServingError) else call_error(exc, model)
            status = err.status_code
            if _stream_aborts.get():
                raise StreamAbort(err) from None
            yield bytes(convert.stream_error(err.message).SerializeToString())
        except BaseException:  # cancelled: the stream was closed or the client left
            status = 499
            raise
        finally:
            if slot is not None:
                slot.release()
            self.router_metrics.observe(
                model, "grpc/ModelStreamInfer", status, time.perf_counter() - started
            )

    # ---- Triton features this server does not offer (shared memory lives next to
    # Triton, which here is in another process behind the router) ----

    SystemSharedMemoryStatus = _unsupported("SystemSharedMemoryStatus", "shared memory")
    SystemSharedMemoryRegister = _unsupported("SystemSharedMemoryRegister", "shared memory")
    SystemSharedMemoryUnregister = _unsupported("SystemSharedMemoryUnregister", "shared memory")
    CudaSharedMemoryStatus = _unsupported("CudaSharedMemoryStatus", "CUDA shared memory")
    CudaSharedMemoryRegister = _unsupported("CudaSharedMemoryRegister", "CUDA shared memory")
    CudaSharedMemoryUnregister = _unsupported("CudaSharedMemoryUnregister", "CUDA shared memory")
    TraceSetting = _unsupported("TraceSetting", "tracing")
    LogSettings = _unsupported("LogSettings", "changing log settings")
