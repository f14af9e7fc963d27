"""A packing plan: every replica of every GPU deployment onto GPUs, first-fit decreasing.

Replicas are counted at their most (``autoscaling.max_replicas`` or ``num_replicas``),
so the plan says whether the cluster holds every deployment at its peak. Whole-GPU
replicas (``num_gpus`` >= 1) go first, onto GPUs nobody uses yet, then fractions from
the largest down, each onto the lowest-numbered GPU with room. A GPU only hosts
deployments that ask for the same custom Ray resources (or none), because those name
worker groups with different images (vLLM and TensorRT-LLM live in different ones).

Ray places replicas itself and may choose other GPUs; since every engine's memory
follows its fraction (``app.placement.shares``), any placement Ray makes fits in
memory. The plan shows that one exists and how many GPUs it takes. It assumes the
GPUs of a multi-GPU replica are on one node (STRICT_PACK makes Ray ensure that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import AppConfig, ModelDeploymentConfig
from app.placement.shares import EngineShare, PlacementError, derive_shares, gpus_per_replica

__all__ = [
    "GpuPlan",
    "PackingPlan",
    "ReplicaSlot",
    "check_placement",
    "max_replicas",
    "plan_packing",
]

_EPS = 1e-9


def max_replicas(dep: ModelDeploymentConfig) -> int:
    """The most replicas the deployment runs."""
    if dep.autoscaling is not None:
        return dep.autoscaling.max_replicas
    return dep.num_replicas if dep.num_replicas is not None else 1


@dataclass(frozen=True)
class ReplicaSlot:
    """One replica's part of one GPU."""

    deployment: str
    replica: int  # 1-based
    fraction: float
    gpus: tuple[int, ...]  # all GPUs of the replica (several with tensor parallelism)


@dataclass
class GpuPlan:
    index: int
    group: tuple[str, ...] | None = None  # custom resources of its deployments
    slots: list[ReplicaSlot] = field(default_factory=list)

    @property
    def used(self) -> float:
        return sum(s.fraction for s in self.slots)

    def accepts(self, fraction: float, group: tuple[str, ...]) -> bool:
        same_group = not group or self.group is None or self.group == group
        return same_group and self.used + fraction <= 1 + _EPS


@dataclass(frozen=True)
class PackingPlan:
    gpu_memory_gb: float
    gpu_count: int | None  # the GPUs available; None: as many as needed
    gpus: tuple[GpuPlan, ...]  # the GPUs used, in index order
    shares: dict[str, EngineShare]

    @property
    def gpus_needed(self) -> int:
        return len(self.gpus)

    @property
    def fits(self) -> bool:
        return self.gpu_count is None or self.gpus_needed <= self.gpu_count

    def check(self) -> None:
        """Raise ``PlacementError`` saying how many GPUs the plan needs if it does not fit."""
        if self.fits:
            return
        over = [
            f"{s.deployment}#{s.replica}"
            for gpu in self.gpus[self.gpu_count or 0 :]
            for s in gpu.slots
        ]
        raise PlacementError(
            f"gpus: the deployments at their max replicas need {self.gpus_needed} GPUs of "
            f"{self.gpu_memory_gb:g} GB, the config has {self.gpu_count}; left over: "
            + ", ".join(dict.fromkeys(over))
        )


def plan_packing(cfg: AppConfig, gpu_memory_gb: float, gpu_count: int | None) -> PackingPlan:
    """First-fit-decreasing plan; raises ``PlacementError`` if a share cannot fit its
    GPU (``plan.fits`` / ``plan.check()`` say whether the plan fits ``gpu_count``)."""
    shares = derive_shares(cfg, gpu_memory_gb)
    items: list[tuple[int, float, str, int, tuple[str, ...]]] = []
    for dep in cfg.deployments:
        if dep.num_gpus <= 0:
            continue
        whole, fraction = gpus_per_replica(dep)
        group = tuple(sorted(dep.resources))
        for replica in range(1, max_replicas(dep) + 1):
            items.append((whole, fraction, dep.name, replica, group))
    # Largest first: more whole GPUs, then larger fractions; names keep it deterministic.
    items.sort(key=lambda item: (-item[0], -item[1], item[2], item[3]))
    gpus: list[GpuPlan] = []
    for whole, fraction, name, replica, group in items:
        if fraction == 1.0:
            chosen = [g for g in gpus if not g.slots][:whole]
            while len(chosen) < whole:
                gpus.append(GpuPlan(len(gpus)))
                chosen.append(gpus[-1])
        else:
            found = next((g for g in gpus if g.accepts(fraction, group)), None)
            if found is None:
                gpus.append(GpuPlan(len(gpus)))
                found = gpus[-1]
            chosen = [found]
        indexes = tuple(g.index for g in chosen)
        for gpu in chosen:
            gpu.slots.append(ReplicaSlot(name, replica, fraction, indexes))
            if group:
                gpu.group = group
    return PackingPlan(gpu_memory_gb, gpu_count, tuple(gpus), shares)


def check_placement(cfg: AppConfig) -> PackingPlan | None:
    """What ``build_app`` checks: with ``gpus`` set, every engine's share fits its GPU
    and (with ``gpus.count``) the packing fits; raises ``PlacementError`` if not."""
    if cfg.gpus is None:
        for i, dep in enumerate(cfg.deployments):
            if dep.gpu_memory is not None:
                raise PlacementError(
                    f"gpus: required because deployments[{i}].gpu_memory is set "
                    "(its memory share is derived from gpus.memory_gb)"
                )
        return None
    plan = plan_packing(cfg, cfg.gpus.memory_gb, cfg.gpus.count)
    plan.check()
    return plan
