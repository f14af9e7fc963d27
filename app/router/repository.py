"""Triton's model repository extension (index, load, unload, a model's entry) and
model readiness and metadata, written once: HTTP routes and gRPC RPCs both call
this, each only translating its own messages, as KServe injects one data plane
into REST and gRPC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.contract import LoadCall, ModelRef, UnloadCall
from app.errors import Forbidden, NotFound, RequestTimeout, Unavailable
from app.protocol.kserve_v2 import LoadRequest

if TYPE_CHECKING:
    from app.router.dataplane import DataPlane

__all__ = ["READY_TIMEOUT_S", "RepositoryExtension"]

# How long a readiness or statistics question waits for a replica before answering
# from what replicas reported.
READY_TIMEOUT_S = 3.0


class RepositoryExtension:
    """See the module docstring; ``plane`` holds the replicas' client and state."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _repository_model(self, model: str) -> None:
        """403/404 as for any model; a public model name (traffic) is not in the
        repository: 404 naming its targets."""
        replicas = self.plane.replicas
        replicas.deployment_of(model)
        route = replicas.route_of(model)
        if route is not None:
            targets = ", ".join(t.label for t in route.targets)
            raise NotFound(
                f"'{model}' is a public name routed to {targets}, not a model in the "
                "repository; load, unload or look up its targets"
            )

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every configured model's entry (name, version, state, reason), by name."""
        states = await self.plane.model_states()
        return [
            {
                "name": name,
                "version": s.get("version", ""),
                "state": s["state"],
                "reason": s["reason"],
            }
            for name, s in sorted(states.items())
            if not ready_only or s["state"] == "READY"
        ]

    async def entry(self, model: str) -> dict[str, Any]:
        """One model's entry: its state, the versions Triton has for it and why it is
        not ready; 403 outside the key's models, 404 for a model not served here."""
        self._repository_model(model)
        state = (await self.plane.model_states()).get(model, {})
        versions = state.get("versions")
        if versions is None:  # a replica reporting only the version it serves
            versions = [state["version"]] if state.get("version") else []
        return {
            "name": model,
            "state": state.get("state", "UNAVAILABLE"),
            "versions": list(versions),
            "reason": state.get("reason", ""),
        }

    async def load(self, model: str, load: LoadRequest) -> None:
        """Record the operator's intent (replicas started later follow it), then load
        in a replica now so errors reach the caller."""
        plane = self.plane
        self._repository_model(model)
        files = load.files() if load.names_files() else None
        if files and not plane.cfg.allow_repository_file_overrides:
            raise Forbidden(
                "load requests with 'file:' parameters are disabled; an operator can enable "
                "them with allow_repository_file_overrides"
            )
        generation = await plane.set_intent(model, True, load.config, files)
        await plane.replicas.load_model(LoadCall(model, load.config, files, generation))

    async def unload(self, model: str, unload_dependents: bool) -> None:
        plane = self.plane
        self._repository_model(model)
        generation = await plane.set_intent(model, False, None, None)
        await plane.replicas.unload_model(UnloadCall(model, unload_dependents, generation))

    async def ready(self, ref: ModelRef) -> bool:
        """Asks a replica (fresh after load/unload); False when none answers in time."""
        replicas = self.plane.replicas
        replicas.deployment_of(ref.model)
        try:
            return await replicas.model_ready(ref, READY_TIMEOUT_S)
        except (Unavailable, RequestTimeout):
            return False

    async def require_ready(self, ref: ModelRef) -> None:
        """``ready``, or a 503 naming why not: what replicas reported, or Serve's
        word on the deployment when no replica answers (e.g. not scheduled)."""
        if not await self.ready(ref):
            state = (await self.plane.model_states()).get(ref.model, {})
            reason = state.get("reason") or "not loaded"
            raise Unavailable(f"model '{ref.model}' is not ready: {reason}", retry_after=5)

    async def metadata(self, ref: ModelRef) -> dict[str, Any]:
        return await self.plane.replicas.model_metadata(ref)
