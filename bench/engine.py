"""In-process engine against the standalone ``tritonserver`` of the same Triton build.

Run with ``python -m bench.engine`` (``make bench``). One run measures the ``echo`` model
of ``model_repository`` three ways:

- **in-process**: ``app.triton.Server`` in this process, asyncio clients awaiting
  ``Model.infer``;
- **standalone gRPC** and **standalone HTTP**: the wheel's ``tritonserver`` in a
  subprocess, driven by ``tritonclient``. To be fair to the baseline, each standalone cell
  above concurrency 1 is measured with both client styles, asyncio clients
  (``tritonclient.*.aio``, one client shared by the tasks) and threads (one sync client
  per thread), and the higher requests/s is kept (a style under half the other's rps at
  16 is not tried at 64). At concurrency 1 the sync client on one thread is used: it has
  the lower latency of the two (an event loop only adds work).

Each path is measured with a small tensor (FP32 [1,16]) and a 4 MiB one (FP32 [1, 1<<20]),
with and without a busy Python thread in this process (a thread spinning pure-Python
work). The report has p50/p99 latency at concurrency 1 and requests/s at concurrency 1, 16
and 64, then the ratios and targets. Only one server runs at a time: the in-process server
is started, measured and stopped before the standalone one is started, measured and
stopped. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.triton import Options, Server
from bench._load import load_before, print_totals
from bench._standalone import StandaloneTriton

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
MODEL = "echo"
INPUT = "INPUT_FP32"
OUTPUT = "OUTPUT_FP32"
CONCURRENCY = (1, 16, 64)

TENSORS: dict[str, tuple[int, ...]] = {"small": (1, 16), "4MiB": (1, 1 << 20)}
PATHS = ("in-process", "standalone gRPC", "standalone HTTP")
TARGET_RPS_RATIO = 1.5  # in-process rps@16 >= 1.5 x standalone gRPC
TARGET_P50_RATIO = 1.0  # in-process p50 <= standalone gRPC
TARGET_BUSY_COST = 0.20  # busy-thread p50 cost < 20 %

ClientStyle = Literal["asyncio", "threads"]
SyncCall = Callable[[], None]
AsyncCall = Callable[[], Awaitable[None]]


# ---- results ----


@dataclass
class Cell:
    """One measurement: a path, a tensor, busy or not, one concurrency."""

    path: str
    tensor: str
    busy: bool
    concurrency: int
    client: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass
class Row:
    """The table's row for (path, tensor, busy)."""

    path: str
    tensor: str
    busy: bool
    cells: dict[int, Cell] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return self.cells[1].p50_ms

    @property
    def p99_ms(self) -> float:
        return self.cells[1].p99_ms

    def rps(self, concurrency: int) -> float:
        return self.cells[concurrency].rps


def _summarize(
    path: str,
    tensor: str,
    busy: bool,
    concurrency: int,
    client: str,
    latencies_s: list[float],
    seconds: float,
) -> Cell:
    ordered = sorted(latencies_s)  # empty when no request finished inside the window

    def pct(q: float) -> float:
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return Cell(
        path=path,
        tensor=tensor,
        busy=busy,
        concurrency=concurrency,
        client=client,
        requests=len(ordered),
        seconds=seconds,
        rps=len(ordered) / seconds,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        mean_ms=statistics.fmean(ordered) * 1e3 if ordered else math.nan,
    )


# ---- load generators ----


WARMUP_ROUNDS = 2  # warm-up lasts until this many requests per worker completed...
WARMUP_LIMIT_S = 60.0  # ...and gives up after this long


class Window:
    """Warm-up, then the measured window: a request counts if it completes inside it.

    Warm-up lasts ``warmup_s`` and at least until ``WARMUP_ROUNDS`` requests per worker
    completed: the first large batches are slow (the python backend grows its shared
    memory), and they must not fall into the window.
    """

    def __init__(self, concurrency: int, warmup_s: float, duration_s: float) -> None:
        self.opened = time.perf_counter()
        self.warmup_until = self.opened + warmup_s
        self.needed = WARMUP_ROUNDS * concurrency
        self.duration_s = duration_s
        self.completed = 0  # warm-up requests finished (a rough count is enough)
        self.start = math.inf
        self.end = math.inf

    def record(self, t0: float, t1: float, out: list[float]) -> None:
        if self.start <= t1 <= self.end:
            out.append(t1 - t0)
        elif t1 < self.start:
            self.completed += 1

    def poll(self) -> bool:
        """Open the window once warm; ``False`` while still warming up."""
        now = time.perf_counter()
        if self.start != math.inf:
            return True
        if now >= self.warmup_until and self.completed >= self.needed:
            self.start, self.end = now, now + self.duration_s
            return True
        if now - self.opened > WARMUP_LIMIT_S:
            raise RuntimeError(f"warm-up did not finish within {WARMUP_LIMIT_S} s")
        return False


async def drive_async(
    make_call: Callable[[], AsyncCall], concurrency: int, warmup_s: float, duration_s: float
) -> list[float]:
    """``concurrency`` tasks on this loop, each awaiting its call back to back."""
    calls = [make_call() for _ in range(concurrency)]
    await calls[0]()  # connect / first-request costs stay out of the window
    window = Window(concurrency, warmup_s, duration_s)
    clock = time.perf_counter

    async def worker(call: AsyncCall, out: list[float]) -> None:
        while clock() < window.end:
            t0 = clock()
            await call()
            window.record(t0, clock(), out)
            window.poll()

    results: list[list[float]] = [[] for _ in range(concurrency)]
    await asyncio.gather(*(worker(c, r) for c, r in zip(calls, results, strict=True)))
    return [x for r in results for x in r]


def drive_threads(
    make_call: Callable[[], tuple[SyncCall, SyncCall]],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> list[float]:
    """``concurrency`` threads, each with its own client made by ``make_call`` -> (call, close)."""
    ready = threading.Barrier(concurrency + 1)
    results: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    window = Window(concurrency, warmup_s, duration_s)
    lock = threading.Lock()
    clock = time.perf_counter

    def worker(out: list[float]) -> None:
        try:
            call, close = make_call()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            call()  # connect outside the window
            ready.wait()
            while clock() < window.end:
                t0 = clock()
                call()
                t1 = clock()
                with lock:
                    window.record(t0, t1, out)
                    window.poll()
        except BaseException as exc:
            errors.append(exc)
            window.end = -math.inf  # stop the other threads too
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        with lock:  # warm-up starts once every thread has its client
            window.opened = time.perf_counter()
            window.warmup_until = window.opened + warmup_s
        ready.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [x for r in results for x in r]


@contextlib.contextmanager
def busy_thread(enabled: bool) -> Iterator[None]:
    """A thread spinning pure-Python work (it holds the GIL whenever it can)."""
    if not enabled:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, name="busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---- the three paths ----


def _check_echo(out: npt.NDArray[Any], data: npt.NDArray[Any], what: str) -> None:
    if out.shape != data.shape or not np.array_equal(out, data):
        raise RuntimeError(f"{what}: echo returned something else than its input")


def measure_in_process(
    tensors: Sequence[str],
    busy_modes: Sequence[bool],
    warmup_s: float,
    duration_s: float,
    meta: dict[str, Any],
) -> list[Row]:
    rows: list[Row] = []
    with Server(Options(model_repository=MODEL_REPOSITORY)) as server:
        meta["triton"] = server.metadata().version
        model = server.load(MODEL)

        async def run_row(tensor: str, busy: bool) -> Row:
            data = np.random.default_rng(0).random(TENSORS[tensor], dtype=np.float32)
            response = await model.infer({INPUT: data})
            _check_echo(response.outputs[OUTPUT], data, "in-process")
            row = Row("in-process", tensor, busy)

            def make_call() -> AsyncCall:
                inputs = {INPUT: data}

                async def call() -> None:
                    await model.infer(inputs)

                return call

            with busy_thread(busy):
                for conc in CONCURRENCY:
                    lat = await drive_async(make_call, conc, warmup_s, duration_s)
                    row.cells[conc] = _summarize(
                        row.path, tensor, busy, conc, "asyncio", lat, duration_s
                    )
                    _progress(row.cells[conc])
            return row

        for tensor in tensors:
            for busy in busy_modes:
                rows.append(asyncio.run(run_row(tensor, busy)))
    return rows


def _grpc_async(url: str, data: npt.NDArray[Any]) -> tuple[Callable[[], AsyncCall], AsyncCall]:
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(url)

    def make_call() -> AsyncCall:
        inp = grpcaio.InferInput(INPUT, list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        inputs = [inp]

        async def call() -> None:
            result = await client.infer(MODEL, inputs)
            result.as_numpy(OUTPUT)

        return call

    async def close() -> None:
        await client.close()

    return make_call, close


def _http_async(url: str, data: npt.NDArray[Any]) -> tuple[Callable[[], AsyncCall], AsyncCall]:
    import tritonclient.http.aio as httpaio

    client = httpaio.InferenceServerClient(url, conn_limit=max(CONCURRENCY))

    def make_call() -> AsyncCall:
        inp = httpaio.InferInput(INPUT, list(data.shape), "FP32")
        inp.set_data_from_numpy(data, binary_data=True)
        inputs = [inp]

        async def call() -> None:
            result = await client.infer(MODEL, inputs)
            result.as_numpy(OUTPUT)

        return call

    async def close() -> None:
        await client.close()

    return make_call, close


def _grpc_sync(url: str, data: npt.NDArray[Any]) -> tuple[SyncCall, SyncCall]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput(INPUT, list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    inputs = [inp]

    def call() -> None:
        client.infer(MODEL, inputs).as_numpy(OUTPUT)

    return call, client.close


def _http_sync(url: str, data: npt.NDArray[Any]) -> tuple[SyncCall, SyncCall]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)  # made in its thread: gevent hubs are per thread
    inp = httpclient.InferInput(INPUT, list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    inputs = [inp]

    def call() -> None:
        client.infer(MODEL, inputs).as_numpy(OUTPUT)

    return call, client.close


def _standalone_cell(
    protocol: str,
    style: ClientStyle,
    url: str,
    data: npt.NDArray[Any],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> list[float]:
    if style == "threads":
        sync_factory = _grpc_sync if protocol == "gRPC" else _http_sync
        return drive_threads(lambda: sync_factory(url, data), concurrency, warmup_s, duration_s)
    async_factory = _grpc_async if protocol == "gRPC" else _http_async

    async def run() -> list[float]:
        make_call, close = async_factory(url, data)
        try:
            return await drive_async(make_call, concurrency, warmup_s, duration_s)
        finally:
            await close()

    return asyncio.run(run())


PRUNE_RATIO = 0.5  # a client style under half the other's rps@16 is not tried at 64


class _Standalone:
    """The standalone server, restarted when it breaks (e.g. its python stub died)."""

    def __init__(self) -> None:
        self.server: StandaloneTriton | None = None

    def start(self) -> StandaloneTriton:
        if self.server is None:
            server = StandaloneTriton(MODEL_REPOSITORY, [MODEL])
            self.server = server.__enter__()  # stops what it started if it fails
        return self.server

    def restart(self) -> StandaloneTriton:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def url(self, protocol: str) -> str:
        server = self.start()
        return server.grpc_url if protocol == "gRPC" else server.http_url


def measure_standalone(
    protocols: Sequence[str],
    tensors: Sequence[str],
    busy_modes: Sequence[bool],
    styles: Sequence[ClientStyle],
    warmup_s: float,
    duration_s: float,
    meta: dict[str, Any],
) -> list[Row]:
    rows: list[Row] = []
    standalone = _Standalone()

    def cell(
        path: str, tensor: str, busy: bool, conc: int, style: ClientStyle, data: npt.NDArray[Any]
    ) -> Cell:
        protocol = path.split()[-1]
        lat: list[float] = []
        client: str = style
        for attempt in (1, 2):
            try:
                url = standalone.url(protocol)
                lat = _standalone_cell(protocol, style, url, data, conc, warmup_s, duration_s)
                break
            except Exception as exc:  # restart once, then report the failure in the table
                print(f"  {path} {style} c={conc} failed: {exc}", file=sys.stderr)
                client = f"{style}-failed"
                if attempt == 1:
                    print("  restarting the standalone server", file=sys.stderr)
                    standalone.restart()
                    client = style
        result = _summarize(path, tensor, busy, conc, client, lat, duration_s)
        _progress(result)
        return result

    try:
        for protocol in protocols:
            path = f"standalone {protocol}"
            for tensor in tensors:
                data = np.random.default_rng(0).random(TENSORS[tensor], dtype=np.float32)
                meta["standalone_triton"] = _check_standalone(
                    protocol, standalone.url(protocol), data
                )
                for busy in busy_modes:
                    row = Row(path, tensor, busy)
                    with busy_thread(busy):
                        # At concurrency 1 a blocking call on one thread is the fastest way
                        # to use tritonclient (no event loop in the way): only that is used.
                        row.cells[1] = cell(path, tensor, busy, 1, styles[-1], data)
                        at16 = [cell(path, tensor, busy, 16, style, data) for style in styles]
                        row.cells[16] = max(at16, key=lambda c: c.rps)
                        # A style far behind at 16 is not tried at 64 (saves minutes).
                        keep = [
                            style
                            for style, c16 in zip(styles, at16, strict=True)
                            if c16.rps >= PRUNE_RATIO * row.cells[16].rps
                        ]
                        at64 = [cell(path, tensor, busy, 64, style, data) for style in keep]
                        row.cells[64] = max(at64, key=lambda c: c.rps)
                    rows.append(row)
    finally:
        standalone.stop()
    return rows


def _check_standalone(protocol: str, url: str, data: npt.NDArray[Any]) -> str:
    """One request checked for correctness; returns the server's Triton version."""
    if protocol == "gRPC":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    client = client_module.InferenceServerClient(url)
    try:
        inp = client_module.InferInput(INPUT, list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        _check_echo(client.infer(MODEL, [inp]).as_numpy(OUTPUT), data, f"standalone {protocol}")
        metadata = client.get_server_metadata()
        version = metadata.version if protocol == "gRPC" else metadata["version"]
        return str(version)
    finally:
        client.close()


# ---- report ----


def _progress(cell: Cell) -> None:
    print(
        f"  {cell.path:<16} {cell.tensor:<5} busy={'yes' if cell.busy else 'no ':<3} "
        f"c={cell.concurrency:<3} {cell.client:<8} {cell.requests:>7} req "
        f"{cell.rps:>9.1f} rps  p50 {cell.p50_ms:8.3f} ms  p99 {cell.p99_ms:8.3f} ms",
        file=sys.stderr,
        flush=True,
    )


def _find(rows: Sequence[Row], path: str, tensor: str, busy: bool) -> Row | None:
    for row in rows:
        if (row.path, row.tensor, row.busy) == (path, tensor, busy):
            return row
    return None


def render(rows: Sequence[Row], meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The markdown report and the ratios/targets as data."""
    triton = meta.get("triton") or meta.get("standalone_triton", "?")
    if meta.get("standalone_triton", triton) != triton:
        triton = f"{triton} in-process, {meta['standalone_triton']} standalone"
    lines = [
        f"## echo: in-process engine vs standalone tritonserver (Triton {triton}, "
        f"{meta['cpus']} CPUs, {meta['duration_s']} s per cell, "
        f"GIL switch interval {meta['switch_interval_ms']:g} ms)",
        "",
        "| path | tensor | busy thread | p50 ms | p99 ms | rps@1 | rps@16 | rps@64 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.path} | {row.tensor} | {'yes' if row.busy else 'no'} "
            f"| {row.p50_ms:.3f} | {row.p99_ms:.3f} "
            + " ".join(f"| {row.rps(c):.0f}" for c in CONCURRENCY)
            + " |"
        )
    standalone = [row for row in rows if row.path != "in-process"]
    if standalone:
        lines += ["", "Standalone client style per cell (tritonclient asyncio or sync in threads):"]
        lines += [
            f"- {row.path}, {row.tensor}, {'busy' if row.busy else 'idle'}: "
            + ", ".join(f"c{c} {cell.client}" for c, cell in row.cells.items())
            for row in standalone
        ]

    ratios: dict[str, Any] = {"throughput": [], "latency": [], "busy_cost": []}
    lines += [
        "",
        "| tensor | busy thread | in-process rps@16 / gRPC rps@16 | target | "
        "in-process p50 / gRPC p50 | target |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for tensor in TENSORS:
        for busy in (False, True):
            mine = _find(rows, "in-process", tensor, busy)
            grpc = _find(rows, "standalone gRPC", tensor, busy)
            if mine is None or grpc is None:
                continue
            rps_ratio = mine.rps(16) / grpc.rps(16)
            p50_ratio = mine.p50_ms / grpc.p50_ms
            rps_ok = rps_ratio >= TARGET_RPS_RATIO
            p50_ok = p50_ratio <= TARGET_P50_RATIO
            ratios["throughput"].append(
                {"tensor": tensor, "busy": busy, "ratio": rps_ratio, "pass": rps_ok}
            )
            ratios["latency"].append(
                {"tensor": tensor, "busy": busy, "ratio": p50_ratio, "pass": p50_ok}
            )
            lines.append(
                f"| {tensor} | {'yes' if busy else 'no'} | {rps_ratio:.2f}x "
                f"| >= {TARGET_RPS_RATIO}x {_verdict(rps_ok)} | {p50_ratio:.2f}x "
                f"| <= {TARGET_P50_RATIO:.1f}x {_verdict(p50_ok)} |"
            )
    lines += [
        "",
        "| path | tensor | idle p50 ms | busy p50 ms | busy-thread cost (busy/idle - 1) | target "
        "| idle mean ms | busy mean ms | cost on the mean |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for path in PATHS:
        for tensor in TENSORS:
            idle = _find(rows, path, tensor, False)
            busy_row = _find(rows, path, tensor, True)
            if idle is None or busy_row is None:
                continue
            cost = busy_row.p50_ms / idle.p50_ms - 1
            ok = cost < TARGET_BUSY_COST
            # The busy-thread latency is bimodal (the loop either wins the GIL back at once
            # or waits a switch interval), so the mean at concurrency 1 is shown as well.
            idle_mean, busy_mean = idle.cells[1].mean_ms, busy_row.cells[1].mean_ms
            mean_cost = busy_mean / idle_mean - 1
            if path == "in-process":
                ratios["busy_cost"].append(
                    {"tensor": tensor, "cost": cost, "mean_cost": mean_cost, "pass": ok}
                )
            target = f"< {TARGET_BUSY_COST:.0%} {_verdict(ok)}" if path == "in-process" else "-"
            lines.append(
                f"| {path} | {tensor} | {idle.p50_ms:.3f} | {busy_row.p50_ms:.3f} "
                f"| {cost:+.0%} | {target} | {idle_mean:.3f} | {busy_mean:.3f} "
                f"| {mean_cost:+.0%} |"
            )
    verdicts = [v["pass"] for group in ratios.values() for v in group]
    if verdicts:
        lines += [
            "",
            f"Targets: {sum(verdicts)}/{len(verdicts)} PASS "
            f"(throughput@16 >= {TARGET_RPS_RATIO}x gRPC, p50@1 <= gRPC, "
            f"busy-thread p50 cost < {TARGET_BUSY_COST:.0%}).",
        ]
    return "\n".join(lines), ratios


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ---- main ----


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: a cell without requests gets ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds measured per cell (default 2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="seconds of warm-up per cell (default 0.5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 0.3 s per cell, 0.1 s warm-up, small tensor only unless --tensors",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["in-process", "grpc", "http"],
        default=["in-process", "grpc", "http"],
        help="which paths to measure (default all)",
    )
    parser.add_argument(
        "--tensors", nargs="+", choices=list(TENSORS), default=None, help="tensors (default all)"
    )
    parser.add_argument(
        "--busy", choices=["both", "idle", "busy"], default="both", help="busy-thread modes"
    )
    parser.add_argument(
        "--standalone-client",
        choices=["best", "asyncio", "threads"],
        default="best",
        help="tritonclient style for the standalone server; best measures both (default)",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this process (default: Python's, 5 ms); it bounds "
        "how long a thread waits for the GIL held by the busy thread",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 0.3, 0.1
    if args.tensors is None:
        args.tensors = ["small"] if args.quick else list(TENSORS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    busy_modes = {"both": [False, True], "idle": [False], "busy": [True]}[args.busy]
    styles: list[ClientStyle] = (
        ["asyncio", "threads"] if args.standalone_client == "best" else [args.standalone_client]
    )
    protocols = [p for p, flag in (("gRPC", "grpc"), ("HTTP", "http")) if flag in args.paths]
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    started = time.monotonic()
    gc.collect()
    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "standalone_client": args.standalone_client,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "load_before": load_before(),
    }
    rows: list[Row] = []
    if "in-process" in args.paths:
        print("in-process engine:", file=sys.stderr)
        rows += measure_in_process(args.tensors, busy_modes, args.warmup, args.duration, meta)
    if protocols:
        print("standalone tritonserver:", file=sys.stderr)
        rows += measure_standalone(
            protocols, args.tensors, busy_modes, styles, args.warmup, args.duration, meta
        )
    report, ratios = render(rows, meta)
    print(report)
    print_totals(meta, started)
    if args.json is not None:
        payload = {
            "meta": meta,
            "rows": [
                {
                    "path": r.path,
                    "tensor": r.tensor,
                    "busy": r.busy,
                    "cells": [asdict(c) for c in r.cells.values()],
                }
                for r in rows
            ],
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(_no_nan(payload), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
