"""Shared state of the application: what operators asked to load, what replicas report.

A Serve handle reaches one replica, but a model's load/unload must apply to every
replica of its deployment, and health and metrics must cover them all. So the
router records the desired state here and replicas converge on it, and every
replica reports its models and metrics here on a short period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray

__all__ = ["ModelIntent", "ReplicaReport", "StateStore", "get_state_store"]

REPORT_PERIOD_S = 2.0
# A replica that has not reported for this long is gone (killed, scaled down).
REPORT_EXPIRY_S = 3 * REPORT_PERIOD_S


@dataclass(frozen=True)
class ModelIntent:
    """An operator's last word on a model: load it (with an optional config) or unload it."""

    loaded: bool
    config: str | None = None
    files: dict[str, bytes] | None = None
    generation: int = 0


@dataclass
class ReplicaReport:
    replica_id: str
    deployment: str
    # model name -> {"state": ..., "reason": ..., "versions": [...]}
    models: dict[str, dict[str, Any]]
    metrics_text: str
    triton_version: str = ""
    reported_at: float = field(default_factory=time.time)


class StateStore:
    """A small Ray actor; every method is cheap and never blocks on Triton."""

    def __init__(self) -> None:
        self._intents: dict[str, ModelIntent] = {}
        self._generation = 0
        self._reports: dict[str, ReplicaReport] = {}

    def set_intent(
        self,
        model: str,
        loaded: bool,
        config: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> int:
        self._generation += 1
        self._intents[model] = ModelIntent(loaded, config, files, self._generation)
        return self._generation

    def intents(self) -> dict[str, ModelIntent]:
        return dict(self._intents)

    def report(self, report: ReplicaReport) -> dict[str, ModelIntent]:
        """Record a replica's state; returns the intents so it can converge in one call."""
        report.reported_at = time.time()
        self._reports[report.replica_id] = report
        return dict(self._intents)

    def forget(self, replica_id: str) -> None:
        self._reports.pop(replica_id, None)

    def reports(self) -> list[ReplicaReport]:
        cutoff = time.time() - REPORT_EXPIRY_S
        for key in [k for k, r in self._reports.items() if r.reported_at < cutoff]:
            del self._reports[key]
        return list(self._reports.values())


def current_app_name() -> str:
    """The Serve application this replica belongs to (``"triton"`` outside Serve)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().app_name)
    except Exception:
        return "triton"


def get_state_store(app_name: str) -> Any:
    """The application's store (created on first use; lives as long as the Ray cluster's job)."""
    actor_cls = ray.remote(num_cpus=0, max_restarts=-1)(StateStore)
    return actor_cls.options(
        name=f"triton-serve-state-{app_name}",
        namespace="serve",
        get_if_exists=True,
        lifetime="detached",
    ).remote()
