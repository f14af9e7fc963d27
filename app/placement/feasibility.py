"""Can a replica of a deployment ever be placed on the cluster as it is?

Serve keeps an unplaceable replica PENDING forever and the router holds its requests
until ``request_timeout_s`` (a 408 that hides the cause). A replica that fits no alive
node's *total* resources (e.g. a GPU deployment on a CPU-only cluster, or a custom
resource no node advertises) can never start, so the router answers 503 at once naming
what is missing. Only totals are compared: a replica that fits a node whose resources
are taken by others, or a deployment scaled to zero, is placeable and still waits.
Only with ``router.fixed_cluster``: where an autoscaler can add nodes (KubeRay worker
groups scaled to zero), waiting for one is right.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from app.config import AppConfig, ModelDeploymentConfig

__all__ = [
    "NODES_CACHE_S",
    "check_cluster_gpus",
    "missing_resources",
    "replica_demand",
    "unplaceable",
]

NODES_CACHE_S = 10.0
_log = logging.getLogger(__name__)
_EPS = 1e-9

_nodes: list[dict[str, float]] = []
_nodes_at = -NODES_CACHE_S


def replica_demand(dep: ModelDeploymentConfig) -> dict[str, float]:
    """Resources one replica needs on one node (a multi-GPU replica is one
    STRICT_PACK bundle, so all of it on one node too)."""
    demand = {"CPU": dep.num_cpus, "GPU": dep.num_gpus, **dep.resources}
    return {k: float(v) for k, v in demand.items() if v > 0}


def missing_resources(
    demand: Mapping[str, float], nodes: list[dict[str, float]]
) -> dict[str, float] | None:
    """None if some node's totals hold ``demand``; else, of the node that comes closest
    (fewest resources short), what it lacks: resource -> amount short."""
    best: dict[str, float] | None = None
    for node in nodes or [{}]:
        short = {
            k: round(v - node.get(k, 0.0), 4)
            for k, v in demand.items()
            if node.get(k, 0.0) + _EPS < v
        }
        if not short:
            return None
        if best is None or len(short) < len(best):
            best = short
    return best


def _alive_nodes() -> list[dict[str, float]]:
    import ray

    listed: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [
        {k: float(v) for k, v in n.get("Resources", {}).items()} for n in listed if n.get("Alive")
    ]


async def unplaceable(
    cfg: AppConfig,
    deployment: str,
    nodes: Callable[[], list[dict[str, float]]] = _alive_nodes,
) -> str | None:
    """Why no replica of ``deployment`` can ever be placed now, or None. The node list
    is read at most every ``NODES_CACHE_S`` (a GCS call, off the event loop)."""
    global _nodes, _nodes_at
    dep = next((d for d in cfg.deployments if d.name == deployment), None)
    if dep is None or not cfg.router.fixed_cluster:  # an autoscaler may add the node
        return None
    if time.monotonic() - _nodes_at > NODES_CACHE_S:
        try:
            _nodes = await asyncio.to_thread(nodes)
        except Exception:  # no answer: say nothing rather than refuse
            return None
        _nodes_at = time.monotonic()
    demand = replica_demand(dep)
    short = missing_resources(demand, _nodes)
    if short is None:
        return None
    lacking = ", ".join(f"{k} {v:g}" for k, v in sorted(short.items()))
    return (
        f"deployment '{dep.name}' cannot be placed: a replica needs {demand} on one node "
        f"and no node of the Ray cluster has it (short by {lacking}); add such a node "
        f"(e.g. `ray start --num-gpus N`, or a worker group advertising the resource)"
    )


def check_cluster_gpus(
    cfg: AppConfig, nodes: Callable[[], list[dict[str, float]]] = _alive_nodes
) -> AppConfig:
    """The config to build on this cluster. A GPU app on a Ray cluster with no GPU at
    all (a plain ``ray start``, or ``serve run`` on a laptop) would wait forever for its
    replicas: with ``router.gpus_optional`` its deployments run without their GPU shares
    (their models must run on CPU), otherwise the build fails saying what to do. The
    config is returned unchanged where the cluster has a GPU or Ray cannot tell."""
    wanting = [d.name for d in cfg.deployments if d.num_gpus > 0]
    if not wanting:
        return cfg
    try:
        found = nodes()
    except Exception:
        return cfg
    if not found or any(n.get("GPU", 0.0) > 0 for n in found):
        return cfg
    if cfg.router.gpus_optional:
        _log.warning(
            "this Ray cluster has no GPU: deployments %s run without their GPU shares "
            "(router.gpus_optional); `make serve` declares logical GPUs to show packing",
            wanting,
        )
        cpu_only = [d.model_copy(update={"num_gpus": 0.0}) for d in cfg.deployments]
        return cfg.model_copy(update={"deployments": cpu_only})
    raise ValueError(
        f"deployments {wanting} need GPUs but this Ray cluster has none. On a CPU "
        "machine run `make serve` (a private cluster with 2 logical GPUs), start "
        "Ray with `ray start --head --num-gpus 2` before `serve run`, or set "
        "router.gpus_optional: true if every model runs on CPU"
    )
