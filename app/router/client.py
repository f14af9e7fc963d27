"""``ReplicaClient``: the router's side of ``app.contract.ReplicaAPI``.

Each call is a named method taking the contract's dataclass; the Serve handle for
(deployment, method, stream) is built once and cached. Around every call: the
model check (403/404), the deployment's line (``DeploymentGate``: 503 when full),
the unplaceable-deployment 503, the request timeout (408, cancelling the work in
the replica and so in Triton), cancellation when the client goes away, and one
mapping of errors (``call_error``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.config import AppConfig, ModelDeploymentConfig, model_owner
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
from app.errors import Internal, NotFound, RequestTimeout, ServingError, Unavailable
from app.placement.feasibility import unplaceable
from app.router.coalesce import CoalesceMetrics, Coalescer, cancel_quietly
from app.security.context import authorize_model, permits, request_timeout_s
from app.security.limits import DeploymentGate

__all__ = ["ReplicaClient", "call_error", "gate_limits"]

log = logging.getLogger(__name__)

# How long a deployment found placeable is not checked again (its nodes are re-read
# every ``NODES_CACHE_S`` anyway).
PLACEABLE_CACHE_S = 2.0

# Calls that answer questions about a model rather than run it: never shed here, so
# readiness and metadata stay truthful under load.
_UNBOUNDED = frozenset(
    m.__name__
    for m in (
        ReplicaAPI.model_ready,
        ReplicaAPI.model_metadata,
        ReplicaAPI.model_config,
        ReplicaAPI.model_statistics,
        ReplicaAPI.load_model,
        ReplicaAPI.unload_model,
    )
)


# Calls that may travel coalesced (``app.router.coalesce``).
_COALESCED = frozenset((ReplicaAPI.infer.__name__, ReplicaAPI.grpc_infer.__name__))


def gate_limits(dep: ModelDeploymentConfig, router_replicas: int) -> tuple[int | None, int]:
    """``DeploymentGate`` limits for this router: its share of the replicas'
    ``max_ongoing_requests`` (held back here) and ``max_queued_requests`` (waiting
    here). Autoscaling deployments hold nothing back and bound the total, counting
    ``max_replicas``; Serve's own limit still applies there."""
    routers = max(1, router_replicas)
    if dep.autoscaling is not None:
        ongoing = math.ceil(dep.max_ongoing_requests * dep.autoscaling.max_replicas / routers)
        return None, ongoing + dep.max_queued_requests
    ongoing = math.ceil(dep.max_ongoing_requests * (dep.num_replicas or 1) / routers)
    return ongoing, dep.max_queued_requests


class ReplicaClient:
    """Calls model replicas by the contract; see the module docstring."""

    def __init__(self, cfg: AppConfig, handles: dict[str, Any]) -> None:
        self.cfg = cfg
        self.owner = model_owner(cfg)
        self._handles = handles
        self._methods: dict[tuple[str, str, bool, str], Any] = {}
        # Deployments found placeable, until when (monotonic): not asked per request.
        self._placeable_until: dict[str, float] = {}
        # Calls to a pool's models name the model to Serve's router (multiplexed model
        # id), which prefers replicas that report holding it (``app.replica.affinity``).
        self.pools = frozenset(d.name for d in cfg.deployments if d.residency is not None)
        self.gates = {
            dep.name: DeploymentGate(*gate_limits(dep, cfg.router.num_replicas))
            for dep in cfg.deployments
        }
        self.coalesce_metrics = CoalesceMetrics()
        self._coalescers = {
            dep.name: Coalescer(
                dep.name,
                self._batch_sender(dep.name),
                self._single_sender(dep.name),
                self.coalesce_metrics,
            )
            for dep in cfg.deployments
            if cfg.router.coalesce and dep.autoscaling is None and dep.residency is None
        }

    # ---- the contract, one method per call ----

    async def infer(self, call: InferCall) -> InferResult:
        result: InferResult = await self._unary(ReplicaAPI.infer, call.model, call)
        return result

    async def generate(self, call: GenerateCall) -> dict[str, Any]:
        result: dict[str, Any] = await self._unary(ReplicaAPI.generate, call.model, call)
        return result

    async def generate_stream(
        self, call: GenerateCall, on_error: Callable[[ServingError], bytes] | None = None
    ) -> AsyncIterator[bytes]:
        return await self._stream(ReplicaAPI.generate_stream, call.model, call, on_error)

    async def grpc_infer(self, call: GrpcInferCall) -> bytes:
        result: bytes = await self._unary(ReplicaAPI.grpc_infer, call.model, call)
        return result

    async def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]:
        return await self._stream(ReplicaAPI.grpc_stream_infer, call.model, call, None)

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]:
        result: dict[str, Any] = await self._unary(ReplicaAPI.openai_call, call.model, call)
        return result

    async def openai_stream(
        self, call: OpenAICall, on_error: Callable[[ServingError], bytes] | None = None
    ) -> AsyncIterator[bytes]:
        return await self._stream(ReplicaAPI.openai_stream, call.model, call, on_error)

    async def model_ready(self, ref: ModelRef, timeout_s: float | None = None) -> bool:
        ready = await self._unary(ReplicaAPI.model_ready, ref.model, ref, timeout_s=timeout_s)
        return bool(ready)

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        result: dict[str, Any] = await self._unary(ReplicaAPI.model_metadata, ref.model, ref)
        return result

    async def model_config(self, ref: ModelRef) -> dict[str, Any]:
        result: dict[str, Any] = await self._unary(ReplicaAPI.model_config, ref.model, ref)
        return result

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]:
        model = call.model or ""
        result: dict[str, Any] = await self._unary(ReplicaAPI.model_statistics, model, call)
        return result

    async def load_model(self, call: LoadCall) -> None:
        await self._unary(ReplicaAPI.load_model, call.model, call)

    async def unload_model(self, call: UnloadCall) -> None:
        await self._unary(ReplicaAPI.unload_model, call.model, call)

    async def all_statistics(self, timeout_s: float) -> list[dict[str, Any]]:
        """Statistics of every model the caller may use, from each deployment that
        answers within ``timeout_s``: one without a running replica is left out rather
        than holding the answer for the whole request timeout (HTTP and gRPC)."""
        by_deployment: dict[str, list[str]] = {}
        for model, deployment in self.owner.items():
            by_deployment.setdefault(deployment, []).append(model)

        async def of_deployment(deployment: str, models: list[str]) -> list[dict[str, Any]]:
            try:
                result = await self._unary(
                    ReplicaAPI.model_statistics,
                    models[0],
                    StatisticsCall(None),
                    deployment=deployment,
                    timeout_s=timeout_s,
                )
            except (Unavailable, RequestTimeout):
                return []
            return [s for s in result["model_stats"] if permits(s.get("name", ""))]

        wanted = [
            of_deployment(deployment, models)
            for deployment, models in by_deployment.items()
            if any(permits(m) for m in models)
        ]
        return [s for part in await asyncio.gather(*wanted) for s in part]

    # ---- admission ----

    def deployment_of(self, model: str) -> str:
        """The deployment serving ``model``: 403 if the caller's key may not use it
        (checked first, so keys learn nothing of models outside their scope), 404
        if no deployment is configured to serve it. Names outside the configured
        set never reach a replica, Triton or the filesystem."""
        authorize_model(model)
        deployment = self.owner.get(model)
        if deployment is None:
            raise NotFound(f"unknown model: '{model}' is not served here")
        return deployment

    def timeout_s(self, limit: float | None = None) -> float:
        """Seconds a call may take: the router's limit, shortened by ``limit`` and by
        the client's ``X-Request-Timeout``."""
        candidates = [self.cfg.router.request_timeout_s, limit, request_timeout_s.get()]
        return min(c for c in candidates if c is not None)

    async def _admit(
        self, deployment: str, model: str, method: str, timeout_s: float
    ) -> DeploymentGate | None:
        """A place in the deployment's gate (None for calls that are never held back),
        waiting at most ``timeout_s``; 503 when its line is full, 408 on timeout."""
        if method in _UNBOUNDED:
            return None
        now = time.monotonic()
        if self._placeable_until.get(deployment, 0.0) < now:
            why = await unplaceable(self.cfg, deployment)  # 503 now, not a 408 later
            if why is not None:
                raise Unavailable(why, retry_after=30)
            self._placeable_until[deployment] = now + PLACEABLE_CACHE_S
        gate = self.gates[deployment]
        try:
            # A timeout scope, not wait_for: no task per call when the gate is open.
            async with asyncio.timeout(timeout_s):
                await gate.enter(model)
        except TimeoutError:
            raise RequestTimeout(f"model '{model}' did not answer in time") from None
        return gate

    def _method(self, deployment: str, method: str, stream: bool, model: str = "") -> Any:
        pooled = deployment in self.pools and bool(model)
        key = (deployment, method, stream, model if pooled else "")
        handle = self._methods.get(key)
        if handle is None:
            options: dict[str, Any] = {"method_name": method}
            if stream:
                options["stream"] = True
            if pooled:
                options["multiplexed_model_id"] = model
            handle = self._handles[deployment].options(**options)
            self._methods[key] = handle
        return handle

    def _batch_sender(self, deployment: str) -> Callable[[CallBatch], Any]:
        def send(batch: CallBatch) -> Any:
            return self._method(deployment, ReplicaAPI.infer_batch.__name__, True).remote(batch)

        return send

    def _single_sender(self, deployment: str) -> Callable[[InferCall | GrpcInferCall], Any]:
        def send(call: InferCall | GrpcInferCall) -> Any:
            method = ReplicaAPI.grpc_infer if isinstance(call, GrpcInferCall) else ReplicaAPI.infer
            return self._method(deployment, method.__name__, False).remote(call)

        return send

    # ---- the two shapes of a call ----

    async def _unary(
        self,
        method: Callable[..., Any],
        model: str,
        arg: object,
        *,
        deployment: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        deployment = deployment or self.deployment_of(model)
        name = method.__name__
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s(timeout_s)
        gate = await self._admit(deployment, model, name, deadline - loop.time())
        response = None
        coalescer = self._coalescers.get(deployment) if name in _COALESCED else None
        try:
            if coalescer is not None:
                async with asyncio.timeout_at(deadline):
                    # Cancelled here (timeout, client gone), it cancels its part itself.
                    return await coalescer.call(arg, deadline)  # type: ignore[arg-type]
            response = self._method(deployment, name, False, model).remote(arg)
            async with asyncio.timeout_at(deadline):
                return await response
        except asyncio.CancelledError:  # the client went away
            cancel_quietly(response)
            raise
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError | TimeoutError):
                # Cancels the request in the replica, which cancels it in Triton.
                cancel_quietly(response)
            raise call_error(exc, model) from None
        finally:
            if gate is not None:
                gate.leave()

    async def _stream(
        self,
        method: Callable[..., Any],
        model: str,
        arg: object,
        on_error: Callable[[ServingError], bytes] | None,
        *,
        deployment: str | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream a replica generator; its first item (``b""``) is awaited before
        returning, so errors before the stream starts still raise here. A failure
        after that (e.g. the replica died) ends the stream with ``on_error(err)``'s
        event when given, else raises ``err`` from the iterator; either way as a
        ``ServingError``, never a connection cut without a word."""
        deployment = deployment or self.deployment_of(model)
        name = method.__name__
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s()
        gate = await self._admit(deployment, model, name, deadline - loop.time())
        generator = None
        try:
            generator = self._method(deployment, name, True, model).remote(arg)
            async with asyncio.timeout_at(deadline):
                first = await generator.__anext__()
        except StopAsyncIteration:
            first = b""
        except BaseException as exc:
            cancel_quietly(generator)
            if gate is not None:
                gate.leave()
            if not isinstance(exc, Exception):  # cancelled: the client went away
                raise
            raise call_error(exc, model) from None
        return _rest(first, generator, gate, model, on_error)


async def _rest(
    first: bytes,
    generator: Any,
    gate: DeploymentGate | None,
    model: str,
    on_error: Callable[[ServingError], bytes] | None,
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        try:
            async for chunk in generator:
                if chunk:
                    yield chunk
        except Exception as exc:
            err = call_error(exc, model)
            if on_error is None:
                raise err from None
            yield on_error(err)
    finally:
        cancel_quietly(generator)
        if gate is not None:
            gate.leave()


def call_error(exc: BaseException, model: str) -> ServingError:
    """Errors from a handle call: the replica's own, Serve's backpressure, dead replicas."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ServingError):
        return _with_retry_after(exc)
    if isinstance(cause, ServingError):
        return _with_retry_after(cause)
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return RequestTimeout(f"model '{model}' did not answer in time")
    if "BackPressure" in name:
        return Unavailable(f"model '{model}' is overloaded: its queue is full", retry_after=1)
    if name in (
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "DeploymentUnavailableError",
    ):
        return Unavailable(f"model '{model}': its replica is unavailable ({name})", retry_after=1)
    log.exception("unexpected error calling model %s", model, exc_info=exc)
    return Internal(f"internal error calling model '{model}': {name}")


def _with_retry_after(err: ServingError) -> ServingError:
    """Every 503 tells the client when to come back (Triton's own queue-policy
    rejections and ``UNAVAILABLE`` errors carry no delay)."""
    if isinstance(err, Unavailable) and err.retry_after is None:
        err.retry_after = 1
    return err
