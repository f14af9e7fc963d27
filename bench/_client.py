"""The project's own load client: one ``httpx.AsyncClient`` over KServe v2 HTTP.

``bench.stack`` runs it after ``perf_analyzer`` as the secondary measurement (it was the
only one before): both targets get the same request bytes (binary tensor extension by
default, ``--encoding json`` for JSON bodies) from one ``httpx.AsyncClient``
(HTTP/1.1, as many connections as the highest concurrency) in a separate, Ray-free
client process (``python -m bench._client``, a ``ClientJob`` as JSON on stdin;
``--client inline`` runs it in the bench's process), on uvloop when it is installed.
Python tops out near 800 requests/s here, so at high rates this client, not the
server, is what is measured: its CPU per request is reported next to the server's.

Each cell warms up on its own, then counts the requests that complete inside its
window; p50/p99 latency and requests/s per concurrency, and the CPU time of the
target's processes and of the client during the window.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.hop_cpu import CpuSnapshot, cpu_seconds, cpu_snapshot, process_tree

REPO_ROOT = Path(__file__).resolve().parent.parent
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"

ECHO_SHAPE = (1, 16)
EMBED_TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."
EMBED_DIM = 384

WARMUP_ROUNDS = 2  # warm-up lasts at least until this many requests per worker completed
WARMUP_LIMIT_S = 120.0  # ...and gives up after this long
WINDOW_LATENCIES = 20  # a window lasts at least this many warm-up latencies...
MAX_WINDOW_FACTOR = 10.0  # ...but no longer than this many times --duration
MAX_WINDOW_S = 60.0  # ...nor than this
MAX_ERRORS = 50  # a cell stops after this many failed requests
REQUEST_TIMEOUT_S = 60.0


def echo_values() -> list[float]:
    """The echo input: exact in FP32 and in JSON."""
    return [(i + 1) / 8.0 for i in range(math.prod(ECHO_SHAPE))]


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
        values = echo_values()
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
        [sys.executable, "-m", "bench._client"],
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


def check_target(url: str, spec: RequestSpec, timeout_s: float = REQUEST_TIMEOUT_S) -> list[float]:
    """Send ``spec`` once (standard library only) and check the answer; its output."""
    request = urllib.request.Request(url + spec.path, data=spec.body, headers=spec.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            content = response.read()
            header_length = response.headers.get(HEADER_LENGTH_HEADER)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{spec.model}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    values = decode_output(content, header_length, spec.output)
    check_output(spec, values)
    return values


if __name__ == "__main__":
    sys.exit(client_main())
