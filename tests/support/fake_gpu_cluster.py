"""A Ray cluster whose GPU nodes come and go on Ray's own autoscaler (v2), on this host.

The autoscaler runs against the ``fake_multinode`` node provider: every "node" is a
raylet on this machine that declares the resources of one pod of a worker group of
``kuberay/`` (GPUs declared logically, custom resources included). The node types are
what Ray's own KubeRay reader (``ray.autoscaler._private.kuberay.autoscaling_config``)
makes of the RayService's cluster spec: resources, ``minReplicas``/``maxReplicas``
(GPU groups capped) and each group's ``idleTimeoutSeconds``, all times multiplied by a
time scale. The head declares no CPU and no GPU, like the RayService's head.

The cluster is started with ``ray start --head --block`` in a new session on free
ports and a private temp dir, and is shut down by signalling that session's processes
(never ``ray stop``, which would stop every cluster on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.builders import REPLICA_ENV
from app.kuberay.manifests import find_object, load_kustomization

# The fake provider numbers its nodes from this id; the head must carry it (autoscaler v2).
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
FAKE_HEAD_NODE_TYPE = "ray.head.default"
# Every process of the test cluster and the driver: no token auth on this private,
# loopback-only cluster (as `make serve`).
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kuberay_autoscaling_config(manifest_dir: Path | None = None) -> dict[str, Any]:
    """What Ray's autoscaler reads on Kubernetes: its KubeRay reader applied to the
    RayService's cluster spec, as KubeRay hands it the RayCluster."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    service = find_object(load_kustomization(manifest_dir), "RayService")
    ray_cr = {
        "metadata": {"name": service["metadata"]["name"], "namespace": "triton-serve"},
        "spec": service["spec"]["rayClusterConfig"],
    }
    config: dict[str, Any] = _derive_autoscaling_config_from_ray_cr(ray_cr)
    return config


def autoscaler_config(
    kuberay: dict[str, Any], gcs_address: str, time_scale: float, max_gpu_nodes: int
) -> dict[str, Any]:
    """``kuberay`` (Ray's reading of the manifests) on the fake multinode provider: node
    types, bounds and per-group idle timeouts kept, times scaled, node counts capped."""
    config = json.loads(json.dumps(kuberay))
    node_types: dict[str, Any] = config["available_node_types"]
    # The fake provider names its head node type itself.
    node_types[FAKE_HEAD_NODE_TYPE] = node_types.pop(config["head_node_type"])
    config["head_node_type"] = FAKE_HEAD_NODE_TYPE
    for name, node_type in node_types.items():
        # Memory stays the host's: the fake provider cannot declare it.
        node_type["resources"].pop("memory", None)
        if name == config["head_node_type"]:
            continue
        cap = max_gpu_nodes if node_type["resources"].get("GPU", 0) > 0 else 1
        node_type["min_workers"] = min(node_type["min_workers"], cap)
        node_type["max_workers"] = min(node_type["max_workers"], cap)
        if "idle_timeout_s" in node_type:
            node_type["idle_timeout_s"] *= time_scale
    config["max_workers"] = sum(t.get("max_workers", 0) for t in node_types.values())
    config["idle_timeout_minutes"] *= time_scale
    config["provider"] = {
        # "external" with the fake provider's class: the wheel lacks the defaults
        # file that type "fake_multinode" loads.
        "type": "external",
        "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "launch_multiple": True,
        "head_node_id": FAKE_HEAD_NODE_ID,
        "gcs_address": gcs_address,
    }
    return config


def idle_timeout_s(kuberay: dict[str, Any], group: str, time_scale: float) -> float:
    """The scaled idle timeout the autoscaler applies to nodes of ``group``."""
    node_type = kuberay["available_node_types"][group]
    seconds = node_type.get("idle_timeout_s", kuberay["idle_timeout_minutes"] * 60)
    return float(seconds) * time_scale


class FakeGpuCluster:
    """A head plus autoscaled fake GPU nodes, all in one process session of this machine."""

    def __init__(self, kuberay: dict[str, Any], time_scale: float, max_gpu_nodes: int) -> None:
        self.kuberay = kuberay
        self.time_scale = time_scale
        self.max_gpu_nodes = max_gpu_nodes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._workdir = tempfile.mkdtemp(prefix="rayas")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config_path = Path(self._workdir) / "autoscaler.json"
        config = autoscaler_config(self.kuberay, self.address, self.time_scale, self.max_gpu_nodes)
        config_path.write_text(json.dumps(config))
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(REPLICA_ENV)
        env.update(
            {
                "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "RAY_enable_autoscaler_v2": "1",
                "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        env.update(CLUSTER_ENV)
        ray_cli = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_cli,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            "--num-cpus=0",
            "--num-gpus=0",
            f"--temp-dir={Path(self._workdir) / 'ray'}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--autoscaling-config={config_path}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        log = open(Path(self._workdir) / "ray-start.log", "wb")  # noqa: SIM115 (lives with the process)
        self._process = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_for_gcs(timeout_s=60)

    def _wait_for_gcs(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"ray start exited; see {self._workdir}/ray-start.log")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the head's GCS did not listen on {self.address} in {timeout_s} s")

    def shutdown(self) -> None:
        """Signal every process of this cluster's session: TERM, then KILL after a grace."""
        if self._process is None:
            return
        pgid = self._process.pid  # the session (and group) leader that start() created
        for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        self._process = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
