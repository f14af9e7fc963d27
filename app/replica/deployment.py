"""The model deployment: one in-process Triton per replica (``ReplicaHost``), serving
a fixed set of models over ``app.contract.ReplicaAPI`` through per-protocol adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from app.config import AppConfig
from app.contract import (
    CallBatch,
    GenerateCall,
    GrpcInferCall,
    InferCall,
    InferResult,
    LoadCall,
    ModelRef,
    OpenAICall,
    ReplicaAPI,
    StatisticsCall,
    UnloadCall,
)
from app.replica.batch import run_batch
from app.replica.grpc_adapter import GrpcAdapter
from app.replica.host import ReplicaHost
from app.replica.kserve_adapter import KServeAdapter
from app.replica.openai_adapter import OpenAIAdapter

__all__ = ["ModelReplica"]


class ModelReplica:
    """Serve deployment class; ``build_app`` wraps it with each deployment's options.
    Each call goes to the adapter of its protocol; streams are re-yielded here, as
    Serve streams only a method that is itself a generator."""

    def __init__(self, app_config: dict[str, Any], deployment_name: str) -> None:
        self.host = ReplicaHost(AppConfig.model_validate(app_config), deployment_name)
        self.kserve = KServeAdapter(self.host)
        self.grpc = GrpcAdapter(self.host)
        self.openai = OpenAIAdapter(self.host)

    # ---- inference ----

    async def infer(self, call: InferCall) -> InferResult:
        async with self.host.use(call.model):
            return await self.kserve.infer(call)

    async def generate(self, call: GenerateCall) -> dict[str, Any]:
        async with self.host.use(call.model):
            return await self.kserve.generate(call)

    async def generate_stream(self, call: GenerateCall) -> AsyncIterator[bytes]:
        async with self.host.use(call.model):
            async for chunk in self.kserve.generate_stream(call):
                yield chunk

    async def grpc_infer(self, call: GrpcInferCall) -> bytes:
        async with self.host.use(call.model):
            return await self.grpc.grpc_infer(call)

    async def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]:
        async with self.host.use(call.model):
            async for chunk in self.grpc.grpc_stream_infer(call):
                yield chunk

    async def infer_batch(self, batch: CallBatch) -> AsyncIterator[list[tuple[int, Any]]]:
        async for answers in run_batch(batch, self._infer_one):
            yield answers

    async def _infer_one(self, call: InferCall | GrpcInferCall) -> InferResult | bytes:
        if isinstance(call, GrpcInferCall):
            return await self.grpc_infer(call)
        return await self.infer(call)

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]:
        async with self.host.use(call.model):
            return await self.openai.openai_call(call)

    async def openai_stream(self, call: OpenAICall) -> AsyncIterator[bytes]:
        async with self.host.use(call.model):
            async for chunk in self.openai.openai_stream(call):
                yield chunk

    # ---- model information and control ----

    async def model_ready(self, ref: ModelRef) -> bool:
        return await self.kserve.model_ready(ref)

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        async with self.host.use(ref.model):  # clients ask before their first infer
            return await self.kserve.model_metadata(ref)

    async def model_config(self, ref: ModelRef) -> dict[str, Any]:
        async with self.host.use(ref.model):  # clients ask before their first infer
            return await self.kserve.model_config(ref)

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]:
        return await self.kserve.model_statistics(call)

    async def load_model(self, call: LoadCall) -> None:
        self.host.owned(call.model, None, serving=False)
        await self.host.control.load_model(call)

    async def unload_model(self, call: UnloadCall) -> None:
        self.host.owned(call.model, None, serving=False)
        await self.host.control.unload_model(call)

    # ---- Serve's hooks ----

    def record_routing_stats(self) -> dict[str, Any]:
        """Serve asks every ``request_routing_stats_period_s`` (pool deployments) and
        hands the answer to the routers' ``PoolRequestRouter``."""
        residency = self.host.residency
        return residency.routing_stats() if residency is not None else {}

    def check_health(self) -> None:
        self.host.check_health()

    def __del__(self) -> None:
        host = getattr(self, "host", None)
        if host is not None:
            host.stop()


if TYPE_CHECKING:

    def _implements_the_contract(replica: ModelReplica) -> ReplicaAPI:
        return replica  # mypy checks every call of ReplicaAPI against ModelReplica
