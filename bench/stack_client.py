"""The project's own load client: one ``httpx.AsyncClient`` over KServe v2 HTTP.

``bench.stack`` runs it after ``perf_analyzer`` as the secondary measurement (it was the
only one before): both targets get the same request bytes (binary tensor extension by
default, ``--encoding json`` for JSON bodies) from one ``httpx.AsyncClient``
(HTTP/1.1, as many connections as the highest concurrency) in a separate, Ray-free
client process (``python -m bench.stack_client``, a ``ClientJob`` as JSON on stdin;
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
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.protocol.kserve_v2 import (
    HEADER_LENGTH_HEADER,
    decode_infer_response,
    encode_infer_request,
    parse_header_length,
    request_headers,
)
from app.triton.tensors import DataType
from bench.common.measure import Cell, Window
from bench.common.net import OPENER
from bench.common.paths import REPO_ROOT
from bench.common.report import cell_line, progress
from bench.hop_cpu import CpuSnapshot, cpu_seconds, cpu_snapshot, process_tree

ECHO_SHAPE = (1, 16)
EMBED_TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."
EMBED_DIM = 384

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


def build_request(model: str, encoding: str) -> RequestSpec:
    """The request sent for ``model``, in the binary tensor extension or as JSON."""
    if model == "echo":
        values = echo_values()
        tensor = ("INPUT_FP32", DataType.FP32, np.array(values, np.float32).reshape(ECHO_SHAPE))
        output, expected = "OUTPUT_FP32", values
    elif model == "minilm":
        text = np.array([[EMBED_TEXT.encode()]], dtype=np.object_)
        tensor = ("TEXT", DataType.BYTES, text)
        output, expected = "EMBEDDING", None
    else:
        raise ValueError(f"unknown model {model!r}")
    body, header_length = encode_infer_request([tensor], [output], binary=encoding == "binary")
    headers = request_headers(header_length)
    return RequestSpec(model, f"/v2/models/{model}/infer", body, headers, output, expected)


def decode_output(content: bytes, header_length: str | None, name: str) -> list[float]:
    """The FP32 output ``name`` of an infer response (binary framing or JSON)."""
    outputs = decode_infer_response(content, parse_header_length(header_length))
    if name not in outputs:
        raise RuntimeError(f"response has no output {name!r}: {sorted(outputs)}")
    datatype, array = outputs[name]
    if datatype is not DataType.FP32:
        raise RuntimeError(f"output {name} is {datatype.name}, expected FP32")
    return [float(v) for v in array.ravel()]


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
class ClientCell(Cell):
    """A cell of one model on one target, with the CPU its processes and the client used."""

    target: str
    model: str
    errors: int
    server_cpu_s: float = math.nan  # CPU time of the target's processes in the window
    client_cpu_s: float = math.nan  # CPU time of the client process in the window
    first_error: str = ""

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1e3 / self.requests if self.requests else math.nan

    @property
    def client_ms_per_request(self) -> float:
        return self.client_cpu_s * 1e3 / self.requests if self.requests else math.nan


class CpuWindow(Window):
    """A window that also reads the CPU time of the client and (``probe``) of the
    target's processes when it opens and when it ends."""

    def __init__(
        self,
        concurrency: int,
        warmup_s: float,
        duration_s: float,
        probe: Callable[[], CpuSnapshot] | None = None,
    ) -> None:
        super().__init__(concurrency, warmup_s, duration_s)
        self.probe = probe
        self.cpu_start: CpuSnapshot | None = None
        self.cpu_end: CpuSnapshot | None = None
        self.client_cpu = (math.nan, math.nan)

    def poll(self) -> bool:
        opened = super().poll()
        if opened:
            self.client_cpu = (time.process_time(), math.nan)
            if self.probe is not None:
                self.cpu_start = self.probe()
            delay = self.end - time.perf_counter()
            asyncio.get_running_loop().call_later(delay, self.close_probe)
        return opened

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


async def _measure_cell(
    client: Any,
    spec: RequestSpec,
    target: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    cpu_root: int,
) -> ClientCell:
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

    window = CpuWindow(concurrency, warmup_s, duration_s, probe)
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
    latencies = [x for r in results for x in r]
    return ClientCell.from_latencies(
        concurrency,
        latencies,
        window.seconds or duration_s,
        target=target,
        model=spec.model,
        errors=len(failures),
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
    cells: dict[int, ClientCell] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "output": self.output,
            "cells": [asdict(c) for c in self.cells.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResult:
        cells = {int(c["concurrency"]): ClientCell(**c) for c in data["cells"]}
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
        [sys.executable, "-m", "bench.stack_client"],
        input=job.to_json(),
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed with exit code {proc.returncode}")
    return ModelResult.from_dict(json.loads(proc.stdout))


def _progress(cell: ClientCell) -> None:
    errors = f"  {cell.errors} errors: {cell.first_error}" if cell.errors else ""
    progress(
        f"  {cell.target:<10} {cell.model:<7} {cell_line(cell)}  CPU/req server "
        f"{cell.cpu_ms_per_request:6.2f} ms client {cell.client_ms_per_request:5.2f} ms{errors}"
    )


def check_target(url: str, spec: RequestSpec, timeout_s: float = REQUEST_TIMEOUT_S) -> list[float]:
    """Send ``spec`` once (standard library only) and check the answer; its output."""
    request = urllib.request.Request(url + spec.path, data=spec.body, headers=spec.headers)
    try:
        with OPENER.open(request, timeout=timeout_s) as response:
            content = response.read()
            header_length = response.headers.get(HEADER_LENGTH_HEADER)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{spec.model}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    values = decode_output(content, header_length, spec.output)
    check_output(spec, values)
    return values


if __name__ == "__main__":
    sys.exit(client_main())
