"""Rules of the KubeRay operator that its CRD schema does not express, and whether every
deployment of the Serve config fits a worker group.

Each check returns a list of problems (empty when fine), each naming the object and
field at fault, so ``python -m app.kuberay check`` and the tests report all of them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from app.builders import deployment_options
from app.config import AppConfig
from app.kuberay.manifests import (
    GPU_RESOURCE,
    KUBERAY_DIR,
    RayNodeGroup,
    find_object,
    group_ray_resources,
    load_kustomization,
    parse_quantity,
    ray_groups,
)
from app.kuberay.render import BUILD_APP_IMPORT_PATH, PATCH_PATH, PROD_CONFIG, render_patch

__all__ = [
    "GPU_MEMORY_GB_BY_PRODUCT",
    "check_fit",
    "check_gpu_requests",
    "check_manifests",
    "check_names",
    "check_ray_groups",
    "check_upgrade_strategy",
    "pod_templates",
]

# KubeRay: generated Services end in "-serve-svc" (63 - 10 = 53 for a RayCluster), and a
# RayService adds "-" and 5 characters to name its RayCluster: 47.
MAX_RAYSERVICE_NAME = 47
# KubeRay truncates pod name prefixes longer than this (names stay unique but unreadable).
MAX_POD_NAME_PREFIX = 50
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RAY_START_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
# GPU memory (GB, as app.placement counts it) of the products GPU groups may select
# with the GPU operator's `nvidia.com/gpu.product` node label.
GPU_MEMORY_GB_BY_PRODUCT = {
    "NVIDIA-H100-80GB-HBM3": 80.0,
    "NVIDIA-H200": 141.0,
    "NVIDIA-A100-SXM4-80GB": 80.0,
    "NVIDIA-L40S": 48.0,
}
_EPS = 1e-9


def check_names(service: dict[str, Any]) -> list[str]:
    """Names short and plain enough for every object KubeRay generates from them."""
    problems: list[str] = []
    name = service["metadata"]["name"]
    if len(name) > MAX_RAYSERVICE_NAME or not _DNS1035.match(name):
        problems.append(
            f"RayService {name!r}: name must be a DNS-1035 label of at most "
            f"{MAX_RAYSERVICE_NAME} characters (KubeRay derives cluster and Service names)"
        )
    cluster_name_len = len(name) + 6
    seen: set[str] = set()
    for group in ray_groups(service["spec"]["rayClusterConfig"]):
        if group.is_head:
            continue
        if group.name in seen:
            problems.append(f"worker group {group.name!r}: name used twice")
        seen.add(group.name)
        if not _DNS1123.match(group.name):
            problems.append(f"worker group {group.name!r}: not a DNS-1123 label")
        prefix = cluster_name_len + 1 + len(group.name) + len("-worker")
        if prefix > MAX_POD_NAME_PREFIX:
            problems.append(
                f"worker group {group.name!r}: pod names '<cluster>-{group.name}-worker' are "
                f"{prefix} characters, KubeRay truncates beyond {MAX_POD_NAME_PREFIX}"
            )
    serve_service = service["spec"].get("serveService", {}).get("metadata", {}).get("name")
    if serve_service is not None and (len(serve_service) > 63 or not _DNS1035.match(serve_service)):
        problems.append(f"serveService {serve_service!r}: not a DNS-1035 label")
    return problems


def check_ray_groups(cluster_spec: dict[str, Any]) -> list[str]:
    """Replica bounds, rayStartParams as strings, no resource declared twice."""
    problems: list[str] = []
    autoscaler_v2 = (cluster_spec.get("autoscalerOptions") or {}).get("version") == "v2"
    for group in ray_groups(cluster_spec):
        where = f"group {group.name!r}"
        params = group.spec.get("rayStartParams") or {}
        for key, value in params.items():
            if not isinstance(value, str):
                problems.append(f"{where}: rayStartParams.{key} must be a string, got {value!r}")
        if group.spec.get("resources") and any(p in params for p in _RAY_START_RESOURCE_PARAMS):
            problems.append(
                f"{where}: resources set both in rayStartParams and in the group's "
                "resources (KubeRay refuses the spec)"
            )
        problems += _gpu_params_match_container(group, params)
        if "labels" in params:
            problems.append(f"{where}: rayStartParams.labels is refused; use the labels field")
        restart = group.spec["template"]["spec"].get("restartPolicy")
        if autoscaler_v2 and restart not in (None, "Never"):
            problems.append(f"{where}: restartPolicy must be Never or unset with autoscaler v2")
        if group.is_head:
            continue
        low, high = group.spec.get("minReplicas", 0), group.spec.get("maxReplicas", 0)
        replicas = group.spec.get("replicas", low)
        if not low <= replicas <= high:
            problems.append(
                f"{where}: needs minReplicas ({low}) <= replicas ({replicas}) "
                f"<= maxReplicas ({high})"
            )
    return problems


def _gpu_params_match_container(group: RayNodeGroup, params: dict[str, Any]) -> list[str]:
    limits = group.container.get("resources", {}).get("limits", {})
    if "num-gpus" not in params or GPU_RESOURCE not in limits:
        return []
    declared, attached = float(params["num-gpus"]), parse_quantity(limits[GPU_RESOURCE])
    if declared != attached:
        return [
            f"group {group.name!r}: rayStartParams.num-gpus ({declared:g}) differs from the "
            f"container's {GPU_RESOURCE} limit ({attached:g})"
        ]
    return []


def pod_templates(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod the objects create: Ray groups, Jobs."""
    found: list[tuple[str, dict[str, Any]]] = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("RayService", "RayCluster"):
            spec = obj["spec"]["rayClusterConfig"] if kind == "RayService" else obj["spec"]
            for group in ray_groups(spec):
                found.append((f"{kind} {name} group {group.name}", group.spec["template"]["spec"]))
        elif kind == "Job":
            found.append((f"Job {name}", obj["spec"]["template"]["spec"]))
    return found


def check_gpu_requests(objects: list[dict[str, Any]]) -> list[str]:
    """GPUs are not overcommitted: a container's GPU request equals its limit."""
    problems: list[str] = []
    for where, pod in pod_templates(objects):
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            resources = container.get("resources", {})
            request = resources.get("requests", {}).get(GPU_RESOURCE)
            limit = resources.get("limits", {}).get(GPU_RESOURCE)
            if request is None and limit is None:
                continue
            if request is None or limit is None or parse_quantity(request) != parse_quantity(limit):
                problems.append(
                    f"{where} container {container['name']}: {GPU_RESOURCE} request "
                    f"({request}) must equal its limit ({limit})"
                )
    return problems


def check_upgrade_strategy(service: dict[str, Any]) -> list[str]:
    strategy = service["spec"].get("upgradeStrategy") or {}
    kind = strategy.get("type", "NewCluster")
    if kind not in UPGRADE_TYPES:
        return [f"upgradeStrategy.type {kind!r}: not one of {UPGRADE_TYPES}"]
    if kind != "NewClusterWithIncrementalUpgrade":
        return []
    problems = []
    if not service["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling"):
        problems.append("upgradeStrategy: incremental upgrades need enableInTreeAutoscaling")
    options = strategy.get("clusterUpgradeOptions") or {}
    if not options.get("gatewayClassName"):
        problems.append("upgradeStrategy.clusterUpgradeOptions.gatewayClassName: required")
    if not 0 <= options.get("stepSizePercent", -1) <= 100:
        problems.append("upgradeStrategy.clusterUpgradeOptions.stepSizePercent: 0..100")
    if options.get("intervalSeconds", 0) <= 0:
        problems.append("upgradeStrategy.clusterUpgradeOptions.intervalSeconds: > 0")
    if not 0 <= options.get("maxSurgePercent", 100) <= 100:
        problems.append("upgradeStrategy.clusterUpgradeOptions.maxSurgePercent: 0..100")
    return problems


def _replica_demands(options: dict[str, Any]) -> tuple[list[dict[str, float]], bool]:
    """(bundles, strict_pack) of one replica: its placement group bundles, or one bundle
    of its actor's resources."""
    bundles = options.get("placement_group_bundles")
    if bundles:
        strategy = options.get("placement_group_strategy", "PACK")
        return [{k: float(v) for k, v in b.items()} for b in bundles], strategy == "STRICT_PACK"
    actor = options.get("ray_actor_options", {})
    demand = {"CPU": float(actor.get("num_cpus", 1)), "GPU": float(actor.get("num_gpus", 0))}
    if actor.get("memory"):
        demand["memory"] = float(actor["memory"])
    demand.update({k: float(v) for k, v in (actor.get("resources") or {}).items()})
    return [demand], True


def _fits(demand: dict[str, float], node: dict[str, float]) -> bool:
    return all(amount <= node.get(key, 0.0) + _EPS for key, amount in demand.items() if amount)


def _total(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, amount in bundle.items():
            total[key] = total.get(key, 0.0) + amount
    return total


def _gpu_memory_gb(group: RayNodeGroup) -> float | None:
    product = group.spec["template"]["spec"].get("nodeSelector", {}).get("nvidia.com/gpu.product")
    return GPU_MEMORY_GB_BY_PRODUCT.get(product) if product else None


def check_fit(cluster_spec: dict[str, Any], serve_config: dict[str, Any]) -> list[str]:
    """Every replica (router included) fits one pod of a worker group, every worker group
    holds its deployments at their max replicas, and the packing plan of GPU memory fits
    the GPUs the groups select."""
    from app.placement.packing import max_replicas, plan_packing

    problems: list[str] = []
    workers = [g for g in ray_groups(cluster_spec) if not g.is_head]
    nodes = {g.name: group_ray_resources(g) for g in workers}
    for app in serve_config.get("applications", []):
        if app.get("import_path") != BUILD_APP_IMPORT_PATH:
            continue
        cfg = AppConfig.model_validate(app.get("args") or {})
        router = {"CPU": cfg.router.num_cpus}
        if not any(_fits(router, node) for node in nodes.values()):
            problems.append(f"router: {router} fits no worker group")
        gpus_needed: dict[str, float] = {}
        for dep in cfg.deployments:
            bundles, strict = _replica_demands(deployment_options(dep))
            whole = [_total(bundles)] if strict else bundles
            hosts = [name for name, node in nodes.items() if all(_fits(b, node) for b in whole)]
            if not hosts:
                problems.append(
                    f"deployment {dep.name!r}: a replica needs {whole}, which fits no worker "
                    f"group ({nodes})"
                )
                continue
            host = hosts[0]
            gpus_needed[host] = gpus_needed.get(host, 0.0) + dep.num_gpus * max_replicas(dep)
            problems += _units_cover_replicas(dep.name, dep.resources, dep.num_gpus, nodes[host])
        for group in workers:
            need = gpus_needed.get(group.name, 0.0)
            have = nodes[group.name]["GPU"] * int(group.spec.get("maxReplicas", 0))
            if need > have + _EPS:
                problems.append(
                    f"group {group.name!r}: its deployments need {need:g} GPUs at their max "
                    f"replicas, maxReplicas gives {have:g}"
                )
        if cfg.gpus is not None:
            problems += _memory_plan(cfg, workers, plan_packing)
    return problems


def _units_cover_replicas(
    name: str, wanted: dict[str, float], num_gpus: float, node: dict[str, float]
) -> list[str]:
    """A pod advertises enough units of a custom resource for every replica its GPUs hold
    (else the custom resource, not the GPU, would limit the packing)."""
    if num_gpus <= 0:
        return []
    per_pod = math.floor(node["GPU"] / num_gpus + _EPS)
    return [
        f"deployment {name!r}: a pod holds {per_pod} replicas but advertises "
        f"{node.get(key, 0):g} {key} (needs {per_pod * units:g})"
        for key, units in wanted.items()
        if per_pod * units > node.get(key, 0) + _EPS
    ]


def _memory_plan(cfg: AppConfig, workers: list[RayNodeGroup], plan_packing: Any) -> list[str]:
    assert cfg.gpus is not None
    problems = []
    for group in workers:
        if group_ray_resources(group)["GPU"] <= 0:
            continue
        memory = _gpu_memory_gb(group)
        if memory is None:
            problems.append(
                f"group {group.name!r}: select a GPU product (nodeSelector "
                "nvidia.com/gpu.product) so that GPU memory is known"
            )
        elif cfg.gpus.memory_gb > memory + _EPS:
            problems.append(
                f"group {group.name!r}: gpus.memory_gb {cfg.gpus.memory_gb:g} of the Serve "
                f"config exceeds the {memory:g} GB of the selected GPU"
            )
    total = sum(group_ray_resources(g)["GPU"] * int(g.spec.get("maxReplicas", 0)) for g in workers)
    try:
        plan = plan_packing(cfg, cfg.gpus.memory_gb, int(total))
        plan.check()
    except Exception as exc:
        problems.append(f"packing plan on {total:g} GPUs of the worker groups: {exc}")
    return problems


def check_dockerfile_ray_version(cluster_spec: dict[str, Any], directory: Path) -> list[str]:
    """The image pins the Ray version that the RayCluster declares."""
    dockerfile = directory / "image" / "Dockerfile"
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    pinned = match.group(1) if match else None
    if pinned != cluster_spec.get("rayVersion"):
        return [f"rayVersion {cluster_spec.get('rayVersion')!r} but {dockerfile} pins {pinned!r}"]
    return []


def check_manifests(
    directory: Path = KUBERAY_DIR, serve_config_path: Path = PROD_CONFIG
) -> list[str]:
    """Every check on ``directory`` (the rendered patch must be current)."""
    objects = load_kustomization(directory)
    service = find_object(objects, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    problems: list[str] = []
    patch = directory / PATCH_PATH.name
    if not patch.exists() or patch.read_text() != render_patch(serve_config_path):
        problems.append(f"{patch} is stale: run `python -m app.kuberay render`")
    serve_config = yaml.safe_load(service["spec"].get("serveConfigV2") or "{}")
    problems += check_names(service)
    problems += check_ray_groups(cluster)
    problems += check_gpu_requests(objects + _extra_objects(directory))
    problems += check_upgrade_strategy(service)
    problems += check_fit(cluster, serve_config)
    problems += check_dockerfile_ray_version(cluster, directory)
    return problems


def _extra_objects(directory: Path) -> list[dict[str, Any]]:
    """Manifests applied on their own (the engine build Job)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.glob("jobs/*.yaml")):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def dumps(problems: list[str]) -> str:
    return json.dumps(problems, indent=1)
