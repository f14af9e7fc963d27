"""The replica's reporting thread: its models' states and Triton's metrics to the
state store, the operators' intents back, on a short period.

A thread, not a task: it must run whatever loop Serve constructs the replica on,
and loads block for seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.replica.control import ModelControl
from app.state_store import REPORT_PERIOD_S, ModelIntent, ReplicaReport
from app.triton.process_tree import end_orphans
from app.triton.server import remove_orphaned_shm

__all__ = ["Reporter", "ray_get"]

log = logging.getLogger(__name__)


class Reporter:
    """Reports ``control``'s models as replica ``replica_id`` and converges it on the
    intents the store answers with."""

    def __init__(
        self, control: ModelControl, store: Any, replica_id: str, triton_version: str
    ) -> None:
        self.control = control
        self.store = store
        self.replica_id = replica_id
        self.triton_version = triton_version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forever, name="state-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.control.stubs.check()
                # A replica that died after this one started (e.g. the one it
                # replaced, killed at the end of its graceful shutdown) left its
                # regions; start() only swept those of processes dead by then.
                remove_orphaned_shm()
                end_orphans()  # processes of stubs whose replica was killed
                self._report_once()
            except Exception as exc:  # the store restarts; keep serving meanwhile
                log.warning("state report failed: %s", exc)
            self._stop.wait(REPORT_PERIOD_S)

    def _report_once(self) -> None:
        control = self.control
        if not control.server.started:
            return
        metrics = control.server.metrics()
        residency = control.residency
        if residency is not None:
            residency.remeasure()
            residency.publish_if_changed()
            metrics += residency.render_metrics()
        report = ReplicaReport(
            replica_id=self.replica_id,
            deployment=control.deployment_name,
            models=control.model_states(),
            metrics_text=metrics,
            triton_version=self.triton_version,
        )
        intents: dict[str, ModelIntent] = ray_get(self.store.report.remote(report))
        control.apply_intents(intents)


def ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref, timeout=10)
