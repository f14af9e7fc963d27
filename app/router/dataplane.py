"""What the router knows apart from HTTP: the replicas' contract client
(``replicas``), and answers to health, listing and metrics questions from the
state store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from app.config import AppConfig, model_owner
from app.llm.config import OpenAIModelConfig
from app.observability import label_metrics
from app.residency.config import NOT_LOADED_REASON
from app.router.repository import RepositoryExtension
from app.router.traffic import route_state
from app.router.traffic_client import TrafficClient
from app.state_store import ReplicaReport, get_state_store

__all__ = ["DataPlane"]

log = logging.getLogger(__name__)

_REPORT_CACHE_S = 0.5


class DataPlane:
    """The replicas' client and the state they report; shared by HTTP and gRPC."""

    def __init__(self, cfg: AppConfig, handles: dict[str, Any], app_name: str) -> None:
        self.cfg = cfg
        self.app_name = app_name
        self.owner = model_owner(cfg)
        self.store = get_state_store(app_name)
        self._reports: list[ReplicaReport] = []
        self._reports_at = 0.0
        self._reports_lock = asyncio.Lock()
        # Answers public model names (the traffic section) as well as models.
        self.replicas = TrafficClient(cfg, handles)
        self.repository = RepositoryExtension(self)

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
                    "versions": [],
                }
        return states

    async def listed_states(self) -> dict[str, dict[str, Any]]:
        """``model_states`` and each public model name, READY when a target is."""
        states = await self.model_states()
        routed = {name: route_state(route, states) for name, route in self.replicas.routes.items()}
        return {**states, **routed}

    def openai_models(self) -> dict[str, OpenAIModelConfig]:
        """Models on ``/v1`` by name, public names included (as their first target)."""
        exposed = {name: cfg for dep in self.cfg.deployments for name, cfg in dep.openai.items()}
        for name, route in self.replicas.routes.items():
            if route.first.model in exposed:
                exposed[name] = exposed[route.first.model]
        return exposed

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
        """Models that should be READY and are not (a pool's models that are merely
        not loaded yet load on their first request: the server is ready for them)."""
        return {
            model: state["reason"] or state["state"]
            for model, state in (await self.model_states()).items()
            if state["state"] != "READY" and state["reason"] != NOT_LOADED_REASON
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
