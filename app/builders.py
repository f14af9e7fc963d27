"""``build_app(args)``: the only place that wires deployments together.

``serve run serve_configs/local.yaml`` calls it with the config's ``args``; an
invalid config fails here, naming the field, before any replica starts.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from app.config import AppConfig, ModelDeploymentConfig, check_paths, effective_triton_options
from app.placement.feasibility import check_cluster_gpus
from app.placement.packing import check_placement
from app.residency.pools import resolve_pools

__all__ = ["REPLICA_ENV", "SHUTDOWN_MARGIN_S", "build_app", "deployment_options"]

REPLICA_ENV = {
    # Ray would otherwise kill Triton's python-backend stubs before the replica
    # stops Triton, leaving shared memory behind.
    "RAY_kill_child_processes_on_worker_exit": "0",
    # Triton forks its backend stubs from its own threads; gRPC's fork handlers
    # (Ray's gRPC runs in the same process) abort the process when that happens.
    "GRPC_ENABLE_FORK_SUPPORT": "0",
}


# Beyond Triton's exit_timeout_s: unloading models, ending stub processes left behind
# (SIGTERM, 3 s, SIGKILL) and freeing the server. Serve kills the replica after
# graceful_shutdown_timeout_s, which would cut Triton's own wait short.
SHUTDOWN_MARGIN_S = 15
# How often pool replicas report their room and measured sizes to the routers.
POOL_ROUTING_STATS_PERIOD_S = 2.0


def deployment_options(dep: ModelDeploymentConfig, exit_timeout_s: int = 30) -> dict[str, Any]:
    """Serve options of a model deployment (replicas, resources, queue limits);
    ``exit_timeout_s`` is its Triton's, which the graceful shutdown must outlast."""
    actor_options: dict[str, Any] = {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus}
    if dep.resources:
        actor_options["resources"] = dict(dep.resources)
    actor_options["runtime_env"] = {"env_vars": REPLICA_ENV}
    options: dict[str, Any] = {
        "name": dep.name,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": dep.max_ongoing_requests,
        "max_queued_requests": dep.max_queued_requests,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": max(30, exit_timeout_s + SHUTDOWN_MARGIN_S),
    }
    if dep.num_gpus > 1:
        # Tensor parallelism in one replica: all its GPUs on one node. The replica
        # actor takes the (only) bundle, so the bundle holds all its resources; vLLM's
        # workers inherit the replica's CUDA_VISIBLE_DEVICES.
        options["placement_group_bundles"] = [
            {"CPU": dep.num_cpus, "GPU": dep.num_gpus, **dep.resources}
        ]
        options["placement_group_strategy"] = "STRICT_PACK"
    if dep.residency is not None:
        # Pool calls go where the model is held, spread by queue, never to a replica
        # whose budget is all pinned (``app.residency.routing``).
        options["request_router_config"] = {
            "request_router_class": "app.router.pool_router:PoolRequestRouter",
            "request_router_kwargs": {"spread_queue_len": dep.residency.spread_queue_len},
            "request_routing_stats_period_s": POOL_ROUTING_STATS_PERIOD_S,
        }
    if dep.autoscaling is not None:
        a = dep.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "initial_replicas": a.initial_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    else:
        options["num_replicas"] = dep.num_replicas if dep.num_replicas is not None else 1
    return options


def build_app(args: dict[str, Any]) -> Application:
    """Validate ``args`` as an ``AppConfig`` and return the application (no side effects)."""
    from app.replica.deployment import ModelReplica
    from app.router.deployment import Router

    try:
        cfg = AppConfig.model_validate(args)
    except ValidationError as exc:
        raise ValueError(f"invalid application config: {exc}") from exc
    check_paths(cfg)
    cfg = resolve_pools(cfg)  # replicas and the router get model names, not globs
    check_placement(cfg)
    if cfg.router.fixed_cluster and ray.is_initialized():  # built on the cluster: ask it
        cfg = check_cluster_gpus(cfg)
    # The traffic section also travels as the router's user_config: Serve applies a new
    # user_config to running routers (reconfigure), so new weights replace no replica.
    # The routers' own copy is what they fall back to; model replicas get none.
    traffic = {name: route.model_dump(mode="json") for name, route in cfg.traffic.items()}
    cfg = cfg.model_copy(
        update={"model_repository": os.path.abspath(cfg.model_repository), "traffic": {}}
    )
    plain = cfg.model_dump(mode="json")
    model_deployment: Any = serve.deployment(ModelReplica)
    router_deployment: Any = serve.deployment(Router)
    handles = {
        dep.name: model_deployment.options(
            **deployment_options(dep, effective_triton_options(cfg, dep.name).exit_timeout_s)
        ).bind(plain, dep.name)
        for dep in cfg.deployments
    }
    router = router_deployment.options(
        name="router",
        num_replicas=cfg.router.num_replicas,
        max_ongoing_requests=cfg.router.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.router.num_cpus},
        user_config={"traffic": traffic},
    )
    application: Application = router.bind({**plain, "traffic": traffic}, handles)
    return application
