"""Each engine's GPU memory share, derived from its deployment's ``num_gpus``.

Ray's fractional GPUs are bookkeeping: two vLLM engines that each claim 0.85 of one
GPU both get scheduled there, and the second fails to start. Giving every engine
``num_gpus x GPU memory`` (per GPU) makes Ray's bookkeeping true: any placement
Ray makes (fractions on one GPU sum to <= 1) then also fits in memory.

Per GPU of a replica, with G the GPU's memory and f the deployment's fraction of it
(``num_gpus``, or 1 for whole-GPU deployments):

- share S = f x G; weights W = ``weights_gb`` / GPUs of the replica; overhead O.
- The engine's KV cache gets at most K = S - W - O, and must get ``min_kv_cache_gb``.
- vLLM: ``gpu_memory_utilization`` = (S - O) / G, a fraction of the *total* memory
  that vLLM's weights, activations and KV cache must fit. Its start-up profiling does
  not measure its own process only: every allocation on the device since it started
  counts as its own, so a co-tenant loading meanwhile shrinks its KV cache or fails its
  free-memory check. Loads on one GPU therefore run one at a time
  (``app.placement.load_lock``); a co-tenant's inference growing during the profile
  still counts against it, which ``overhead_gb`` must absorb.
- TensorRT-LLM: ``kv_cache_free_gpu_mem_fraction`` is a fraction of the memory that is
  *free after the engine loaded*, which depends on what co-tenants allocated first.
  Assumption: it is computed against an otherwise empty GPU, k = K / (G - W - O), so
  the cache never exceeds K whatever the start order; when every co-tenant started
  first (free memory S - W - O), it gets k x K, which must still hold the minimum.
- fixed (no knob, e.g. an embedding model): W + O must fit in S.

Values are rounded down (4 decimals), so an engine never gets more than its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.config import AppConfig, ModelDeploymentConfig
from app.placement.config import Engine

__all__ = [
    "MAX_KV_FREE_FRACTION",
    "EngineShare",
    "PlacementError",
    "derive_share",
    "derive_shares",
    "gpus_per_replica",
]

# TensorRT-LLM allocates buffers (e.g. its LoRA cache) from what the KV cache leaves.
MAX_KV_FREE_FRACTION = 0.95


class PlacementError(ValueError):
    """A deployment's memory cannot fit its GPU share, or the packing cannot fit the GPUs."""


@dataclass(frozen=True)
class EngineShare:
    """One deployment's memory per GPU of a replica, and the engine setting that bounds it."""

    deployment: str
    engine: Engine
    model: str | None
    gpus: int  # GPUs of one replica (1 for a fraction)
    fraction: float  # of each of those GPUs
    gpu_memory_gb: float
    weights_gb: float  # per GPU
    overhead_gb: float
    min_kv_cache_gb: float
    setting: str | None  # the engine parameter that carries the share
    value: float | None
    kv_cache_gb: float  # the most KV cache it gets per GPU
    kv_cache_worst_gb: float  # what it gets when co-tenants started first

    @property
    def share_gb(self) -> float:
        return self.fraction * self.gpu_memory_gb

    def arithmetic(self) -> str:
        """How the share and the setting were computed, per GPU, in one line each."""
        g = _num(self.gpu_memory_gb)
        weights = f"weights {_gb(self.weights_gb)}"
        if self.gpus > 1:
            weights += f" ({_gb(self.weights_gb * self.gpus)} / {self.gpus} GPUs)"
        rest = (
            f"KV cache up to {_gb(self.kv_cache_gb)} (min {_gb(self.min_kv_cache_gb)})"
            if self.engine is not Engine.FIXED
            else f"headroom {_gb(self.kv_cache_gb)}"
        )
        lines = [
            f"share {_num(self.fraction)} x {g} GB = {_gb(self.share_gb)}; {weights} + "
            f"overhead {_gb(self.overhead_gb)}; {rest}"
        ]
        if self.engine is Engine.VLLM:
            lines.append(
                f"gpu_memory_utilization = ({_num(self.share_gb)} - "
                f"{_num(self.overhead_gb)}) / {g} = {self.value}"
            )
        elif self.engine is Engine.TENSORRTLLM:
            free = self.gpu_memory_gb - self.weights_gb - self.overhead_gb
            lines.append(
                f"kv_cache_free_gpu_mem_fraction = {_num(self.kv_cache_gb)} / ({g} - "
                f"{_num(self.weights_gb)} - {_num(self.overhead_gb)} = {_num(free)}) = "
                f"{self.value}; KV cache if co-tenants start first: "
                f"{self.value} x {_num(self.kv_cache_gb)} = {_gb(self.kv_cache_worst_gb)}"
            )
        return "\n".join(lines)


def gpus_per_replica(dep: ModelDeploymentConfig) -> tuple[int, float]:
    """(GPUs of one replica, fraction of each): 0.5 -> (1, 0.5); 2 -> (2, 1.0)."""
    if dep.num_gpus <= 1:
        return (1, dep.num_gpus)
    return (int(dep.num_gpus), 1.0)


def derive_share(dep: ModelDeploymentConfig, gpu_memory_gb: float, where: str) -> EngineShare:
    """The share of ``dep`` (which has ``gpu_memory``); ``where`` names it in errors
    (e.g. ``deployments[2]``). Raises ``PlacementError`` with the arithmetic."""
    mem = dep.gpu_memory
    if mem is None:
        raise PlacementError(f"{where}.gpu_memory: not set")
    if dep.num_gpus == 0:
        raise PlacementError(f"{where}.num_gpus: 0, but gpu_memory is set (it needs a GPU)")
    if mem.model is not None and mem.model not in dep.models:
        raise PlacementError(
            f"{where}.gpu_memory.model: {mem.model!r} is not one of the deployment's "
            f"models {dep.models}"
        )
    gpus, fraction = gpus_per_replica(dep)
    share = fraction * gpu_memory_gb
    weights = mem.weights_gb / gpus
    kv_max = share - weights - mem.overhead_gb
    need = weights + mem.min_kv_cache_gb + mem.overhead_gb
    if need > share + 1e-9:
        per_gpu = f" ({_gb(mem.weights_gb)} / {gpus} GPUs)" if gpus > 1 else ""
        raise PlacementError(
            f"{dep.name}: weights {_gb(weights)}{per_gpu} + min KV "
            f"{_gb(mem.min_kv_cache_gb)} + overhead {_gb(mem.overhead_gb)} = {_gb(need)} > "
            f"{_num(fraction)} x {_num(gpu_memory_gb)} GB = {_gb(share)} ({where}.gpu_memory)"
        )
    setting: str | None = None
    value: float | None = None
    kv_worst = kv_max
    if mem.engine is Engine.VLLM:
        setting = "gpu_memory_utilization"
        value = _floor4((share - mem.overhead_gb) / gpu_memory_gb)
        kv_max = value * gpu_memory_gb - weights
        kv_worst = kv_max
    elif mem.engine is Engine.TENSORRTLLM:
        free_alone = gpu_memory_gb - weights - mem.overhead_gb
        setting = "kv_cache_free_gpu_mem_fraction"
        value = min(MAX_KV_FREE_FRACTION, _floor4(kv_max / free_alone))
        kv_worst = value * kv_max
        if kv_worst + 1e-9 < mem.min_kv_cache_gb:
            raise PlacementError(
                f"{dep.name}: KV cache when co-tenants start first {_num(value)} x "
                f"{_num(kv_max)} GB = {_gb(kv_worst)} < min KV {_gb(mem.min_kv_cache_gb)} "
                f"({where}.gpu_memory; share {_num(fraction)} x {_num(gpu_memory_gb)} GB)"
            )
    return EngineShare(
        deployment=dep.name,
        engine=mem.engine,
        model=mem.model,
        gpus=gpus,
        fraction=fraction,
        gpu_memory_gb=gpu_memory_gb,
        weights_gb=weights,
        overhead_gb=mem.overhead_gb,
        min_kv_cache_gb=mem.min_kv_cache_gb,
        setting=setting,
        value=value,
        kv_cache_gb=kv_max,
        kv_cache_worst_gb=kv_worst,
    )


def derive_shares(cfg: AppConfig, gpu_memory_gb: float) -> dict[str, EngineShare]:
    """Deployment name -> share, for every deployment with ``gpu_memory``."""
    return {
        dep.name: derive_share(dep, gpu_memory_gb, f"deployments[{i}]")
        for i, dep in enumerate(cfg.deployments)
        if dep.gpu_memory is not None
    }


def _floor4(value: float) -> float:
    return math.floor(value * 10_000 + 1e-9) / 10_000


def _num(value: float) -> str:
    return f"{value:g}" if value == round(value, 4) else f"{value:.4g}"


def _gb(value: float) -> str:
    return f"{value:.2f} GB" if abs(value * 10 - round(value * 10)) > 1e-9 else f"{value:.1f} GB"
