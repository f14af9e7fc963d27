"""Model control of a replica: load and unload (an operator's intents, applied in
order), the models' states, and the stub watch that reloads a model whose stubs died.

Held by the replica's host; the reporter thread converges it on the intents in the
state store (``apply_intents``), the router's load/unload calls reach it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.config import AppConfig
from app.contract import LoadCall, UnloadCall
from app.errors import BadRequest, from_triton
from app.placement.apply import load_overrides
from app.placement.load_lock import gpu_load_lock, load_lock_keys
from app.replica.stub_watch import StubWatch
from app.state_store import ModelIntent
from app.triton import Server, TritonError

if TYPE_CHECKING:
    from app.replica.residency import Residency

__all__ = ["ModelControl"]

log = logging.getLogger(__name__)


class ModelControl:
    """Loads ``models`` as ``intents`` say (all of them when there is none), then
    watches their stubs. ``forget_shapes`` drops what the host cached about models,
    whenever one is loaded or unloaded. Models in ``on_demand`` (a residency pool)
    are left to ``residency``, set by the host: operators' loads pin them, unloads
    unpin them; ``pinned_by_operator`` holds those the intents ask loaded at start."""

    residency: Residency | None = None

    def __init__(
        self,
        cfg: AppConfig,
        deployment_name: str,
        models: tuple[str, ...],
        server: Server,
        intents: dict[str, ModelIntent],
        forget_shapes: Callable[[], None],
        on_demand: frozenset[str] = frozenset(),
    ) -> None:
        self.cfg = cfg
        self.deployment_name = deployment_name
        self.models = models
        self.server = server
        self.load_errors: dict[str, str] = {}
        self._forget_shapes = forget_shapes
        self._applied: dict[str, int] = {}
        self._load_args: dict[str, tuple[str | None, dict[str, bytes] | None]] = {}
        self._apply_lock = threading.Lock()
        self.on_demand = on_demand
        self._generation_lock = threading.Lock()
        self.pinned_by_operator: dict[str, tuple[str | None, dict[str, bytes] | None]] = {}
        for model in models:
            intent = intents.get(model)
            if model in on_demand:
                if intent is not None:
                    self._applied[model] = intent.generation
                    if intent.loaded:
                        self.pinned_by_operator[model] = (intent.config, intent.files)
                continue
            if intent is not None and not intent.loaded:
                self._applied[model] = intent.generation
                continue
            self._load(model, intent.config if intent else None, intent.files if intent else None)
            if intent is not None:
                self._applied[model] = intent.generation
        # After the first loads: the stubs they started are the healthy baseline.
        self.stubs = StubWatch(server, models, self._apply_lock, self._reload)

    async def load_model(self, call: LoadCall) -> None:
        """Load now (errors reach the caller); ``generation`` is the intent it fulfils."""
        model = call.model
        residency = self.residency
        if residency is not None and model in self.on_demand:
            pin = residency.pin
            await asyncio.to_thread(
                self._apply_pool,
                model,
                call.generation,
                lambda: pin(model, call.config, call.files),
            )
            return
        await asyncio.to_thread(
            self._apply,
            model,
            call.generation,
            lambda: self._load(model, call.config, call.files, True),
        )

    async def unload_model(self, call: UnloadCall) -> None:
        model = call.model
        residency = self.residency
        if residency is not None and model in self.on_demand:
            unpin = residency.unpin
            await asyncio.to_thread(
                self._apply_pool,
                model,
                call.generation,
                lambda: unpin(model, call.unload_dependents),
            )
            return

        def unload() -> None:
            try:
                self.server.unload(
                    model, unload_dependents=call.unload_dependents, wait_until_unloaded=True
                )
            except TritonError as exc:
                raise from_triton(exc) from exc

        await asyncio.to_thread(self._apply, model, call.generation, unload)

    def apply_intents(self, intents: dict[str, ModelIntent]) -> None:
        """Converge on operators' intents newer than those applied here (reporter thread)."""
        for model, intent in intents.items():
            if model not in self.models or self._applied.get(model, -1) >= intent.generation:
                continue
            if self.residency is not None and model in self.on_demand:
                self._apply_pool_intent(self.residency, model, intent)
                continue
            if intent.loaded:
                self._apply(
                    model,
                    intent.generation,
                    lambda m=model, i=intent: self._load(m, i.config, i.files),  # type: ignore[misc]
                )
            else:
                self._apply(model, intent.generation, lambda m=model: self._unload_quietly(m))  # type: ignore[misc]

    def model_states(self) -> dict[str, dict[str, Any]]:
        """State of each hosted model as Triton's index reports it, plus load errors."""
        entries = self.server.repository_index()
        index = {e.name: e for e in entries}  # the last (highest) version of each
        states: dict[str, dict[str, Any]] = {}
        for model in self.models:
            entry = index.get(model)
            state = entry.state if entry and entry.state else "UNAVAILABLE"
            reason = (entry.reason if entry else "") or self.load_errors.get(model, "")
            stub_failure = self.stubs.why_unavailable(model)
            if stub_failure is not None:
                state, reason = "UNAVAILABLE", stub_failure
            residency = self.residency
            if (
                residency is not None
                and model in self.on_demand
                and state in ("UNAVAILABLE", "")
                and not stub_failure
                and reason in ("", "unloaded")
            ):
                state, reason = "UNAVAILABLE", residency.reason(model)
            if state == "UNAVAILABLE" and not reason:
                reason = "unloaded"
            states[model] = {
                "state": state,
                "reason": reason,
                "version": entry.version if entry else "",
                "versions": [e.version for e in entries if e.name == model and e.version],
            }
        return states

    def _apply(self, model: str, generation: int, action: Callable[[], None]) -> None:
        """Run a load/unload unless a newer intent was applied; one at a time, so the
        reporter thread never undoes a newer operator request with an older one."""
        with self._apply_lock:
            if self._applied.get(model, -1) > generation:
                return
            self._applied[model] = generation
            self._forget_shapes()
            try:
                action()
            finally:
                self.stubs.snapshot()

    def _apply_pool_intent(self, residency: Residency, model: str, intent: ModelIntent) -> None:
        def action() -> None:
            if intent.loaded:
                residency.pin(model, intent.config, intent.files)
            else:
                residency.unpin(model)

        try:
            self._apply_pool(model, intent.generation, action)
        except Exception as exc:  # the model's reason says why; the others go on
            log.error("operator intent for model %s not applied: %s", model, exc)

    def _apply_pool(self, model: str, generation: int, action: Callable[[], None]) -> None:
        """``_apply`` for pool models: the residency takes the control lock itself
        (around each load and unload, after choosing what to evict)."""
        with self._generation_lock:
            if self._applied.get(model, -1) > generation:
                return
            self._applied[model] = generation
        action()

    def load_for_residency(
        self, model: str, config: str | None, files: dict[str, bytes] | None
    ) -> None:
        """Load a pool model now; raises ``TritonError``."""
        with self._apply_lock:
            self._forget_shapes()
            self._load_args[model] = (config, files)
            try:
                config, files = load_overrides(self.cfg, self.deployment_name, model, config, files)
                keys = load_lock_keys(self.cfg, self.deployment_name)
                with gpu_load_lock(keys, f"{self.deployment_name}/{model}"):
                    self.server.load(model, config=config, files=files)
            finally:
                self.stubs.snapshot()

    def unload_for_residency(self, model: str, unload_dependents: bool = False) -> None:
        """Unload a pool model and wait until its stubs are gone; raises ``TritonError``."""
        with self._apply_lock:
            self._forget_shapes()
            try:
                self.server.unload(
                    model, unload_dependents=unload_dependents, wait_until_unloaded=True
                )
            finally:
                self.stubs.snapshot()

    def _load(
        self,
        model: str,
        config: str | None,
        files: dict[str, bytes] | None = None,
        raise_errors: bool = False,
    ) -> None:
        self._load_args[model] = (config, files)
        try:
            # The engine's GPU memory share follows the deployment's num_gpus.
            config, files = load_overrides(self.cfg, self.deployment_name, model, config, files)
            # One engine load at a time per GPU: co-tenants' memory skews its sizing.
            keys = load_lock_keys(self.cfg, self.deployment_name)
            with gpu_load_lock(keys, f"{self.deployment_name}/{model}"):
                self.server.load(model, config=config, files=files)
            self.load_errors.pop(model, None)
        except TritonError as exc:
            self.load_errors[model] = exc.message
            log.error("model %s failed to load: %s", model, exc.message)
            if raise_errors:
                if self._load_args[model][0] is not None and "failed to poll" in exc.message:
                    # Triton logs the field it rejected and returns only this: the
                    # override is the client's mistake, not a server error.
                    raise BadRequest(
                        f"model '{model}': Triton rejected the config override (the "
                        f"replica's log names the field): {exc.message}"
                    ) from exc
                raise from_triton(exc) from exc

    def _reload(self, model: str) -> None:
        """Load ``model`` again as it was last loaded (its stubs died; it is unloaded)."""
        self._forget_shapes()
        config, files = self._load_args.get(model, (None, None))
        self._load(model, config, files, raise_errors=True)

    def _unload_quietly(self, model: str) -> None:
        with contextlib.suppress(TritonError):
            self.server.unload(model)
