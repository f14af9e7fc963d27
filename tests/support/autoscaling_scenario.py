"""A model scaling from zero to its maximum and back, with its GPU nodes, on a
``fake_gpu_cluster``: the scenario, what it records, and how it is told.

The application is ``app.builders:build_app`` with one deployment of the light
``echo`` model (``delay_ms`` request parameter as the work) that asks for what a
worker group's models ask for: on ``gpu-vllm`` (the default) 2 GPUs per replica, a
STRICT_PACK placement group like Mixtral's, so one replica fills a node. Autoscaled
from zero. One timeline, four phases:

1. **cold**: one request while the model has no replica and its group no node
   (scale from zero: the request waits for a node and a replica);
2. **load**: ``concurrency`` clients until the deployment holds its maximum of
   replicas on more than one GPU node, then ``hold_s`` more;
3. **light**: one client while replicas and then nodes go away (draining);
4. **idle**: no load until the model is back at zero replicas and zero GPU nodes.

Every request's status is recorded, and replicas and nodes once a second.
``tests/integration/autoscaling`` asserts on the timeline; ``bench.autoscaling``
prints and plots it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.kuberay.manifests import WorkerGroupShape, load_worker_group_shapes
from tests.support.fake_gpu_cluster import (
    CLUSTER_ENV,
    FakeGpuCluster,
    free_port,
    idle_timeout_s,
    kuberay_autoscaling_config,
)

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
APP_NAME = "triton"
DEPLOYMENT = "echo"
REQUEST_BODY = {
    "inputs": [{"name": "INPUT_FP32", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
}


@dataclass(frozen=True)
class Scenario:
    """Knobs of one run; the defaults are what the tests and docs/benchmarks.md use."""

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


def app_args(scenario: Scenario, shape: WorkerGroupShape) -> dict[str, Any]:
    """``build_app`` args: the echo model, asking for what ``shape``'s models ask for."""
    custom = {k: v for k, v in shape.resources.items() if k not in ("CPU", "GPU", "memory")}
    resources = {k: min(1.0, v) for k, v in custom.items()}
    return {
        "model_repository": str(MODEL_REPOSITORY),
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

    from tests.support.stack import LocalStack, deploy, start_serving

    os.environ.update(CLUSTER_ENV)
    shapes = load_worker_group_shapes(manifest_dir)
    shape = next(s for s in shapes if s.name == scenario.group)
    gpu_resource = next((k for k in shape.resources if k not in ("CPU", "GPU", "memory")), "GPU")
    kuberay = kuberay_autoscaling_config(manifest_dir)
    timeline = Timeline(scenario, idle_timeout_s(kuberay, scenario.group, scenario.time_scale))
    cluster = FakeGpuCluster(kuberay, scenario.time_scale, scenario.max_gpu_nodes)
    cluster.start()
    try:
        ray.init(address=cluster.address, log_to_driver=False, namespace="autoscaling")
        stack = LocalStack(free_port(), free_port())
        # One proxy on the head: fake nodes share this host, so per-node proxies would
        # fight over the port (on Kubernetes every pod runs one, proxy_location EveryNode).
        start_serving(stack, None, APP_NAME, proxy_location="HeadOnly")
        # The models' GPU nodes start from zero: the router answers before they are ready.
        deploy(app_args(scenario, shape), APP_NAME)
        base_url = stack.url
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
