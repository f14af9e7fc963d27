"""What the router does for a request, apart from HTTP: find the model's deployment,
call it, and answer health, listing and metrics questions from the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from app.config import AppConfig, ModelDeploymentConfig, model_owner
from app.deployments.state import ReplicaReport, get_state_store
from app.errors import Internal, NotFound, RequestTimeout, ServingError, Unavailable
from app.observability import label_metrics
from app.placement.feasibility import unplaceable
from app.security.context import authorize_model, permits, request_timeout_s
from app.security.limits import DeploymentGate

__all__ = ["DataPlane", "call_error"]

log = logging.getLogger(__name__)

_REPORT_CACHE_S = 0.5
# Calls that answer questions about a model rather than run it: never shed here, so
# readiness and metadata stay truthful under load.
_UNBOUNDED_METHODS = frozenset(
    {
        "model_ready",
        "model_metadata",
        "model_config",
        "model_statistics",
        "load_model",
        "unload_model",
    }
)


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


class DataPlane:
    """Routes by model name to the Serve handle of the deployment that hosts it."""

    def __init__(self, cfg: AppConfig, handles: dict[str, Any], app_name: str) -> None:
        self.cfg = cfg
        self.app_name = app_name
        self.handles = handles
        self.owner = model_owner(cfg)
        self.store = get_state_store(app_name)
        self._reports: list[ReplicaReport] = []
        self._reports_at = 0.0
        self._reports_lock = asyncio.Lock()
        self.gates = {
            dep.name: DeploymentGate(*gate_limits(dep, cfg.router.num_replicas))
            for dep in cfg.deployments
        }

    # ---- calls to model deployments ----

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

    async def admit(
        self, deployment: str, model: str, method: str, timeout_s: float
    ) -> DeploymentGate | None:
        """A place in the deployment's gate (None for calls that are never held back),
        waiting at most ``timeout_s``; 503 when its line is full, 408 on timeout."""
        if method in _UNBOUNDED_METHODS:
            return None
        why = await unplaceable(self.cfg, deployment)  # 503 now, not a 408 after the timeout
        if why is not None:
            raise Unavailable(why, retry_after=30)
        gate = self.gates[deployment]
        try:
            await asyncio.wait_for(gate.enter(model), timeout=timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"model '{model}' did not answer in time") from None
        return gate

    def timeout_s(self, limit: float | None = None) -> float:
        """Seconds a call may take: the router's limit, shortened by ``limit`` and by
        the client's ``X-Request-Timeout``."""
        candidates = [self.cfg.router.request_timeout_s, limit, request_timeout_s.get()]
        return min(c for c in candidates if c is not None)

    async def call(
        self, model: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        return await self.call_deployment(
            self.deployment_of(model), model, method, *args, timeout_s=timeout_s
        )

    async def call_deployment(
        self, deployment: str, model: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        """``call`` without the model check, for requests about a whole deployment."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s(timeout_s)
        gate = await self.admit(deployment, model, method, deadline - loop.time())
        response = None
        try:
            response = self.handles[deployment].options(method_name=method).remote(*args)
            return await asyncio.wait_for(response, timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:  # the client went away
            _cancel_quietly(response)
            raise
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError | TimeoutError):
                # Cancels the request in the replica, which cancels it in Triton.
                _cancel_quietly(response)
            raise call_error(exc, model) from None
        finally:
            if gate is not None:
                gate.leave()

    async def stream(
        self,
        model: str,
        method: str,
        *args: Any,
        on_error: Callable[[ServingError], bytes] | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream a deployment generator; its first item (``b""``) is awaited before
        returning, so errors before the stream starts still raise here. A failure
        after that (e.g. the replica died) ends the stream with ``on_error(err)``'s
        event when given, else raises ``err`` from the iterator; either way as a
        ``ServingError``, never a connection cut without a word."""
        deployment = self.deployment_of(model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s()
        gate = await self.admit(deployment, model, method, deadline - loop.time())
        generator = None
        try:
            generator = (
                self.handles[deployment].options(method_name=method, stream=True).remote(*args)
            )
            first = await asyncio.wait_for(
                generator.__anext__(), timeout=max(0.0, deadline - loop.time())
            )
        except StopAsyncIteration:
            first = b""
        except BaseException as exc:
            _cancel_quietly(generator)
            if gate is not None:
                gate.leave()
            if not isinstance(exc, Exception):  # cancelled: the client went away
                raise
            raise call_error(exc, model) from None
        return _rest(first, generator, gate, model, on_error)

    async def all_statistics(self, timeout_s: float) -> list[dict[str, Any]]:
        """Statistics of every model the caller may use, from each deployment that
        answers within ``timeout_s``: one without a running replica is left out rather
        than holding the answer for the whole request timeout (HTTP and gRPC)."""
        by_deployment: dict[str, list[str]] = {}
        for model, deployment in self.owner.items():
            by_deployment.setdefault(deployment, []).append(model)

        async def of_deployment(deployment: str, models: list[str]) -> list[dict[str, Any]]:
            try:
                result = await self.call_deployment(
                    deployment, models[0], "model_statistics", None, None, timeout_s=timeout_s
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

    # ---- state reported by replicas ----

    async def reports(self) -> list[ReplicaReport]:
        async with self._reports_lock:
            if time.monotonic() - self._reports_at > _REPORT_CACHE_S:
                self._reports = await self.store.reports.remote()
                self._reports_at = time.monotonic()
            return self._reports

    async def model_states(self) -> dict[str, dict[str, Any]]:
        """Each configured model: READY if any replica has it ready, else why not."""
        states: dict[str, dict[str, Any]] = {}
        for report in await self.reports():
            for model, state in report.models.items():
                current = states.get(model)
                if current is None or (state["state"] == "READY" and current["state"] != "READY"):
                    states[model] = dict(state)
        missing = [m for m in self.owner if m not in states]
        if missing:
            pending = await self.deployment_messages()
            for model in missing:
                deployment = self.owner[model]
                message = pending.get(deployment) or "no replica has reported yet"
                states[model] = {
                    "state": "UNAVAILABLE",
                    "reason": f"deployment '{deployment}': {message}",
                    "version": "",
                }
        return states

    async def deployment_messages(self) -> dict[str, str]:
        """Serve's word on each deployment (e.g. why a replica is not scheduled)."""
        try:
            from ray import serve

            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(self.app_name)
            if app is None:
                return {}
            return {
                name: f"{dep.status}: {dep.message}" if dep.message else str(dep.status)
                for name, dep in app.deployments.items()
            }
        except Exception as exc:
            log.debug("serve.status failed: %s", exc)
            return {}

    async def not_ready(self) -> dict[str, str]:
        return {
            model: state["reason"] or state["state"]
            for model, state in (await self.model_states()).items()
            if state["state"] != "READY"
        }

    async def triton_metrics(self) -> str:
        parts = [
            label_metrics(r.metrics_text, {"deployment": r.deployment, "replica": r.replica_id})
            for r in await self.reports()
        ]
        return "".join(parts)

    async def set_intent(
        self, model: str, loaded: bool, config: str | None, files: dict[str, bytes] | None
    ) -> int:
        """Record an operator's load/unload; returns its generation for the replicas."""
        generation: int = await self.store.set_intent.remote(model, loaded, config, files)
        self._reports_at = 0.0  # the next question re-reads the store
        return generation

    async def serve_metrics(self) -> str:
        """Ray's own metrics (Serve's included) from this node's metrics agent, if it runs."""
        port = _metrics_export_port()
        if port is None:
            return ""
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
            return response.text if response.status_code == 200 else ""
        except httpx.HTTPError:
            return ""


def _metrics_export_port() -> int | None:
    try:
        import ray

        node = ray._private.worker.global_worker.node
        port = getattr(node, "metrics_export_port", None)
        return int(port) if port else None
    except Exception:
        return None


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
        _cancel_quietly(generator)
        if gate is not None:
            gate.leave()


def _cancel_quietly(response: Any) -> None:
    """Cancel a handle call. Serve's ``cancel()`` re-raises the call's own error (a
    request shed for backpressure raises ``BackPressureError`` again), which would
    escape to Serve's plain-text 503 handler instead of ours."""
    with contextlib.suppress(Exception):
        response.cancel()


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
