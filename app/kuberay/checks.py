"""Rules of the KubeRay operator that its CRD schema does not express, and whether every
deployment of the Serve config fits a worker group.

Each check returns a list of problems (empty when fine), each naming the object and
field at fault, so ``python -m app.kuberay check`` and the tests report all of them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
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
from app.kuberay.operator import SUPPORTED_VERSIONS, serve_service, upgrade_types
from app.kuberay.placement import Replica, min_footprint_pods, worst_case_pods
from app.kuberay.render import BUILD_APP_IMPORT_PATH, PATCH_PATH, PROD_CONFIG, render_patch
from app.placement.packing import max_replicas

__all__ = [
    "GPU_MEMORY_GB_BY_POOL",
    "GPU_POOL_LABEL",
    "UpgradeCost",
    "check_disruption",
    "check_fit",
    "check_grpc_reachable",
    "check_head",
    "check_images",
    "check_ingress",
    "check_memory",
    "check_model_cache",
    "check_scale_from_zero",
    "check_service_monitor",
    "check_termination_grace",
    "placeholder_images",
    "report",
    "upgrade_cost",
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
# GPU groups select a label their node pool declares (docs/kubernetes.md), so a node autoscaler can
# create a node for a pod of a group at zero; its value names the GPU. GPU memory (GB, as
# app.placement counts it) of each value:
GPU_POOL_LABEL = "triton-serve.io/gpu-pool"
GPU_MEMORY_GB_BY_POOL = {
    "h100-80gb": 80.0,
    "h200-141gb": 141.0,
    "a100-80gb": 80.0,
    "l40s-48gb": 48.0,
}
# Labels that exist only once a node runs (GPU feature discovery, node feature
# discovery): a node autoscaler cannot know them for a node it has not created.
_RUNTIME_LABEL_PREFIXES = (
    "nvidia.com/gpu.",
    "nvidia.com/cuda.",
    "nvidia.com/mig.",
    "feature.node.kubernetes.io/",
)
_DO_NOT_DISRUPT = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PLACEHOLDER_DIGEST = re.compile(r"@sha256:0{56}[0-9a-f]{8}$")
# Serve's default graceful_shutdown_timeout_s (the router's); model deployments set theirs.
SERVE_DEFAULT_GRACEFUL_SHUTDOWN_S = 20.0
# /dev/shm beyond the object store: Ray's own on CPU pods; NCCL and the python backend's
# tensors on GPU pods.
SHM_RESERVE = {"cpu": 512 * 2**20, "gpu": 8 * 2**30}
_EPS = 1e-9
_GPU_KEYS = ("CPU", "GPU", "memory")


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


def check_upgrade_strategy(
    service: dict[str, Any], version: tuple[int, int] = SUPPORTED_VERSIONS[0]
) -> list[str]:
    """The upgrade type is one the operator's validation accepts at ``version`` (the
    minimum supported by default), with the options incremental upgrades need."""
    strategy = service["spec"].get("upgradeStrategy") or {}
    kind = strategy.get("type", "NewCluster")
    accepted = upgrade_types(version)
    if kind not in accepted:
        shown = ".".join(map(str, version))
        return [f"upgradeStrategy.type {kind!r}: KubeRay v{shown} accepts only {accepted}"]
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


def _replica_demand(options: dict[str, Any]) -> dict[str, float]:
    """What one replica takes on one pod: its whole bundle (STRICT_PACK or one bundle),
    else its actor's resources."""
    bundles = options.get("placement_group_bundles")
    if bundles:
        total: dict[str, float] = {}
        for bundle in bundles:
            for key, amount in bundle.items():
                total[key] = total.get(key, 0.0) + float(amount)
        return total
    actor = options.get("ray_actor_options", {})
    demand = {"CPU": float(actor.get("num_cpus", 1)), "GPU": float(actor.get("num_gpus") or 0)}
    if actor.get("memory"):
        demand["memory"] = float(actor["memory"])
    demand.update({k: float(v) for k, v in (actor.get("resources") or {}).items()})
    return demand


def _fits(demand: dict[str, float], node: dict[str, float]) -> bool:
    return all(amount <= node.get(key, 0.0) + _EPS for key, amount in demand.items() if amount)


def _gpu_memory_gb(group: RayNodeGroup) -> float | None:
    pool = group.spec["template"]["spec"].get("nodeSelector", {}).get(GPU_POOL_LABEL)
    return GPU_MEMORY_GB_BY_POOL.get(pool) if pool else None


def _router_options(app: dict[str, Any], cfg: AppConfig) -> dict[str, Any]:
    """The router's ray_actor_options as Serve runs them: the application's
    ``deployments`` override for "router" replaces the code's."""
    for override in app.get("deployments") or []:
        if override.get("name") == "router" and "ray_actor_options" in override:
            options: dict[str, Any] = override["ray_actor_options"]
            return options
    return {"num_cpus": cfg.router.num_cpus}


def _apps(serve_config: dict[str, Any]) -> list[tuple[dict[str, Any], AppConfig]]:
    return [
        (app, AppConfig.model_validate(app.get("args") or {}))
        for app in serve_config.get("applications", [])
        if app.get("import_path") == BUILD_APP_IMPORT_PATH
    ]


def _group_replicas(
    cluster_spec: dict[str, Any], serve_config: dict[str, Any]
) -> tuple[dict[str, list[Replica]], list[str]]:
    """The replicas (router included) each worker group hosts, and the replicas that fit
    no group. A replica goes to the first group whose pod holds it."""
    workers = [g for g in ray_groups(cluster_spec) if not g.is_head]
    nodes = {g.name: group_ray_resources(g) for g in workers}
    hosted: dict[str, list[Replica]] = {g.name: [] for g in workers}
    problems: list[str] = []
    for app, cfg in _apps(serve_config):
        router = _router_options(app, cfg)
        entries = [
            (
                "router",
                {"ray_actor_options": router},
                cfg.router.num_replicas,
                cfg.router.num_replicas,
            )
        ]
        for dep in cfg.deployments:
            low = dep.autoscaling.min_replicas if dep.autoscaling else (dep.num_replicas or 1)
            entries.append((dep.name, deployment_options(dep), low, max_replicas(dep)))
        for name, options, low, high in entries:
            demand = _replica_demand(options)
            host = next((n for n, node in nodes.items() if _fits(demand, node)), None)
            if host is None:
                problems.append(
                    f"deployment {name!r}: a replica needs {demand}, which fits no worker group "
                    f"({nodes})"
                )
                continue
            hosted[host].append(Replica(name, tuple(sorted(demand.items())), low, high))
    return hosted, problems


def check_fit(cluster_spec: dict[str, Any], serve_config: dict[str, Any]) -> list[str]:
    """Every replica (router included) fits one pod of a worker group; each group's
    maxReplicas holds its deployments between their min and max replicas wherever SPREAD
    puts them (``app.kuberay.placement``); the GPU memory plan fits the GPUs selected."""
    problems: list[str] = []
    workers = [g for g in ray_groups(cluster_spec) if not g.is_head]
    hosted, problems = _group_replicas(cluster_spec, serve_config)
    for group in workers:
        node = group_ray_resources(group)
        replicas = hosted[group.name]
        if not replicas:
            continue
        need = worst_case_pods(replicas, node)
        have = int(group.spec.get("maxReplicas", 0))
        if need > have:
            problems.append(
                f"group {group.name!r}: SPREAD placement of "
                f"{sorted(r.name for r in replicas)} can need {need} pods, maxReplicas is {have}"
            )
        for r in replicas:
            problems += _units_cover_replicas(r.name, dict(r.demand), node)
    for _, cfg in _apps(serve_config):
        if cfg.gpus is not None:
            problems += _memory_plan(cfg, workers)
    return problems


def _units_cover_replicas(name: str, demand: dict[str, float], node: dict[str, float]) -> list[str]:
    """A pod advertises enough units of a custom resource for every replica its GPUs hold
    (else the custom resource, not the GPU, would limit the packing)."""
    gpus = demand.get("GPU", 0.0)
    if gpus <= 0:
        return []
    per_pod = math.floor(node["GPU"] / gpus + _EPS)
    return [
        f"deployment {name!r}: a pod holds {per_pod} replicas but advertises "
        f"{node.get(key, 0):g} {key} (needs {per_pod * units:g})"
        for key, units in demand.items()
        if key not in _GPU_KEYS and per_pod * units > node.get(key, 0) + _EPS
    ]


def _memory_plan(cfg: AppConfig, workers: list[RayNodeGroup]) -> list[str]:
    from app.placement.packing import plan_packing

    assert cfg.gpus is not None
    problems = []
    for group in workers:
        if group_ray_resources(group)["GPU"] <= 0:
            continue
        memory = _gpu_memory_gb(group)
        if memory is None:
            problems.append(
                f"group {group.name!r}: select a GPU pool (nodeSelector {GPU_POOL_LABEL}: one "
                f"of {sorted(GPU_MEMORY_GB_BY_POOL)}) so that GPU memory is known"
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


@dataclass(frozen=True)
class UpgradeCost:
    """Pods and GPUs per group: at the min replicas (what an upgrade's new cluster needs
    on top of the old one) and at most (every deployment at max, SPREAD worst case)."""

    min_pods: dict[str, int]
    max_pods: dict[str, int]
    gpus_per_pod: dict[str, float]

    def gpus(self, pods: dict[str, int]) -> float:
        return sum(self.gpus_per_pod[g] * n for g, n in pods.items())

    def summary(self) -> str:
        lo, hi = self.min_pods, self.max_pods
        gpu_pods = sum(n for g, n in lo.items() if self.gpus_per_pod[g] > 0)
        return (
            f"minimum footprint: {self.gpus(lo):g} GPUs, pods {lo}; most (every deployment "
            f"at max, SPREAD worst case): {self.gpus(hi):g} GPUs, pods {hi}.\n"
            f"upgrade (image or cluster change): the new cluster starts every deployment at "
            f"its min replicas (Serve keeps >= 1 replica of each in both clusters, also "
            f"with incremental upgrades), so it needs {self.gpus(lo):g} more GPUs "
            f"({gpu_pods} GPU pods) while the old cluster serves: up to "
            f"{self.gpus(hi) + self.gpus(lo):g} GPUs at once."
        )


def upgrade_cost(cluster_spec: dict[str, Any], serve_config: dict[str, Any]) -> UpgradeCost:
    hosted, _ = _group_replicas(cluster_spec, serve_config)
    workers = [g for g in ray_groups(cluster_spec) if not g.is_head]
    low: dict[str, int] = {}
    high: dict[str, int] = {}
    per_pod: dict[str, float] = {}
    for group in workers:
        node = group_ray_resources(group)
        per_pod[group.name] = node["GPU"]
        replicas = hosted[group.name]
        low[group.name] = min_footprint_pods(replicas, node) if replicas else 0
        low[group.name] = max(low[group.name], int(group.spec.get("minReplicas", 0)))
        high[group.name] = min(
            worst_case_pods(replicas, node) if replicas else 0, int(group.spec["maxReplicas"])
        )
        high[group.name] = max(high[group.name], low[group.name])
    return UpgradeCost(low, high, per_pod)


def check_dockerfile_ray_version(cluster_spec: dict[str, Any], directory: Path) -> list[str]:
    """The image pins the Ray version that the RayCluster declares."""
    dockerfile = directory / "image" / "Dockerfile"
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    pinned = match.group(1) if match else None
    if pinned != cluster_spec.get("rayVersion"):
        return [f"rayVersion {cluster_spec.get('rayVersion')!r} but {dockerfile} pins {pinned!r}"]
    return []


def _pods(cluster_spec: dict[str, Any]) -> list[tuple[RayNodeGroup, dict[str, Any]]]:
    return [(g, g.spec["template"]["spec"]) for g in ray_groups(cluster_spec)]


def _is_gpu(group: RayNodeGroup) -> bool:
    return group_ray_resources(group)["GPU"] > 0


def check_head(service: dict[str, Any]) -> list[str]:
    """The head serves nothing (no CPU, GPU or custom resource for replicas, out of the
    Serve Service) and its state survives it (GCS fault tolerance, password by Secret)."""
    problems = []
    spec = service["spec"]
    head = ray_groups(spec["rayClusterConfig"])[0]
    resources = group_ray_resources(head)
    extra = {k: v for k, v in resources.items() if k not in _GPU_KEYS and v}
    if resources["CPU"] or resources["GPU"] or extra:
        problems.append(f"head: advertises {resources}; it must hold no replica (num-cpus 0)")
    if spec.get("excludeHeadPodFromServeSvc") is not True:
        problems.append("excludeHeadPodFromServeSvc: must be true (the head serves nothing)")
    ft = spec["rayClusterConfig"].get("gcsFaultToleranceOptions") or {}
    if not ft.get("redisAddress"):
        problems.append("gcsFaultToleranceOptions.redisAddress: GCS fault tolerance needs Redis")
    if "secretKeyRef" not in ((ft.get("redisPassword") or {}).get("valueFrom") or {}):
        problems.append("gcsFaultToleranceOptions.redisPassword: take it from a Secret")
    for deprecated in ("deploymentUnhealthySecondThreshold", "serviceUnhealthySecondThreshold"):
        if deprecated in spec:
            problems.append(f"{deprecated}: deprecated, KubeRay ignores it")
    return problems


def check_ingress(cluster_spec: dict[str, Any], serve_config: dict[str, Any]) -> list[str]:
    """Routers take a custom resource that only CPU pods advertise (never a GPU pod),
    at least 2 such pods, spread over nodes, and the router's num_cpus is prod.yaml's."""
    problems: list[str] = []
    groups = [g for g in ray_groups(cluster_spec) if not g.is_head]
    for app, cfg in _apps(serve_config):
        options = _router_options(app, cfg)
        if float(options.get("num_cpus", 1)) != cfg.router.num_cpus:
            problems.append(
                f"router: ray_actor_options.num_cpus {options.get('num_cpus')} differs from "
                f"router.num_cpus {cfg.router.num_cpus:g}"
            )
        custom = set(options.get("resources") or {})
        if not custom:
            problems.append("router: no custom resource pins it to the ingress pods")
            continue
        hosts = [g for g in groups if custom <= set(group_ray_resources(g))]
        for group in hosts:
            if _is_gpu(group):
                problems.append(f"group {group.name!r}: a GPU group advertises {sorted(custom)}")
                continue
            if int(group.spec.get("minReplicas", 0)) < 2:
                problems.append(f"group {group.name!r}: needs minReplicas >= 2 (router pods)")
            spread = group.spec["template"]["spec"].get("topologySpreadConstraints") or []
            if not any(
                c.get("topologyKey") == "kubernetes.io/hostname"
                and c.get("whenUnsatisfiable") == "DoNotSchedule"
                for c in spread
            ):
                problems.append(f"group {group.name!r}: spread its pods over nodes (hostname)")
        if not hosts:
            problems.append(f"router: no worker group advertises {sorted(custom)}")
    return problems


def check_scale_from_zero(cluster_spec: dict[str, Any]) -> list[str]:
    """GPU groups select their node pool's declared label, never a label that appears only
    once a node runs (a group at zero pods could never get a node)."""
    problems = []
    for group, pod in _pods(cluster_spec):
        if group.is_head:
            continue
        keys = set(pod.get("nodeSelector") or {})
        affinity = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ) or {}
        for term in affinity.get("nodeSelectorTerms", []):
            keys |= {e["key"] for e in term.get("matchExpressions", [])}
        runtime = sorted(k for k in keys if k.startswith(_RUNTIME_LABEL_PREFIXES))
        if runtime:
            problems.append(
                f"group {group.name!r}: selects {runtime}, labels a node gets only once it "
                f"runs; select {GPU_POOL_LABEL} (declared by the node pool)"
            )
        if _is_gpu(group) and GPU_POOL_LABEL not in (pod.get("nodeSelector") or {}):
            problems.append(f"group {group.name!r}: nodeSelector {GPU_POOL_LABEL} missing")
    return problems


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def check_disruption(objects: list[dict[str, Any]], cluster_spec: dict[str, Any]) -> list[str]:
    """Head and GPU pods: do-not-disrupt annotations and a PDB that allows no eviction."""
    problems = []
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for group in ray_groups(cluster_spec):
        if not (group.is_head or _is_gpu(group)):
            continue
        meta = group.spec["template"].get("metadata") or {}
        annotations = meta.get("annotations") or {}
        missing = {k: v for k, v in _DO_NOT_DISRUPT.items() if annotations.get(k) != v}
        if missing:
            problems.append(f"group {group.name!r}: annotations {missing} missing")
        labels = meta.get("labels") or {}
        if not any(
            p["spec"].get("maxUnavailable") == 0 and _selects(p["spec"]["selector"], labels)
            for p in pdbs
        ):
            problems.append(f"group {group.name!r}: no PodDisruptionBudget with maxUnavailable 0")
    return problems


def _graceful_s(serve_config: dict[str, Any]) -> float:
    longest = SERVE_DEFAULT_GRACEFUL_SHUTDOWN_S
    for app, cfg in _apps(serve_config):
        for dep in cfg.deployments:
            longest = max(longest, float(deployment_options(dep)["graceful_shutdown_timeout_s"]))
        for override in app.get("deployments") or []:
            longest = max(longest, float(override.get("graceful_shutdown_timeout_s", 0)))
        longest += float(cfg.triton.exit_timeout_s or 0)
    return longest


def check_termination_grace(
    cluster_spec: dict[str, Any], serve_config: dict[str, Any]
) -> list[str]:
    """Every pod outlives Serve's graceful shutdown of its replicas plus Triton's exit."""
    need = _graceful_s(serve_config)
    problems = []
    for group, pod in _pods(cluster_spec):
        grace = float(pod.get("terminationGracePeriodSeconds", 30))
        if grace <= need:
            problems.append(
                f"group {group.name!r}: terminationGracePeriodSeconds {grace:g} must exceed "
                f"{need:g} s (Serve's graceful shutdown plus Triton's exit timeout)"
            )
    return problems


def check_memory(cluster_spec: dict[str, Any]) -> list[str]:
    """Every group sets object-store-memory, and its /dev/shm holds it plus what else uses
    shm (else Ray's object store falls back to disk, or NCCL and the python backend
    starve); shm and object store fit the container's memory."""
    problems = []
    for group, pod in _pods(cluster_spec):
        params = group.spec.get("rayStartParams") or {}
        if "object-store-memory" not in params:
            problems.append(f"group {group.name!r}: rayStartParams.object-store-memory missing")
            continue
        store = float(params["object-store-memory"])
        shm = next(
            (
                parse_quantity((v.get("emptyDir") or {}).get("sizeLimit", "0"))
                for v in pod.get("volumes", [])
                for m in group.container.get("volumeMounts", [])
                if m["name"] == v["name"] and m["mountPath"] == "/dev/shm"
            ),
            0.0,
        )
        reserve = SHM_RESERVE["gpu" if _is_gpu(group) else "cpu"]
        if shm < store + reserve:
            problems.append(
                f"group {group.name!r}: /dev/shm {shm / 2**30:g} GiB must hold the object "
                f"store ({store / 2**30:g} GiB) plus {reserve / 2**30:g} GiB"
            )
        memory = group_ray_resources(group)["memory"]
        if memory and shm > memory / 2:
            problems.append(f"group {group.name!r}: /dev/shm takes over half of the pod's memory")
    return problems


def check_model_cache(cluster_spec: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """Serving pods read the cache read-only and never download (HF_HUB_OFFLINE=1, no
    token); a ReadWriteMany claim names its storage class."""
    problems = []
    for group, pod in _pods(cluster_spec):
        claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for mount in group.container.get("volumeMounts", []):
            if mount["name"] in claims and not mount.get("readOnly"):
                problems.append(f"group {group.name!r}: mount {mount['name']} read-only")
        if claims:
            env = {e["name"]: e for e in group.container.get("env", [])}
            if env.get("HF_HUB_OFFLINE", {}).get("value") != "1":
                problems.append(f"group {group.name!r}: set HF_HUB_OFFLINE=1")
            if "HF_TOKEN" in env:
                problems.append(f"group {group.name!r}: serving pods need no HF_TOKEN")
    for obj in objects:
        if obj["kind"] == "PersistentVolumeClaim":
            spec = obj["spec"]
            if "ReadWriteMany" in spec.get("accessModes", []) and not spec.get("storageClassName"):
                problems.append(
                    f"PersistentVolumeClaim {obj['metadata']['name']}: name a ReadWriteMany "
                    "storageClassName (the default class is ReadWriteOnce on most clusters)"
                )
    return problems


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = [
        (f"{where} container {c['name']}", c)
        for where, pod in pod_templates(objects)
        for c in pod.get("containers", []) + pod.get("initContainers", [])
    ]
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment", "DaemonSet"):
            pod = obj["spec"]["template"]["spec"]
            found += [
                (f"{obj['kind']} {obj['metadata']['name']} container {c['name']}", c)
                for c in pod.get("containers", []) + pod.get("initContainers", [])
            ]
    return found


def check_images(objects: list[dict[str, Any]]) -> list[str]:
    """Every image is pinned by digest, and one image has one digest everywhere."""
    problems = []
    digests: dict[str, set[str]] = {}
    for where, container in _containers(objects):
        image = container["image"]
        if not _DIGEST.search(image):
            problems.append(f"{where}: image {image} is not pinned by digest (@sha256:...)")
            continue
        name, digest = image.rsplit("@", 1)
        digests.setdefault(name, set()).add(digest)
    problems += [
        f"image {n}: several digests {sorted(d)}" for n, d in digests.items() if len(d) > 1
    ]
    return problems


def placeholder_images(objects: list[dict[str, Any]]) -> list[str]:
    """Images still pinned to a placeholder digest (56 zeros, then eight hex digits)."""
    return sorted(
        {c["image"] for _, c in _containers(objects) if PLACEHOLDER_DIGEST.search(c["image"])}
    )


def _services(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Service"]


def check_grpc_reachable(objects: list[dict[str, Any]], port: int = 8001) -> list[str]:
    """On every supported KubeRay version some Service carries ``port`` to pods that
    listen on it: KubeRay's Serve Service (v1.6+ ports serve-*) or one of ours."""
    service = find_object(objects, "RayService")
    groups = [g for g in ray_groups(service["spec"]["rayClusterConfig"]) if not g.is_head]
    listening = [
        {
            **(g.spec["template"].get("metadata") or {}).get("labels", {}),
            "ray.io/node-type": "worker",
        }
        for g in groups
        if any(p["containerPort"] == port for p in g.container.get("ports", []))
    ]
    ours = any(
        any(p.get("targetPort", p["port"]) == port for p in s["spec"].get("ports", []))
        and any(
            _selects({"matchLabels": s["spec"].get("selector") or {}}, lab) for lab in listening
        )
        for s in _services(objects)
    )
    problems = []
    for version in SUPPORTED_VERSIONS:
        built = serve_service(service, version, "triton-serve-xxxxx")
        if not ours and port not in built["ports"].values():
            shown = ".".join(map(str, version))
            problems.append(f"KubeRay v{shown}: no Service reaches port {port} (gRPC)")
    return problems


def check_service_monitor(monitors: list[dict[str, Any]], service: dict[str, Any]) -> list[str]:
    """Each ServiceMonitor selects the Serve Service KubeRay builds, on every supported
    version, and scrapes a port that Service has."""
    problems = []
    for monitor in (m for m in monitors if m["kind"] == "ServiceMonitor"):
        name = monitor["metadata"]["name"]
        for version in SUPPORTED_VERSIONS:
            built = serve_service(service, version, "triton-serve-xxxxx")
            shown = ".".join(map(str, version))
            if not _selects(monitor["spec"]["selector"], built["labels"]):
                problems.append(
                    f"ServiceMonitor {name}: does not select {built['name']} (v{shown})"
                )
                continue
            for endpoint in monitor["spec"]["endpoints"]:
                if endpoint.get("port") not in built["ports"]:
                    problems.append(
                        f"ServiceMonitor {name}: port {endpoint.get('port')!r} is not on "
                        f"{built['name']} (v{shown}: {sorted(built['ports'])})"
                    )
    return problems


@dataclass
class Report:
    """What ``python -m app.kuberay check`` prints: problems fail it, notes do not."""

    problems: list[str]
    notes: list[str]


def report(directory: Path = KUBERAY_DIR, serve_config_path: Path = PROD_CONFIG) -> Report:
    """Every check on the kustomization ``directory``, the upgrade cost and placeholders."""
    objects = load_kustomization(directory)
    service = find_object(objects, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    problems: list[str] = []
    if not PATCH_PATH.exists() or PATCH_PATH.read_text() != render_patch(serve_config_path):
        problems.append(f"{PATCH_PATH} is stale: run `python -m app.kuberay render`")
    serve_config = yaml.safe_load(service["spec"].get("serveConfigV2") or "{}")
    extra = _extra_objects(KUBERAY_DIR)
    monitors = load_kustomization(KUBERAY_DIR / "monitoring")
    problems += check_names(service)
    problems += check_ray_groups(cluster)
    problems += check_gpu_requests(objects + extra)
    problems += check_upgrade_strategy(service, _minimum_version(service))
    problems += check_fit(cluster, serve_config)
    problems += check_dockerfile_ray_version(cluster, KUBERAY_DIR)
    problems += check_head(service)
    problems += check_ingress(cluster, serve_config)
    problems += check_scale_from_zero(cluster)
    problems += check_disruption(objects, cluster)
    problems += check_termination_grace(cluster, serve_config)
    problems += check_memory(cluster)
    problems += check_model_cache(cluster, objects)
    problems += check_images(objects + extra)
    problems += check_grpc_reachable(objects)
    problems += check_service_monitor(monitors, service)
    notes = [upgrade_cost(cluster, serve_config).summary()]
    notes += [
        f"placeholder digest, pin the real one: {i}" for i in placeholder_images(objects + extra)
    ]
    return Report(problems, notes)


def _minimum_version(service: dict[str, Any]) -> tuple[int, int]:
    """The oldest supported version whose validation must accept ``service``: overlays
    that need newer operators say so by their upgrade type."""
    strategy = (service["spec"].get("upgradeStrategy") or {}).get("type")
    return (1, 5) if strategy == "NewClusterWithIncrementalUpgrade" else SUPPORTED_VERSIONS[0]


def check_manifests(
    directory: Path = KUBERAY_DIR, serve_config_path: Path = PROD_CONFIG
) -> list[str]:
    """Every check on ``directory`` (the rendered patch must be current)."""
    return report(directory, serve_config_path).problems


def _extra_objects(directory: Path) -> list[dict[str, Any]]:
    """Manifests applied on their own (the Jobs that fill the model cache)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.glob("jobs/*.yaml")):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def dumps(problems: list[str]) -> str:
    return json.dumps(problems, indent=1)
