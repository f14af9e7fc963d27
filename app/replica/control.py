"""Model control of a model replica: load and unload (an operator's intents, applied
in order), the models' states, and the reporting thread that converges every replica
on the intents recorded in the state store.

A base class of ``ModelReplica``, which owns the attributes declared here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from app.config import AppConfig
from app.contract import LoadCall, UnloadCall
from app.deployments.state import REPORT_PERIOD_S, ModelIntent, ReplicaReport
from app.deployments.stub_watch import StubWatch
from app.errors import BadRequest, from_triton
from app.placement.apply import load_overrides
from app.placement.load_lock import gpu_load_lock, load_lock_keys
from app.triton import Server, TritonError
from app.triton.process_tree import end_orphans
from app.triton.server import remove_orphaned_shm

__all__ = ["ModelControl", "ray_get"]

log = logging.getLogger(__name__)


class ModelControl:
    """Load/unload and state reporting; see the module docstring."""

    cfg: AppConfig
    deployment_name: str
    models: tuple[str, ...]
    server: Server
    replica_id: str
    triton_version: str
    stubs: StubWatch
    load_errors: dict[str, str]
    _applied: dict[str, int]
    _load_args: dict[str, tuple[str | None, dict[str, bytes] | None]]
    _apply_lock: threading.Lock
    _shapes: dict[Any, Any]
    _store: Any
    _stop_reporting: threading.Event

    def _owned(self, model: str | None, version: str | None, *, serving: bool = True) -> int:
        raise NotImplementedError

    def metrics(self) -> str:
        raise NotImplementedError

    async def load_model(self, call: LoadCall) -> None:
        """Load now (errors reach the caller); ``generation`` is the intent it fulfils."""
        model = call.model
        self._owned(model, None, serving=False)
        await asyncio.to_thread(
            self._apply,
            model,
            call.generation,
            lambda: self._load(model, call.config, call.files, True),
        )

    async def unload_model(self, call: UnloadCall) -> None:
        model = call.model
        self._owned(model, None, serving=False)

        def unload() -> None:
            try:
                self.server.unload(
                    model, unload_dependents=call.unload_dependents, wait_until_unloaded=True
                )
            except TritonError as exc:
                raise from_triton(exc) from exc

        await asyncio.to_thread(self._apply, model, call.generation, unload)

    def _apply(self, model: str, generation: int, action: Callable[[], None]) -> None:
        """Run a load/unload unless a newer intent was applied; one at a time, so the
        reporter thread never undoes a newer operator request with an older one."""
        with self._apply_lock:
            if self._applied.get(model, -1) > generation:
                return
            self._applied[model] = generation
            self._shapes.clear()
            try:
                action()
            finally:
                self.stubs.snapshot()

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
            if state == "UNAVAILABLE" and not reason:
                reason = "unloaded"
            states[model] = {
                "state": state,
                "reason": reason,
                "version": entry.version if entry else "",
                "versions": [e.version for e in entries if e.name == model and e.version],
            }
        return states

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

    def _report_forever(self) -> None:
        """Report to the state store and converge on operators' load/unload intents.

        A thread, not a task: it must run whatever loop Serve constructs us on, and
        loads block for seconds.
        """
        while not self._stop_reporting.is_set():
            try:
                self.stubs.check()
                # A replica that died after this one started (e.g. the one it
                # replaced, killed at the end of its graceful shutdown) left its
                # regions; start() only swept those of processes dead by then.
                remove_orphaned_shm()
                end_orphans()  # processes of stubs whose replica was killed
                self._report_once()
            except Exception as exc:  # the store restarts; keep serving meanwhile
                log.warning("state report failed: %s", exc)
            self._stop_reporting.wait(REPORT_PERIOD_S)

    def _report_once(self) -> None:
        if not self.server.started:
            return
        report = ReplicaReport(
            replica_id=self.replica_id,
            deployment=self.deployment_name,
            models=self.model_states(),
            metrics_text=self.metrics(),
            triton_version=self.triton_version,
        )
        intents: dict[str, ModelIntent] = ray_get(self._store.report.remote(report))
        for model, intent in intents.items():
            if model not in self.models or self._applied.get(model, -1) >= intent.generation:
                continue
            if intent.loaded:
                self._apply(
                    model,
                    intent.generation,
                    lambda m=model, i=intent: self._load(m, i.config, i.files),  # type: ignore[misc]
                )
            else:
                self._apply(model, intent.generation, lambda m=model: self._unload_quietly(m))  # type: ignore[misc]

    def _reload(self, model: str) -> None:
        """Load ``model`` again as it was last loaded (its stubs died; it is unloaded)."""
        self._shapes.clear()
        config, files = self._load_args.get(model, (None, None))
        self._load(model, config, files, raise_errors=True)

    def _unload_quietly(self, model: str) -> None:
        with contextlib.suppress(TritonError):
            self.server.unload(model)


def ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref, timeout=10)
