"""Config of a model pool's residency, and the glob syntax of pool members.

Pure (no filesystem access): globs are resolved against the repository by
``app.residency.pools`` where the application is built.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_SPREAD_QUEUE_LEN",
    "GLOB_CHARS",
    "NOT_LOADED_REASON",
    "ResidencyConfig",
    "is_glob",
]

# The reason a pool model that is not resident reports (router and replicas alike).
NOT_LOADED_REASON = "not loaded: loads on first request"

GB = 1 << 30
DEFAULT_SPREAD_QUEUE_LEN = 4
# fnmatch's wildcards: ``*``, ``?`` and ``[...]`` sets.
GLOB_CHARS = frozenset("*?[")


def is_glob(name: str) -> bool:
    """Whether an entry of a deployment's ``models`` is a pattern, not a model name."""
    return any(c in GLOB_CHARS for c in name)


class ResidencyConfig(BaseModel):
    """A deployment whose models load on first request and share a memory budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_budget_gb: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="Memory each replica may hold in resident models (GB of 2^30 bytes), "
        "as measured: GPU memory a load added (NVML) on GPU deployments, else the "
        "resident memory (RSS) of the model's python-backend stubs plus the replica's "
        "own growth during the load.",
    )
    pinned: list[str] = Field(
        default_factory=list,
        description="Models (names, not globs) loaded at start and never evicted; "
        "one of the deployment's models each.",
    )
    min_resident_s: float = Field(
        default=30.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a freshly loaded model stays resident before it may be "
        "evicted (no thrash: a load waits for room rather than evicting it sooner).",
    )

    spread_queue_len: int = Field(
        default=DEFAULT_SPREAD_QUEUE_LEN,
        ge=1,
        description="Requests queued at every replica that holds a model before a "
        "request for it may go to a replica that does not (which then loads it): "
        "how a hot model spreads.",
    )

    @property
    def budget_bytes(self) -> int:
        return int(self.memory_budget_gb * GB)
