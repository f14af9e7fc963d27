"""``TrafficClient``: ``ReplicaClient`` that also answers public model names.

A call naming a public name (``traffic`` section) goes to one of its targets, the
call rewritten to name that model and version; every transport (KServe HTTP and
gRPC, OpenAI) reaches models through this one client, so each gets the same split.
The target is recorded on the request's ``TrafficRequest`` (the transport turns it
into ``X-Triton-Serve-Target``) and counted. A target refusing the call with 503
hands it to the others (``on_unavailable: failover``). The mirror gets a copy once
the primary has answered (a stream: once it is accepted), in a task of its own that
nobody awaits; its answer is discarded and its outcome counted.

Keys are checked against the public name only: targets are the operator's choice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from app.config import AppConfig, openai_tasks
from app.contract import (
    GenerateCall,
    GrpcInferCall,
    InferCall,
    InferResult,
    ModelRef,
    OpenAICall,
    ReplicaAPI,
    StatisticsCall,
)
from app.errors import NotFound, ServingError, Unavailable
from app.router.client import ReplicaClient
from app.router.traffic import Route, Target, TrafficMetrics, traffic_request
from app.router.traffic_config import TrafficRouteConfig, check_traffic
from app.security.context import authorize_model, current_key

__all__ = ["TrafficClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Call = InferCall | GenerateCall | GrpcInferCall


class TrafficClient(ReplicaClient):
    """See the module docstring. ``set_routes`` swaps the routes at once: calls
    already routed finish where they went, the next ones use the new weights."""

    def __init__(self, cfg: AppConfig, handles: dict[str, Any]) -> None:
        super().__init__(cfg, handles)
        self.traffic_metrics = TrafficMetrics()
        self.routes: dict[str, Route] = {}
        self._rng = random.Random()
        self._mirrors: set[asyncio.Task[None]] = set()
        self.set_routes(cfg.traffic)

    def set_routes(self, routes: dict[str, TrafficRouteConfig]) -> None:
        """Validate ``routes`` against this application's models, then use them."""
        check_traffic(routes, openai_tasks(self.cfg))
        self.routes = {name: Route(name, route) for name, route in routes.items()}

    def route_of(self, model: str) -> Route | None:
        return self.routes.get(model)

    # ---- names ----

    def deployment_of(self, model: str) -> str:
        route = self.routes.get(model)
        if route is None:
            return super().deployment_of(model)
        authorize_model(model)
        return self.owner[route.first.model]

    # ---- inference ----

    async def infer(self, call: InferCall) -> InferResult:
        route = self.routes.get(call.model)
        if route is None:
            return await super().infer(call)
        return await self._routed(route, call, ReplicaAPI.infer)  # type: ignore[no-any-return]

    async def generate(self, call: GenerateCall) -> dict[str, Any]:
        route = self.routes.get(call.model)
        if route is None:
            return await super().generate(call)
        return await self._routed(route, call, ReplicaAPI.generate)  # type: ignore[no-any-return]

    async def grpc_infer(self, call: GrpcInferCall) -> bytes:
        route = self.routes.get(call.model)
        if route is None:
            return await super().grpc_infer(call)
        return await self._routed(route, call, ReplicaAPI.grpc_infer)  # type: ignore[no-any-return]

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]:
        route = self.routes.get(call.model)
        if route is None:
            return await super().openai_call(call)
        return await self._routed(route, call, ReplicaAPI.openai_call)  # type: ignore[no-any-return]

    async def generate_stream(
        self, call: GenerateCall, on_error: Callable[[ServingError], bytes] | None = None
    ) -> AsyncIterator[bytes]:
        route = self.routes.get(call.model)
        if route is None:
            return await super().generate_stream(call, on_error)
        return await self._routed_stream(route, call, ReplicaAPI.generate_stream, on_error)

    async def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]:
        route = self.routes.get(call.model)
        if route is None:
            return await super().grpc_stream_infer(call)
        return await self._routed_stream(route, call, ReplicaAPI.grpc_stream_infer, None)

    async def openai_stream(
        self, call: OpenAICall, on_error: Callable[[ServingError], bytes] | None = None
    ) -> AsyncIterator[bytes]:
        route = self.routes.get(call.model)
        if route is None:
            return await super().openai_stream(call, on_error)
        return await self._routed_stream(route, call, ReplicaAPI.openai_stream, on_error)

    # ---- questions about a public name: its first target answers ----

    async def model_ready(self, ref: ModelRef, timeout_s: float | None = None) -> bool:
        route = self.routes.get(ref.model)
        if route is None:
            return await super().model_ready(ref, timeout_s)
        _no_version(route, ref.version)
        answers = await asyncio.gather(
            *(
                self._target_ready(t, timeout_s)
                for t in route.targets
                if t.weight > 0 or route.cfg.on_unavailable == "failover"
            )
        )
        return any(answers)

    async def _target_ready(self, target: Target, timeout_s: float | None) -> bool:
        ref = ModelRef(target.model, target.version)
        try:
            ready = await self._unary(
                ReplicaAPI.model_ready,
                target.model,
                ref,
                deployment=self.owner[target.model],
                timeout_s=timeout_s,
            )
        except ServingError:
            return False
        return bool(ready)

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        route = self.routes.get(ref.model)
        if route is None:
            return await super().model_metadata(ref)
        return await self._first(route, ref.version, ReplicaAPI.model_metadata)  # type: ignore[no-any-return]

    async def model_config(self, ref: ModelRef) -> dict[str, Any]:
        route = self.routes.get(ref.model)
        if route is None:
            return await super().model_config(ref)
        return await self._first(route, ref.version, ReplicaAPI.model_config)  # type: ignore[no-any-return]

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]:
        route = self.routes.get(call.model or "")
        if route is None:
            return await super().model_statistics(call)
        _no_version(route, call.version)
        authorize_model(route.name)
        first = route.first
        result: dict[str, Any] = await self._unary(
            ReplicaAPI.model_statistics,
            first.model,
            StatisticsCall(first.model, first.version),
            deployment=self.owner[first.model],
        )
        return result

    async def _first(self, route: Route, version: str | None, method: Callable[..., Any]) -> Any:
        _no_version(route, version)
        authorize_model(route.name)
        first = route.first
        ref = ModelRef(first.model, first.version)
        return await self._unary(method, first.model, ref, deployment=self.owner[first.model])

    # ---- routing ----

    def _sticky_key(self, route: Route) -> str | None:
        sticky = route.cfg.sticky
        if sticky is None:
            return None
        if sticky.header is not None:
            request = traffic_request.get()
            value = request.lookup(sticky.header) if request is not None else None
            if value:
                return value
        if sticky.api_key:
            key = current_key.get()
            if key is not None:
                return f"key:{key.name}"
        return None

    def _choose(self, route: Route, version: str | None) -> tuple[Target, str | None]:
        _no_version(route, version)
        authorize_model(route.name)
        key = self._sticky_key(route)
        target = route.pick(key, self._rng)
        assert target is not None  # a route has a target of positive weight
        return target, key

    def _failover(
        self, route: Route, key: str | None, refused: set[str], err: Unavailable
    ) -> Target:
        """The next target after ``refused`` answered 503, or ``err`` again."""
        if route.cfg.on_unavailable == "fail":
            raise err
        target = route.pick(key, self._rng, frozenset(refused))
        if target is None:
            raise err
        log.info("traffic %s: %s answered 503, trying %s", route.name, refused, target.label)
        return target

    def _served(self, route: Route, target: Target) -> None:
        self.traffic_metrics.routed(route.name, target.label)
        request = traffic_request.get()
        if request is not None:
            request.note(target.label)

    async def _routed(
        self, route: Route, call: _Call | OpenAICall, method: Callable[..., Awaitable[Any]]
    ) -> Any:
        target, key = self._choose(route, _version_of(call))
        refused: set[str] = set()
        try:
            while True:
                try:
                    result = await self._unary(
                        method,
                        target.model,
                        _retarget(call, target),
                        deployment=self.owner[target.model],
                    )
                    break
                except Unavailable as err:
                    refused.add(target.label)
                    target = self._failover(route, key, refused, err)
        finally:
            self._served(route, target)
        self._mirror(route, call, method, stream=False)
        return result

    async def _routed_stream(
        self,
        route: Route,
        call: _Call | OpenAICall,
        method: Callable[..., Any],
        on_error: Callable[[ServingError], bytes] | None,
    ) -> AsyncIterator[bytes]:
        target, key = self._choose(route, _version_of(call))
        refused: set[str] = set()
        try:
            while True:
                try:
                    events = await self._stream(
                        method,
                        target.model,
                        _retarget(call, target),
                        on_error,
                        deployment=self.owner[target.model],
                    )
                    break
                except Unavailable as err:
                    refused.add(target.label)
                    target = self._failover(route, key, refused, err)
        finally:
            self._served(route, target)
        self._mirror(route, call, method, stream=True)
        return events

    # ---- the mirror ----

    def _mirror(
        self,
        route: Route,
        call: _Call | OpenAICall,
        method: Callable[..., Any],
        *,
        stream: bool,
    ) -> None:
        mirror = route.mirror
        if mirror is None or not route.mirror_sampled(self._rng):
            return
        gate = self.gates[self.owner[mirror.model]]
        busy = gate.running_limit is not None and gate.running >= gate.running_limit
        if busy or not route.mirror_slot():
            self.traffic_metrics.mirror(route.name, mirror.label, "dropped")
            return
        copy = _retarget(call, mirror)
        task = asyncio.create_task(self._shadow(route, mirror, copy, method, stream))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _shadow(
        self,
        route: Route,
        mirror: Target,
        call: object,
        method: Callable[..., Any],
        stream: bool,
    ) -> None:
        deployment = self.owner[mirror.model]
        result = "ok"
        try:
            if stream:
                events = await self._stream(method, mirror.model, call, None, deployment=deployment)
                async for _ in events:
                    pass
            else:
                await self._unary(method, mirror.model, call, deployment=deployment)
        except asyncio.CancelledError:
            result = "error"
            raise
        except Exception as exc:
            result = "error"
            log.debug("traffic %s: mirror %s failed: %s", route.name, mirror.label, exc)
        finally:
            route.mirror_done()
            self.traffic_metrics.mirror(route.name, mirror.label, result)


def _no_version(route: Route, version: str | None) -> None:
    if version:
        raise NotFound(
            f"'{route.name}' is a public name routed to "
            f"{', '.join(t.label for t in route.targets)}; it has no versions of its own",
            param="model",
        )


def _version_of(call: _Call | OpenAICall) -> str | None:
    return None if isinstance(call, OpenAICall) else call.version


def _retarget(call: _Call | OpenAICall, target: Target) -> object:
    """The call addressed to ``target`` (the replica reads model and version from it)."""
    if isinstance(call, OpenAICall):
        return OpenAICall(call.endpoint, {**call.body, "model": target.model})
    return dataclasses.replace(call, model=target.model, version=target.version)
