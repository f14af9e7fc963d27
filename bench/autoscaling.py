"""Serve replicas and GPU nodes scaling together, on Ray's fake multinode autoscaler.

Run with ``python -m bench.autoscaling`` (about 3 minutes on 2 cores). The real Ray
autoscaler (v2) runs against the ``fake_multinode`` node provider: every "node" is a
raylet on this machine that declares the resources of one pod of a worker group of
``kuberay/`` (GPUs declared logically, custom resources included). The node types are
what Ray's own KubeRay reader (``ray.autoscaler._private.kuberay.autoscaling_config``)
makes of the RayService's cluster spec: resources, ``minReplicas``/``maxReplicas``
(capped at ``--max-gpu-nodes``) and each group's ``idleTimeoutSeconds``, all times
multiplied by ``--time-scale`` (1/60: 600 s become 10 s). The head declares no CPU and
no GPU, like the RayService's head, so every replica lands on a worker node.

The application is ``app.builders:build_app`` with one deployment of the light
``echo`` model (``delay_ms`` request parameter as the work) that asks for what
``--group``'s models ask for: on ``gpu-vllm`` (the default) 2 GPUs per replica, a
STRICT_PACK placement group like Mixtral's, so one replica fills a node. Autoscaled
from zero. One timeline, four phases:

1. **cold**: one request while the model has no replica and its group no node
   (scale from zero: the request waits for a node and a replica);
2. **load**: ``--concurrency`` clients until the deployment holds its maximum of
   replicas on more than one GPU node, then ``--hold-s`` more;
3. **light**: one client while replicas and then nodes go away (draining);
4. **idle**: no load until the model is back at zero replicas and zero GPU nodes.

Every request's status is recorded; the script prints the timeline (requests,
replicas, nodes per second) as a table and writes ``bench/out/autoscaling.png`` and
``bench/out/autoscaling.json``. ``tests/integration/autoscaling`` runs the same
scenario and asserts on it.

The cluster is started with ``ray start --head --block`` in a new session on free
ports and a private temp dir, and is shut down by signalling that session's processes
(never ``ray stop``, which would stop every cluster on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.builders import REPLICA_ENV
from app.kuberay.manifests import (
    WorkerGroupShape,
    find_object,
    load_kustomization,
    load_worker_group_shapes,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "bench" / "out"
APP_NAME = "triton"
DEPLOYMENT = "echo"
# The fake provider numbers its nodes from this id; the head must carry it (autoscaler v2).
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
FAKE_HEAD_NODE_TYPE = "ray.head.default"
# Every process of the test cluster and the driver: no token auth on this private,
# loopback-only cluster (as `make serve`).
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}
REQUEST_BODY = {
    "inputs": [{"name": "INPUT_FP32", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Scenario:
    """Knobs of one run; the defaults are what the tests and the README use."""

    group: str = "gpu-vllm"
    max_gpu_nodes: int = 2
    # Every idleTimeoutSeconds of the manifests times this (600 s -> 10 s).
    time_scale: float = 1 / 60
    gpu_fraction: float = 2.0
    max_replicas: int = 2
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 2.0
    downscale_delay_s: float = 8.0
    delay_ms: int = 250
    concurrency: int = 8
    hold_s: float = 10.0
    cold_timeout_s: float = 150.0
    phase_timeout_s: float = 180.0


@dataclass
class Sample:
    """One row of the timeline."""

    t_s: float
    phase: str
    in_flight: int
    ok: int
    failed: int
    replicas: int
    gpu_nodes: int
    nodes: int


@dataclass
class RequestRecord:
    start_s: float
    end_s: float
    phase: str
    status: int
    error: str = ""


@dataclass
class Timeline:
    """What a run saw: samples, every request, and when each phase began."""

    scenario: Scenario
    idle_timeout_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    phase_start_s: dict[str, float] = field(default_factory=dict)
    cold_start_s: float | None = None

    def failures(self, phase: str | None = None) -> list[RequestRecord]:
        return [r for r in self.requests if r.status != 200 and (phase is None or r.phase == phase)]

    def max_of(self, key: str, phase: str | None = None) -> int:
        values = [getattr(s, key) for s in self.samples if phase is None or s.phase == phase]
        return max(values, default=0)

    def last(self) -> Sample:
        return self.samples[-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": asdict(self.scenario),
            "idle_timeout_s": self.idle_timeout_s,
            "cold_start_s": self.cold_start_s,
            "phase_start_s": self.phase_start_s,
            "samples": [asdict(s) for s in self.samples],
            "requests": [asdict(r) for r in self.requests],
        }


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
    kuberay: dict[str, Any], gcs_address: str, scenario: Scenario
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
        cap = scenario.max_gpu_nodes if node_type["resources"].get("GPU", 0) > 0 else 1
        node_type["min_workers"] = min(node_type["min_workers"], cap)
        node_type["max_workers"] = min(node_type["max_workers"], cap)
        if "idle_timeout_s" in node_type:
            node_type["idle_timeout_s"] *= scenario.time_scale
    config["max_workers"] = sum(t.get("max_workers", 0) for t in node_types.values())
    config["idle_timeout_minutes"] *= scenario.time_scale
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


def idle_timeout_s(kuberay: dict[str, Any], group: str, scenario: Scenario) -> float:
    """The scaled idle timeout the autoscaler applies to nodes of ``group``."""
    node_type = kuberay["available_node_types"][group]
    seconds = node_type.get("idle_timeout_s", kuberay["idle_timeout_minutes"] * 60)
    return float(seconds) * scenario.time_scale


class FakeGpuCluster:
    """A head plus autoscaled fake GPU nodes, all in one process session of this machine."""

    def __init__(self, kuberay: dict[str, Any], scenario: Scenario) -> None:
        self.kuberay = kuberay
        self.scenario = scenario
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._workdir = tempfile.mkdtemp(prefix="rayas")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config_path = Path(self._workdir) / "autoscaler.json"
        config = autoscaler_config(self.kuberay, self.address, self.scenario)
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
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
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


def app_args(scenario: Scenario, shape: WorkerGroupShape) -> dict[str, Any]:
    """``build_app`` args: the echo model, asking for what ``shape``'s models ask for."""
    custom = {k: v for k, v in shape.resources.items() if k not in ("CPU", "GPU", "memory")}
    resources = {k: min(1.0, v) for k, v in custom.items()}
    return {
        "model_repository": str(REPO_ROOT / "model_repository"),
        "triton": {"log_info": False},
        "router": {"num_replicas": 1, "num_cpus": 0.5, "request_timeout_s": 180},
        "deployments": [
            {
                "name": DEPLOYMENT,
                "models": ["echo"],
                "num_gpus": scenario.gpu_fraction,
                "num_cpus": 0.25,
                "resources": resources,
                "max_ongoing_requests": 4,
                "max_queued_requests": 1024,
                "autoscaling": {
                    "min_replicas": 0,
                    "max_replicas": scenario.max_replicas,
                    "target_ongoing_requests": scenario.target_ongoing_requests,
                    "upscale_delay_s": scenario.upscale_delay_s,
                    "downscale_delay_s": scenario.downscale_delay_s,
                },
            }
        ],
    }


class _Recorder:
    """Counts requests and samples replicas and nodes once a second in a thread."""

    def __init__(self, timeline: Timeline, gpu_resource: str, started: float) -> None:
        self.timeline = timeline
        self.gpu_resource = gpu_resource
        self.started = started
        self.phase = "start"
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.started

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.timeline.phase_start_s[phase] = round(self.now(), 2)

    def begin(self) -> tuple[float, str]:
        with self._lock:
            self.in_flight += 1
        return self.now(), self.phase

    def end(self, start: float, phase: str, status: int, error: str = "") -> None:
        with self._lock:
            self.in_flight -= 1
            self.timeline.requests.append(RequestRecord(start, self.now(), phase, status, error))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.sample()
            self.timeline.samples.append(sample)
            self._stop.wait(1.0)

    def sample(self) -> Sample:
        replicas, gpu_nodes, nodes = cluster_counts(self.gpu_resource)
        with self._lock:
            ok = sum(1 for r in self.timeline.requests if r.status == 200)
            failed = len(self.timeline.requests) - ok
            in_flight = self.in_flight
        return Sample(
            round(self.now(), 1), self.phase, in_flight, ok, failed, replicas, gpu_nodes, nodes
        )


def cluster_counts(gpu_resource: str) -> tuple[int, int, int]:
    """(RUNNING replicas of the deployment, alive nodes with ``gpu_resource``, alive nodes)."""
    import ray
    from ray import serve

    replicas = 0
    with contextlib.suppress(Exception):
        app = serve.status().applications.get(APP_NAME)
        if app is not None and DEPLOYMENT in app.deployments:
            replicas = app.deployments[DEPLOYMENT].replica_states.get("RUNNING", 0)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    gpu_nodes = sum(1 for n in alive if n.get("Resources", {}).get(gpu_resource, 0) > 0)
    return replicas, gpu_nodes, len(alive)


async def _one_request(client: httpx.AsyncClient, url: str, rec: _Recorder, delay_ms: int) -> int:
    body = dict(REQUEST_BODY, parameters={"delay_ms": delay_ms})
    start, phase = rec.begin()
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        rec.end(start, phase, 0, f"{type(exc).__name__}: {exc}")
        return 0
    rec.end(start, phase, response.status_code, "" if response.is_success else response.text)
    return response.status_code


async def _drive(
    base_url: str, rec: _Recorder, scenario: Scenario, until: Callable[[], bool], clients: int
) -> None:
    """``clients`` closed-loop clients until ``until()`` holds (checked every second)."""
    url = f"{base_url}/v2/models/echo/infer"
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(timeout=scenario.cold_timeout_s + 30, limits=limits) as client:

        async def loop() -> None:
            while not stop.is_set():
                await _one_request(client, url, rec, scenario.delay_ms)

        tasks = [asyncio.create_task(loop()) for _ in range(clients)]
        deadline = time.monotonic() + scenario.phase_timeout_s
        while time.monotonic() < deadline and not await asyncio.to_thread(until):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        stop.set()
        await asyncio.gather(*tasks)


def _wait(until: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(1.0)
    return False


def run_scenario(scenario: Scenario, manifest_dir: Path | None = None) -> Timeline:
    """Start the fake cluster, run the four phases, shut everything down."""
    import ray
    from ray import serve

    from app.builders import build_app

    os.environ.update(CLUSTER_ENV)
    shapes = load_worker_group_shapes(manifest_dir)
    shape = next(s for s in shapes if s.name == scenario.group)
    gpu_resource = next((k for k in shape.resources if k not in ("CPU", "GPU", "memory")), "GPU")
    kuberay = kuberay_autoscaling_config(manifest_dir)
    timeline = Timeline(scenario, idle_timeout_s(kuberay, scenario.group, scenario))
    cluster = FakeGpuCluster(kuberay, scenario)
    cluster.start()
    try:
        ray.init(address=cluster.address, log_to_driver=False, namespace="autoscaling")
        http_port = _free_port()
        # One proxy on the head: fake nodes share this host, so per-node proxies would
        # fight over the port (on Kubernetes every pod runs one, proxy_location EveryNode).
        serve.start(
            proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port}
        )
        serve._run(build_app(app_args(scenario, shape)), _blocking=False, name=APP_NAME)
        base_url = f"http://127.0.0.1:{http_port}"
        _wait_for_router(base_url, timeout_s=240)
        rec = _Recorder(timeline, gpu_resource, time.monotonic())
        rec.start()
        try:
            _run_phases(base_url, rec, scenario, timeline, gpu_resource)
        finally:
            rec.stop()
    finally:
        if ray.is_initialized():  # serve.shutdown() would otherwise start a local Ray
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
        cluster.shutdown()
    return timeline


def _wait_for_router(base_url: str, timeout_s: float) -> None:
    def live() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{base_url}/v2/health/live", timeout=5).status_code == 200
        return False

    if not _wait(live, timeout_s):
        raise TimeoutError(f"the router did not answer /v2/health/live in {timeout_s} s")


def _run_phases(
    base_url: str, rec: _Recorder, scenario: Scenario, timeline: Timeline, gpu_resource: str
) -> None:
    def counts() -> tuple[int, int, int]:
        return cluster_counts(gpu_resource)

    # Phase 1: one request against zero replicas on zero GPU nodes.
    _wait(lambda: counts()[:2] == (0, 0), scenario.phase_timeout_s)
    rec.set_phase("cold")
    status = asyncio.run(_cold_request(base_url, rec, scenario))
    cold = timeline.requests[-1]
    timeline.cold_start_s = round(cold.end_s - cold.start_s, 2) if status == 200 else None

    # Phase 2: load until the maximum of replicas runs on more than one GPU node.
    rec.set_phase("load")
    reached: dict[str, float] = {}

    def scaled_out() -> bool:
        replicas, gpu_nodes, _ = counts()
        if replicas >= scenario.max_replicas and gpu_nodes > 1:
            reached.setdefault("t", time.monotonic())
        return "t" in reached and time.monotonic() - reached["t"] >= scenario.hold_s

    asyncio.run(_drive(base_url, rec, scenario, scaled_out, scenario.concurrency))

    # Phase 3: one client while replicas, then nodes, go away.
    rec.set_phase("light")
    asyncio.run(_drive(base_url, rec, scenario, lambda: counts()[:2] == (1, 1), 1))

    # Phase 4: no load until zero replicas and zero GPU nodes.
    rec.set_phase("idle")
    _wait(lambda: counts()[:2] == (0, 0), scenario.phase_timeout_s)
    rec.set_phase("end")
    time.sleep(1.5)


async def _cold_request(base_url: str, rec: _Recorder, scenario: Scenario) -> int:
    async with httpx.AsyncClient(timeout=scenario.cold_timeout_s) as client:
        return await _one_request(client, f"{base_url}/v2/models/echo/infer", rec, 0)


def timeline_table(timeline: Timeline, every_s: float = 5.0) -> str:
    """The timeline as a Markdown table: a row every ``every_s`` and at each change."""
    header = "| t s | phase | in flight | ok | failed | echo replicas | GPU nodes | nodes |"
    rows = [header, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    last_key: tuple[Any, ...] | None = None
    last_t = -every_s
    for s in timeline.samples:
        key = (s.phase, s.replicas, s.gpu_nodes, s.nodes, s.failed)
        if key == last_key and s.t_s - last_t < every_s:
            continue
        rows.append(
            f"| {s.t_s:.0f} | {s.phase} | {s.in_flight} | {s.ok} | {s.failed} "
            f"| {s.replicas} | {s.gpu_nodes} | {s.nodes} |"
        )
        last_key, last_t = key, s.t_s
    return "\n".join(rows)


def summary(timeline: Timeline) -> str:
    sc = timeline.scenario
    lines = [
        f"cold start (first request, model at zero, group at zero): {timeline.cold_start_s} s",
        f"requests: {len(timeline.requests)}, failed: {len(timeline.failures())}",
        f"most replicas: {timeline.max_of('replicas')} (max {sc.max_replicas}), "
        f"most GPU nodes: {timeline.max_of('gpu_nodes')} (max {sc.max_gpu_nodes})",
        f"phase starts (s): {timeline.phase_start_s}",
    ]
    return "\n".join(lines)


def plot(timeline: Timeline, path: Path) -> None:
    """Requests per second, replicas and GPU nodes over time, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_count) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    horizon = int(max((s.t_s for s in timeline.samples), default=0)) + 1
    ok_per_s = [0] * (horizon + 1)
    failed_per_s = [0] * (horizon + 1)
    for r in timeline.requests:
        slot = min(int(r.end_s), horizon)
        if r.status == 200:
            ok_per_s[slot] += 1
        else:
            failed_per_s[slot] += 1
    ax_rps.plot(range(horizon + 1), ok_per_s, label="ok / s")
    ax_rps.plot(range(horizon + 1), failed_per_s, label="failed / s", color="red")
    ax_rps.set_ylabel("requests")
    ax_rps.legend(loc="upper right")
    ts = [s.t_s for s in timeline.samples]
    ax_count.step(ts, [s.replicas for s in timeline.samples], where="post", label="replicas")
    ax_count.step(ts, [s.gpu_nodes for s in timeline.samples], where="post", label="GPU nodes")
    ax_count.set_ylabel("count")
    ax_count.set_xlabel("seconds")
    ax_count.legend(loc="upper right")
    for phase, start in timeline.phase_start_s.items():
        for ax in (ax_rps, ax_count):
            ax.axvline(start, color="grey", linestyle=":")
        ax_rps.annotate(phase, (start, 0), textcoords="offset points", xytext=(2, 2))
    fig.suptitle(
        f"echo on fake '{timeline.scenario.group}' nodes: cold start {timeline.cold_start_s} s"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@contextlib.contextmanager
def _stdout_note(message: str) -> Iterator[None]:
    print(message, flush=True)
    yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", default=Scenario.group)
    parser.add_argument("--max-gpu-nodes", type=int, default=Scenario.max_gpu_nodes)
    parser.add_argument("--time-scale", type=float, default=Scenario.time_scale)
    parser.add_argument("--concurrency", type=int, default=Scenario.concurrency)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    scenario = Scenario(
        group=args.group,
        max_gpu_nodes=args.max_gpu_nodes,
        time_scale=args.time_scale,
        concurrency=args.concurrency,
    )
    started = time.monotonic()
    with _stdout_note(f"running {scenario}"):
        timeline = run_scenario(scenario)
    print(timeline_table(timeline))
    print(summary(timeline))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoscaling.json").write_text(json.dumps(timeline.to_json(), indent=1))
    plot(timeline, args.out / "autoscaling.png")
    print(f"wrote {args.out / 'autoscaling.png'} ({time.monotonic() - started:.0f} s in all)")
    return 0 if not timeline.failures() and timeline.cold_start_s is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
