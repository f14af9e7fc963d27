"""What the KubeRay operator makes of a RayService, per operator version.

Written from the operator's sources (``common/service.go``, ``utils/validation.go``
and ``rayservice_controller.go`` at v1.4.2, v1.5.1, v1.6.0 and v1.7.0), so that tests
can ask "which Service, with which ports, does version X build?" without a cluster.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SUPPORTED_VERSIONS",
    "Version",
    "incremental_upgrade",
    "serve_service",
    "upgrade_types",
]

Version = tuple[int, int]
# Oldest first; the first is the minimum this repository supports (docs/kubernetes.md).
SUPPORTED_VERSIONS: tuple[Version, ...] = ((1, 4), (1, 5), (1, 6), (1, 7))
INCREMENTAL = "NewClusterWithIncrementalUpgrade"


def upgrade_types(version: Version) -> tuple[str, ...]:
    """``upgradeStrategy.type`` values the operator's validation accepts."""
    if version < (1, 5):
        return ("NewCluster", "None")
    return (INCREMENTAL, "NewCluster", "None")


def incremental_upgrade(service: dict[str, Any], version: Version, gate_on: bool) -> bool:
    """Whether the operator runs incremental upgrades for ``service``: the type, on a
    version that knows it, with the RayServiceIncrementalUpgrade gate on (alpha and off
    by default on v1.5-v1.6, beta and on by default from v1.7)."""
    strategy = service["spec"].get("upgradeStrategy") or {}
    return strategy.get("type") == INCREMENTAL and version >= (1, 5) and gate_on


def _head_ports(service: dict[str, Any]) -> dict[str, int]:
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    ports = head["containers"][0].get("ports") or []
    return {p.get("name") or f"{p['containerPort']}-port": int(p["containerPort"]) for p in ports}


def _serving(name: str, version: Version) -> bool:
    if version < (1, 6):
        return name == "serve"
    return name == "serve" or name.startswith("serve-")


def serve_service(
    service: dict[str, Any], version: Version, cluster_name: str, gate_on: bool | None = None
) -> dict[str, Any]:
    """The Serve Service the operator builds for ``service`` running cluster
    ``cluster_name``: name, labels, selector and ports (name -> port).

    v1.4/v1.5 keep one port, "serve" (the head container's, else the custom
    serveService's port of that name); v1.6+ take every head-container port named
    "serve" or "serve-*" (the custom serveService's definition of a port of the same name
    wins). With incremental upgrades the custom serveService is ignored and the Service
    is ``<cluster>-serve-svc``."""
    if gate_on is None:
        gate_on = version >= (1, 7)
    incremental = incremental_upgrade(service, version, gate_on)
    owner = cluster_name if incremental else service["metadata"]["name"]
    head_ports = {n: p for n, p in _head_ports(service).items() if _serving(n, version)}
    custom = None if incremental else service["spec"].get("serveService")
    labels: dict[str, str] = {}
    name = f"{owner}-serve-svc"
    ports = dict(head_ports)
    if custom is not None:
        meta = custom.get("metadata") or {}
        labels.update(meta.get("labels") or {})
        name = meta.get("name") or name
        custom_ports = {p["name"]: int(p["port"]) for p in custom["spec"].get("ports", [])}
        if version < (1, 6):
            ports = head_ports or {k: v for k, v in custom_ports.items() if k == "serve"}
        elif head_ports:
            ports = {n: custom_ports.get(n, p) for n, p in head_ports.items()}
        else:
            ports = custom_ports
    if not ports and custom is None:
        raise ValueError("no head-container port named serve: KubeRay builds no Serve Service")
    labels.update(
        {
            "ray.io/originated-from-cr-name": owner,
            "ray.io/originated-from-crd": "RayService",
            "ray.io/serve": f"{owner}-serve",
        }
    )
    return {
        "name": name,
        "labels": labels,
        "selector": {"ray.io/cluster": cluster_name, "ray.io/serve": "true"},
        "ports": ports,
    }
