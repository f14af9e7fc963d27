"""The Serve stack against the standalone ``tritonserver``, both over KServe v2 HTTP.

Run with ``python -m bench.stack`` (``--quick`` for a smoke run). One run measures the
same models of ``model_repository`` on two targets:

- **stack**: Ray started in this process (4 logical CPUs, 1 logical GPU), the
  application of ``app.builders.build_app`` with one deployment per benchmarked model
  (1 CPU, 0.25 GPU, ``max_ongoing_requests`` 256; router 512), reached through Serve's
  HTTP port (the proxy), or with ``--stack-endpoint direct`` through the router
  replica's own port when direct ingress is on (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``,
  implied by ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``);
- **standalone**: the ``tritonserver`` of the nvidia-pytriton wheel serving the same
  repository (``bench._standalone.StandaloneTriton``), on its HTTP port.

Only one target runs at a time: Ray is shut down before ``tritonserver`` starts.

Models: ``echo`` (``INPUT_FP32`` FP32 [1,16]) and ``minilm`` (``TEXT`` BYTES [1,1] ->
``EMBEDDING`` FP32 [1,384]), skipped with a message while its ``config.pbtxt`` is absent.
Both targets get the same request bytes (binary tensor extension by default,
``--encoding json`` for JSON bodies) from the same client code: one
``httpx.AsyncClient`` (HTTP/1.1, as many connections as the highest concurrency) in a
separate, Ray-free client process (``--client inline`` runs it in this process), on
uvloop when it is installed. Before the cells, one request per model and target is
checked (echo returns its input; the embedding has 384 unit-norm values) and the two
targets' outputs are compared.

Per model and target: p50/p99 latency at concurrency 1 and requests/s at concurrency 1,
16 and 64, each cell after its own warm-up; then the ratios stack/standalone and the
targets: added p50 (stack - standalone) <= 2 ms at concurrency 1 for ``echo``, and
``minilm`` requests/s at concurrency 16 >= 90 % of standalone.

Each cell also reports CPU time per request: of the target's processes (for the stack
every process Ray started, as they all descend from this one; for standalone,
``tritonserver`` and its stubs) and of the client. On a small shared machine they show
what latency and throughput alone hide: who the CPU went to, and when the client itself
is the bottleneck (httpx's connection pool costs more per request as concurrency grows).

``--serve-env KEY=VALUE`` (repeatable) sets Ray Serve's request-path flags, such as
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, in this process's environment before Ray is
imported and started, so the raylet passes them on to every Serve actor (controller,
proxy, replicas). With direct ingress on, the bench adds
``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=0`` unless it is set: Serve's 30 s drain
of the ingress replica outlasts ``serve.shutdown()``, and Ray then kills the replicas
before they stop Triton (leaving its shared memory in ``/dev/shm``; the bench removes
such leftovers of its own processes and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._load import load_before, print_totals

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
APP_NAME = "triton"
STACK_HOST = "127.0.0.1"
MODELS = ("echo", "minilm")
TARGETS = ("stack", "standalone")
CONCURRENCY = (1, 16, 64)
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"

TARGET_ADDED_P50_MS = 2.0  # echo: stack p50 - standalone p50 at concurrency 1
TARGET_EMBED_RPS_RATIO = 0.90  # minilm: stack rps@16 / standalone rps@16

ECHO_SHAPE = (1, 16)
EMBED_TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."
EMBED_DIM = 384

STACK_READY_TIMEOUT_S = 300.0
WARMUP_ROUNDS = 2  # warm-up lasts at least until this many requests per worker completed
WARMUP_LIMIT_S = 120.0  # ...and gives up after this long
WINDOW_LATENCIES = 20  # a window lasts at least this many warm-up latencies...
MAX_WINDOW_FACTOR = 10.0  # ...but no longer than this many times --duration
MAX_WINDOW_S = 60.0  # ...nor than this
MAX_ERRORS = 50  # a cell stops after this many failed requests
REQUEST_TIMEOUT_S = 60.0
SETTLE_S = 2.0  # pause after a target stops, so its processes are gone before the next


# ---- requests: the same bytes for both targets ----


@dataclass(frozen=True)
class RequestSpec:
    """One model's infer request, as bytes on the wire, and how to check its answer."""

    model: str
    path: str
    body: bytes
    headers: dict[str, str]
    output: str
    expected: list[float] | None  # echo: the input values; None: a unit-norm embedding


def _binary_request(
    inputs: list[dict[str, Any]], raw: bytes, output: str
) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {"inputs": inputs, "outputs": [{"name": output, "parameters": {"binary_data": True}}]},
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH_HEADER: str(len(header)),
    }
    return header + raw, headers


def _json_request(inputs: list[dict[str, Any]], output: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"inputs": inputs, "outputs": [{"name": output, "parameters": {"binary_data": False}}]},
        separators=(",", ":"),
    ).encode()
    return body, {"Content-Type": "application/json"}


def build_request(model: str, encoding: str) -> RequestSpec:
    """The request sent for ``model``, in the binary tensor extension or as JSON."""
    if model == "echo":
        count = math.prod(ECHO_SHAPE)
        values = [(i + 1) / 8.0 for i in range(count)]  # exact in FP32 and in JSON
        tensor: dict[str, Any] = {"name": "INPUT_FP32", "shape": list(ECHO_SHAPE)}
        tensor["datatype"] = "FP32"
        output, expected = "OUTPUT_FP32", values
        raw = struct.pack(f"<{count}f", *values)
        json_data: list[Any] = values
    elif model == "minilm":
        text = EMBED_TEXT.encode()
        tensor = {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES"}
        output, expected = "EMBEDDING", None
        raw = struct.pack("<I", len(text)) + text
        json_data = [EMBED_TEXT]
    else:
        raise ValueError(f"unknown model {model!r}")
    if encoding == "binary":
        tensor["parameters"] = {"binary_data_size": len(raw)}
        body, headers = _binary_request([tensor], raw, output)
    else:
        tensor["data"] = json_data
        body, headers = _json_request([tensor], output)
    return RequestSpec(model, f"/v2/models/{model}/infer", body, headers, output, expected)


def decode_output(content: bytes, header_length: str | None, name: str) -> list[float]:
    """The FP32 output ``name`` of an infer response (binary framing or JSON)."""
    if header_length is None:
        header, binary = json.loads(content), b""
    else:
        n = int(header_length)
        header, binary = json.loads(content[:n]), content[n:]
    offset = 0
    for out in header.get("outputs", []):
        size = int(out.get("parameters", {}).get("binary_data_size", 0))
        if out["name"] == name:
            if out.get("datatype") != "FP32":
                raise RuntimeError(f"output {name} is {out.get('datatype')}, expected FP32")
            if "data" in out:
                return [float(v) for v in out["data"]]
            chunk = binary[offset : offset + size]
            return list(struct.unpack(f"<{len(chunk) // 4}f", chunk))
        offset += size
    raise RuntimeError(f"response has no output {name!r}: {header}")


def check_output(spec: RequestSpec, values: list[float]) -> None:
    if spec.expected is not None:
        if values != spec.expected:
            raise RuntimeError(f"{spec.model}: the echo differs from the input: {values}")
        return
    norm = math.sqrt(sum(v * v for v in values))
    if len(values) != EMBED_DIM or not 0.99 < norm < 1.01:
        raise RuntimeError(
            f"{spec.model}: expected {EMBED_DIM} unit-norm values, got {len(values)} "
            f"with norm {norm:.4f}"
        )


# ---- the client (the same code for both targets) ----


@dataclass
class Cell:
    """One measurement: a target, a model, one concurrency."""

    target: str
    model: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_s: float = math.nan  # CPU time of the target's processes in the window
    client_cpu_s: float = math.nan  # CPU time of the client process in the window
    first_error: str = ""

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1e3 / self.requests if self.requests else math.nan

    @property
    def client_ms_per_request(self) -> float:
        return self.client_cpu_s * 1e3 / self.requests if self.requests else math.nan


CpuSnapshot = dict[int, int]  # pid -> utime + stime in clock ticks


def process_tree(root: int, exclude: int) -> list[int]:
    """``root`` and its descendants, without ``exclude`` (Linux). A descendant ``exclude``
    goes with its own descendants; ``exclude == root`` keeps the root's descendants."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid == exclude and pid != root:
            continue
        if pid != exclude:
            tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_snapshot(pids: Sequence[int]) -> CpuSnapshot:
    ticks: CpuSnapshot = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_seconds(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """CPU used between two snapshots by the processes alive at both."""
    ticks = sum(end[pid] - start[pid] for pid in end if pid in start)
    return ticks / os.sysconf("SC_CLK_TCK")


class Window:
    """Warm-up, then the measured window: a request counts if it completes inside it.

    Warm-up lasts ``warmup_s`` and at least until ``WARMUP_ROUNDS`` requests per worker
    completed, so connection setup and the first (slow) batches stay out of the window.
    The window lasts ``duration_s``, or longer when requests are slow (big batches): at
    least ``WINDOW_LATENCIES`` warm-up latencies (capped), so that a batch finishing just
    inside or just outside it moves requests/s by a few percent only.
    """

    def __init__(
        self,
        concurrency: int,
        warmup_s: float,
        duration_s: float,
        probe: Callable[[], CpuSnapshot] | None = None,
    ) -> None:
        self.opened = time.perf_counter()
        self.warmup_until = self.opened + warmup_s
        self.needed = WARMUP_ROUNDS * concurrency
        self.duration_s = duration_s
        self.warmup_latencies: list[float] = []
        self.start = math.inf
        self.end = math.inf
        self.probe = probe
        self.cpu_start: CpuSnapshot | None = None
        self.cpu_end: CpuSnapshot | None = None
        self.client_cpu = (math.nan, math.nan)

    @property
    def seconds(self) -> float:
        """Length of the window (0 if it never opened)."""
        span = self.end - self.start
        return span if math.isfinite(span) and span > 0 else 0.0

    def stop(self) -> None:
        """End the window now (or before it opens): every worker stops."""
        now = time.perf_counter()
        self.end = min(self.end, now) if self.start <= now else -math.inf

    def close_probe(self) -> None:
        """Take the end-of-window CPU readings (once)."""
        if math.isnan(self.client_cpu[1]):
            self.client_cpu = (self.client_cpu[0], time.process_time())
        if self.probe is not None and self.cpu_start is not None and self.cpu_end is None:
            self.cpu_end = self.probe()

    def client_cpu_s(self) -> float:
        return self.client_cpu[1] - self.client_cpu[0]

    def server_cpu_s(self) -> float:
        if self.cpu_start is None or self.cpu_end is None:
            return math.nan
        return cpu_seconds(self.cpu_start, self.cpu_end)

    def record(self, t0: float, t1: float, out: list[float]) -> None:
        if self.start <= t1 <= self.end:
            out.append(t1 - t0)
        elif t1 < self.start:
            self.warmup_latencies.append(t1 - t0)

    def poll(self) -> None:
        if self.start != math.inf:
            return
        now = time.perf_counter()
        if now >= self.warmup_until and len(self.warmup_latencies) >= self.needed:
            recent = self.warmup_latencies[-self.needed :]
            slow = min(
                WINDOW_LATENCIES * statistics.median(recent),
                MAX_WINDOW_FACTOR * self.duration_s,
                MAX_WINDOW_S,
            )
            self.start, self.end = now, now + max(self.duration_s, slow)
            self.client_cpu = (time.process_time(), math.nan)
            if self.probe is not None:
                self.cpu_start = self.probe()
            asyncio.get_running_loop().call_later(self.end - now, self.close_probe)
        elif now - self.opened > WARMUP_LIMIT_S:
            raise RuntimeError(f"warm-up did not finish within {WARMUP_LIMIT_S:.0f} s")


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def _measure_cell(
    client: Any,
    spec: RequestSpec,
    target: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    cpu_root: int,
) -> Cell:
    """``concurrency`` tasks posting ``spec`` back to back on the shared client.

    With ``cpu_root`` (a pid), the CPU time of that process and its descendants (this
    process excepted) during the window is measured too.
    """
    import httpx

    probe: Callable[[], CpuSnapshot] | None = None
    if cpu_root:
        pids = process_tree(cpu_root, exclude=os.getpid())

        def probe() -> CpuSnapshot:
            return cpu_snapshot(pids)

    window = Window(concurrency, warmup_s, duration_s, probe)
    clock = time.perf_counter
    failures: list[str] = []

    async def worker(out: list[float]) -> None:
        while clock() < window.end:
            t0 = clock()
            try:
                response = await client.post(spec.path, content=spec.body, headers=spec.headers)
                ok = response.status_code == 200
                why = "" if ok else f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            t1 = clock()
            if ok:
                window.record(t0, t1, out)
            else:
                failures.append(why)
                if len(failures) >= MAX_ERRORS:
                    window.stop()
                    return
                await asyncio.sleep(0.01)
            window.poll()

    results: list[list[float]] = [[] for _ in range(concurrency)]
    await asyncio.gather(*(worker(r) for r in results))
    window.close_probe()  # if the window ended early
    ordered = sorted(x for r in results for x in r)
    seconds = window.seconds or duration_s
    return Cell(
        target=target,
        model=spec.model,
        concurrency=concurrency,
        requests=len(ordered),
        errors=len(failures),
        seconds=seconds,
        rps=len(ordered) / seconds,
        p50_ms=_percentile(ordered, 0.50),
        p99_ms=_percentile(ordered, 0.99),
        mean_ms=statistics.fmean(ordered) * 1e3 if ordered else math.nan,
        server_cpu_s=window.server_cpu_s(),
        client_cpu_s=window.client_cpu_s(),
        first_error=failures[0] if failures else "",
    )


@dataclass
class ClientJob:
    """What the client process measures: one model on one target, every concurrency."""

    url: str
    target: str
    spec: RequestSpec
    concurrency: tuple[int, ...]
    warmup_s: float
    duration_s: float
    loop: str
    cpu_root: int  # the target's root process (0: no CPU accounting)

    def to_json(self) -> str:
        data = asdict(self)
        data["spec"]["body"] = base64.b64encode(self.spec.body).decode()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ClientJob:
        data = json.loads(text)
        spec = dict(data.pop("spec"))
        spec["body"] = base64.b64decode(spec["body"])
        data["concurrency"] = tuple(data["concurrency"])
        return cls(spec=RequestSpec(**spec), **data)


@dataclass
class ModelResult:
    """A model on a target: its checked output and its cells."""

    target: str
    model: str
    output: list[float]
    cells: dict[int, Cell] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "output": self.output,
            "cells": [asdict(c) for c in self.cells.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResult:
        cells = {int(c["concurrency"]): Cell(**c) for c in data["cells"]}
        return cls(data["target"], data["model"], list(data["output"]), cells)


async def run_job(job: ClientJob) -> ModelResult:
    """Check one request, then measure each concurrency with one shared client."""
    import httpx

    most = max(job.concurrency)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    async with httpx.AsyncClient(
        base_url=job.url,
        http1=True,
        http2=False,
        limits=limits,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
        trust_env=False,  # never through an HTTP proxy from the environment
    ) as client:
        spec = job.spec
        response = await client.post(spec.path, content=spec.body, headers=spec.headers)
        if response.status_code != 200:
            raise RuntimeError(
                f"{job.target} {spec.model}: HTTP {response.status_code}: {response.text[:500]}"
            )
        output = decode_output(
            response.content, response.headers.get(HEADER_LENGTH_HEADER), spec.output
        )
        check_output(spec, output)
        result = ModelResult(job.target, spec.model, output)
        for conc in job.concurrency:
            cell = await _measure_cell(
                client, spec, job.target, conc, job.warmup_s, job.duration_s, job.cpu_root
            )
            _progress(cell)
            result.cells[conc] = cell
    return result


def _fail_fast_imports() -> None:
    """httpcore runs ``import sniffio`` on every request; sniffio is optional (anyio 4
    no longer needs it), and a failed import scans ``sys.path`` each time, a good part
    of the client's CPU. A ``None`` entry in ``sys.modules`` makes it fail at once."""
    import importlib.util

    if importlib.util.find_spec("sniffio") is None:
        modules: dict[str, Any] = sys.modules
        modules["sniffio"] = None


def _run_loop(job: ClientJob) -> ModelResult:
    _fail_fast_imports()
    if job.loop == "uvloop":
        import uvloop

        return uvloop.run(run_job(job))
    return asyncio.run(run_job(job))


def client_main() -> int:
    """The client process: a ``ClientJob`` as JSON on stdin, a ``ModelResult`` on stdout."""
    job = ClientJob.from_json(sys.stdin.read())
    result = _run_loop(job)
    sys.stdout.write(json.dumps(result.to_dict()))
    return 0


def run_client(job: ClientJob, mode: str) -> ModelResult:
    """Run ``job`` in a fresh client process (``mode`` "process") or in this one."""
    if mode == "inline":
        return _run_loop(job)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.stack", "_client"],
        input=job.to_json(),
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed with exit code {proc.returncode}")
    return ModelResult.from_dict(json.loads(proc.stdout))


def _progress(cell: Cell) -> None:
    errors = f"  {cell.errors} errors: {cell.first_error}" if cell.errors else ""
    print(
        f"  {cell.target:<10} {cell.model:<7} c={cell.concurrency:<3} {cell.requests:>7} req "
        f"{cell.rps:>9.1f} rps  p50 {cell.p50_ms:8.3f} ms  p99 {cell.p99_ms:8.3f} ms  "
        f"CPU/req server {cell.cpu_ms_per_request:6.2f} ms client "
        f"{cell.client_ms_per_request:5.2f} ms{errors}",
        file=sys.stderr,
        flush=True,
    )


# ---- targets ----


@dataclass
class Settings:
    """What every target is measured with."""

    models: list[str]
    encoding: str
    warmup_s: float
    duration_s: float
    client: str
    loop: str
    serve_env: dict[str, str]
    stack_endpoint: str


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _server_version(url: str) -> str:
    status, body = _get(f"{url}/v2")
    if status != 200:
        return "?"
    return str(json.loads(body).get("version") or "?")


def _measure_models(target: str, url: str, cpu_root: int, settings: Settings) -> list[ModelResult]:
    results = []
    for model in settings.models:
        job = ClientJob(
            url=url,
            target=target,
            spec=build_request(model, settings.encoding),
            concurrency=CONCURRENCY,
            warmup_s=settings.warmup_s,
            duration_s=settings.duration_s,
            loop=settings.loop,
            cpu_root=cpu_root,
        )
        results.append(run_client(job, settings.client))
    return results


def stack_args(models: Sequence[str]) -> dict[str, Any]:
    """``build_app`` args: one deployment per model, nothing else."""
    return {
        "model_repository": str(MODEL_REPOSITORY),
        "triton": {"log_info": False},
        "router": {"max_ongoing_requests": 512},
        "deployments": [
            {
                "name": model,
                "models": [model],
                "num_cpus": 1,
                "num_gpus": 0.25,
                "max_ongoing_requests": 256,
            }
            for model in models
        ],
    }


def _wait_stack_ready(url: str, models: Sequence[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(models)
    last = ""
    while pending:
        still: list[str] = []
        for model in pending:
            try:
                status, body = _get(f"{url}/v2/models/{model}/ready")
            except OSError as exc:
                status, body = 0, str(exc).encode()
            if status != 200:
                still.append(model)
                last = f"{model}: {status} {body[:300].decode(errors='replace')}"
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stack not ready after {timeout_s:.0f} s ({last})")
            time.sleep(0.5)


def _direct_ingress_url(serve_port: int) -> str:
    """The router replica's own HTTP port (direct ingress), from the controller.

    The controller reports the node's IP, but the replica binds the host of Serve's
    ``http_options`` (127.0.0.1 here), so only the port is taken from it.
    """
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running")
    controller: Any = client._controller
    for group in ray.get(controller.get_target_groups.remote(APP_NAME), timeout=30):
        if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
            continue
        for target in group.targets:
            if int(target.port) != serve_port:
                return f"http://{STACK_HOST}:{target.port}"
    raise RuntimeError(
        "no direct-ingress HTTP target: set --serve-env RAY_SERVE_ENABLE_DIRECT_INGRESS=1 "
        "(or RAY_SERVE_THROUGHPUT_OPTIMIZED=1)"
    )


DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


def direct_ingress_on(env: dict[str, str]) -> bool:
    """Whether Serve will run direct ingress with ``env`` (as its constants decide)."""
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        return True
    if "RAY_SERVE_ENABLE_DIRECT_INGRESS" in env:
        return env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    return env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"


def serve_env_with_defaults(serve_env: dict[str, str]) -> dict[str, str]:
    """``--serve-env`` plus the bench's defaults: with direct ingress, no 30 s drain of
    the ingress replica at shutdown (Serve's default outlasts ``serve.shutdown``'s own
    30 s, and Ray then kills the replicas before Triton is stopped)."""
    env = dict(serve_env)
    if direct_ingress_on({**os.environ, **env}) and DRAIN_ENV not in os.environ:
        env.setdefault(DRAIN_ENV, "0")
    return env


def _leftover_shm(pids: Sequence[int]) -> list[Path]:
    """In-process Triton shm regions (``tsrv<pid>x0_*``) of processes that are gone."""
    return [
        region
        for pid in pids
        if not Path(f"/proc/{pid}").exists()
        for region in Path("/dev/shm").glob(f"tsrv{pid}x0_*")
    ]


def measure_stack(settings: Settings, meta: dict[str, Any]) -> list[ModelResult]:
    """Ray in this process, the application, the client; Ray is shut down on return."""
    from bench._standalone import find_free_port

    os.environ.update(settings.serve_env)  # before Ray starts: the raylet passes them on
    import ray
    from ray import serve

    from app.builders import build_app

    port = find_free_port()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": STACK_HOST, "port": port})
        serve._run(build_app(stack_args(settings.models)), _blocking=False, name=APP_NAME)
        url = f"http://{STACK_HOST}:{port}"
        _wait_stack_ready(url, settings.models, STACK_READY_TIMEOUT_S)
        meta["stack_triton"] = _server_version(url)
        if settings.stack_endpoint == "direct":
            url = _direct_ingress_url(port)
            _wait_stack_ready(url, settings.models, 60.0)
        meta["stack_url"] = url
        print(f"stack ({url}):", file=sys.stderr, flush=True)
        # Ray's processes (GCS, raylet, Serve's actors, Triton's stubs) are this one's
        # descendants (address="local"), so the CPU they use is counted from here.
        return _measure_models("stack", url, os.getpid(), settings)
    finally:
        ray_pids = process_tree(os.getpid(), exclude=-1)
        shutdown: Callable[[], None] = serve.shutdown
        with contextlib.suppress(Exception):
            shutdown()
        ray.shutdown()
        time.sleep(SETTLE_S)
        leftover = _leftover_shm(ray_pids)
        if leftover:
            print(
                f"warning: the stack left {len(leftover)} Triton shm region(s) in /dev/shm "
                "(a replica was killed before it stopped Triton); removing them",
                file=sys.stderr,
            )
            meta["leftover_shm"] = [str(p) for p in leftover]
            for region in leftover:
                with contextlib.suppress(OSError):
                    region.unlink()


def measure_standalone(settings: Settings, meta: dict[str, Any]) -> list[ModelResult]:
    from bench._standalone import StandaloneTriton

    with StandaloneTriton(MODEL_REPOSITORY, settings.models) as server:
        url = f"http://127.0.0.1:{server.http_port}"
        meta["standalone_triton"] = _server_version(url)
        print(f"standalone tritonserver ({url}):", file=sys.stderr, flush=True)
        return _measure_models("standalone", url, server.pid or 0, settings)


# ---- report ----


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _compare_outputs(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def render(
    results: Sequence[ModelResult], settings: Settings, meta: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The markdown report and the ratios/targets as data."""
    by_key = {(r.model, r.target): r for r in results}
    triton = meta.get("stack_triton") or meta.get("standalone_triton") or "?"
    if meta.get("standalone_triton", triton) != triton:
        triton = f"{triton} stack, {meta['standalone_triton']} standalone"
    lines = [
        f"## KServe v2 HTTP: Serve stack vs standalone tritonserver (Triton {triton}, "
        f"Ray {meta['ray']}, {meta['cpus']} CPUs, {settings.duration_s:g} s per cell, "
        f"{settings.encoding} bodies)",
        "",
        "| model | target | p50 ms | p99 ms | rps@1 | rps@16 | rps@64 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.target} | {r.cells[1].p50_ms:.3f} | {r.cells[1].p99_ms:.3f} "
            + " ".join(f"| {r.cells[c].rps:.0f}" for c in CONCURRENCY)
            + " |"
        )
    lines += [
        "",
        "CPU ms per request. Server: every process of the target (for the stack Ray's "
        "own, Serve's proxy, router and replicas, Triton's stubs; for standalone, "
        "tritonserver and its stubs). Client: the client process.",
        "",
        "| model | target | server@1 | server@16 | server@64 | client@1 | client@16 | client@64 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.target} "
            + " ".join(f"| {r.cells[c].cpu_ms_per_request:.2f}" for c in CONCURRENCY)
            + " "
            + " ".join(f"| {r.cells[c].client_ms_per_request:.2f}" for c in CONCURRENCY)
            + " |"
        )
    failed = [c for r in results for c in r.cells.values() if c.errors]
    if failed:
        lines += ["", "Failed requests (not counted):"]
        lines += [
            f"- {c.model} {c.target} c={c.concurrency}: {c.errors} ({c.first_error})"
            for c in failed
        ]

    ratios: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    lines += [
        "",
        "| model | added p50 ms | p50 ratio | p99 ratio | rps@1 ratio | rps@16 ratio "
        "| rps@64 ratio | outputs max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in settings.models:
        stack, alone = by_key.get((model, "stack")), by_key.get((model, "standalone"))
        if stack is None or alone is None:
            continue
        added = stack.cells[1].p50_ms - alone.cells[1].p50_ms
        row: dict[str, Any] = {
            "model": model,
            "added_p50_ms": added,
            "p50_ratio": _ratio(stack.cells[1].p50_ms, alone.cells[1].p50_ms),
            "p99_ratio": _ratio(stack.cells[1].p99_ms, alone.cells[1].p99_ms),
            "rps_ratio": {c: _ratio(stack.cells[c].rps, alone.cells[c].rps) for c in CONCURRENCY},
            "outputs_max_abs_diff": _compare_outputs(stack.output, alone.output),
        }
        ratios.append(row)
        lines.append(
            f"| {model} | {added:+.3f} | {row['p50_ratio']:.2f}x | {row['p99_ratio']:.2f}x "
            + " ".join(f"| {row['rps_ratio'][c]:.2f}x" for c in CONCURRENCY)
            + f" | {row['outputs_max_abs_diff']:.2g} |"
        )
        if model == "echo":
            ok = added <= TARGET_ADDED_P50_MS
            targets.append(
                {"name": "echo added p50 @1", "value_ms": added, "limit_ms": TARGET_ADDED_P50_MS}
                | {"pass": ok}
            )
        if model == "minilm":
            value = row["rps_ratio"][16]
            ok = value >= TARGET_EMBED_RPS_RATIO
            targets.append(
                {"name": "minilm rps@16 ratio", "value": value, "min": TARGET_EMBED_RPS_RATIO}
                | {"pass": ok}
            )
    lines += ["", "Targets:"]
    for t in targets:
        if "value_ms" in t:
            lines.append(
                f"- echo: added p50 at concurrency 1 = {t['value_ms']:+.3f} ms "
                f"(<= {TARGET_ADDED_P50_MS:g} ms): {_verdict(t['pass'])}"
            )
        else:
            lines.append(
                f"- minilm: stack/standalone rps@16 = {t['value']:.1%} "
                f"(>= {TARGET_EMBED_RPS_RATIO:.0%}): {_verdict(t['pass'])}"
            )
    for model, reason in meta.get("skipped", {}).items():
        lines.append(f"- {model}: SKIPPED ({reason})")
    if not targets and not meta.get("skipped"):
        lines.append("- none measured (both targets are needed)")
    defaults = meta.get("serve_env_defaults", [])
    env = (
        " ".join(
            f"{k}={v}" + (" (bench default)" if k in defaults else "")
            for k, v in settings.serve_env.items()
        )
        or "(none)"
    )
    lines += [
        "",
        f"Ray {meta['ray']}, Triton {triton}, Python {meta['python']}, httpx {meta['httpx']}; "
        f"client: {settings.client} ({settings.loop}); stack endpoint: "
        f"{settings.stack_endpoint}; serve env: {env}",
        f"Command: {meta['command']}",
    ]
    return "\n".join(lines), {"ratios": ratios, "targets": targets}


# ---- main ----


def _serve_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not key.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(choices)}, got {text!r}"
            )
        return list(dict.fromkeys(names))

    return parse


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=_names(MODELS),
        default=list(MODELS),
        help="comma-separated models (default echo,minilm)",
    )
    parser.add_argument(
        "--targets",
        type=_names(TARGETS),
        default=list(TARGETS),
        help="comma-separated targets (default stack,standalone)",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds measured per cell (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of warm-up per cell (default 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s per cell, 0.3 s warm-up"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--encoding",
        choices=["binary", "json"],
        default="binary",
        help="request bodies: binary tensor extension (default) or JSON",
    )
    parser.add_argument(
        "--serve-env",
        type=_serve_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable set before Ray starts (repeatable), "
        "e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1",
    )
    parser.add_argument(
        "--stack-endpoint",
        choices=["proxy", "direct"],
        default="proxy",
        help="the stack's Serve HTTP port (proxy, default) or the router replica's own "
        "port (direct; needs direct ingress)",
    )
    parser.add_argument(
        "--client",
        choices=["process", "inline"],
        default="process",
        help="run the client in a separate process (default) or in this one",
    )
    parser.add_argument(
        "--client-loop",
        choices=["uvloop", "asyncio"],
        default=_default_loop(),
        help="the client's event loop (default uvloop when installed)",
    )
    args = parser.parse_args(argv)
    env = {**os.environ, **dict(args.serve_env)}
    if args.stack_endpoint == "direct" and env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        parser.error("with RAY_SERVE_ENABLE_HA_PROXY=1, HAProxy is the stack's endpoint: use proxy")
    if args.stack_endpoint == "direct" and not direct_ingress_on(env):
        parser.error(
            "--stack-endpoint direct needs direct ingress: --serve-env "
            "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 (or RAY_SERVE_THROUGHPUT_OPTIMIZED=1)"
        )
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    return args


def _available(models: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Models whose ``config.pbtxt`` exists, and why the others are skipped."""
    kept: list[str] = []
    skipped: dict[str, str] = {}
    for model in models:
        config = MODEL_REPOSITORY / model / "config.pbtxt"
        if config.is_file():
            kept.append(model)
        else:
            skipped[model] = f"{config.relative_to(REPO_ROOT)} does not exist yet"
    return kept, skipped


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        print(f"({name}: {time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_client"]:
        return client_main()
    args = parse_args(argv)
    models, skipped = _available(args.models)
    for model, reason in skipped.items():
        print(f"skipping {model}: {reason}", file=sys.stderr)
    if not models:
        print("nothing to measure", file=sys.stderr)
        return 1
    settings = Settings(
        models=models,
        encoding=args.encoding,
        warmup_s=args.warmup,
        duration_s=args.duration,
        client=args.client,
        loop=args.client_loop,
        serve_env=serve_env_with_defaults(dict(args.serve_env)),
        stack_endpoint=args.stack_endpoint,
    )
    import httpx
    import ray

    cpus = os.cpu_count() or 1
    meta: dict[str, Any] = {
        "ray": ray.__version__,
        "httpx": httpx.__version__,
        "python": platform.python_version(),
        "cpus": cpus,
        "command": shlex.join([Path(sys.executable).name, "-m", "bench.stack", *argv]),
        "settings": asdict(settings),
        "skipped": skipped,
        "serve_env_defaults": sorted(set(settings.serve_env) - set(dict(args.serve_env))),
        "load_before": load_before(),
    }
    started = time.monotonic()
    results: list[ModelResult] = []
    for index, target in enumerate(args.targets):
        if index:
            time.sleep(SETTLE_S)
        with _stage(target):
            if target == "stack":
                results += measure_stack(settings, meta)
            else:
                results += measure_standalone(settings, meta)
    order = {m: i for i, m in enumerate(models)}
    results.sort(key=lambda r: (order[r.model], TARGETS.index(r.target)))
    report, data = render(results, settings, meta)
    print(report)
    print_totals(meta, started)
    if args.json is not None:
        payload = {"meta": meta, "results": [r.to_dict() for r in results], **data}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
