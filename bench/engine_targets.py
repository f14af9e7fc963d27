"""``bench.engine``'s three paths: the in-process engine, and the standalone
``tritonserver`` over gRPC and HTTP through tritonclient (asyncio or threads)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.triton import Options, Server
from bench.common.paths import MODEL_REPOSITORY
from bench.common.report import cell_line, progress
from bench.common.standalone import StandaloneTriton
from bench.engine_cases import CONCURRENCY, INPUT, MODEL, OUTPUT, TENSORS, EngineCell, Row
from bench.engine_drivers import AsyncCall, SyncCall, busy_thread, drive_async, drive_threads

ClientStyle = Literal["asyncio", "threads"]
PRUNE_RATIO = 0.5  # a client style under half the other's rps@16 is not tried at 64


def _cell(
    path: str,
    tensor: str,
    busy: bool,
    concurrency: int,
    client: str,
    latencies_s: list[float],
    seconds: float,
) -> EngineCell:
    cell = EngineCell.from_latencies(
        concurrency, latencies_s, seconds, path=path, tensor=tensor, busy=busy, client=client
    )
    progress(
        f"  {cell.path:<16} {cell.tensor:<5} busy={'yes' if cell.busy else 'no ':<3} "
        f"{cell.client:<8} {cell_line(cell)}"
    )
    return cell


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
                    row.cells[conc] = _cell(
                        row.path, tensor, busy, conc, "asyncio", lat, duration_s
                    )
            return row

        for tensor in tensors:
            for busy in busy_modes:
                rows.append(asyncio.run(run_row(tensor, busy)))
    return rows


def _client_module(protocol: str, style: ClientStyle) -> ModuleType:
    if protocol == "gRPC":
        if style == "asyncio":
            import tritonclient.grpc.aio as grpc_aio

            return grpc_aio
        import tritonclient.grpc as grpc_sync

        return grpc_sync
    if style == "asyncio":
        import tritonclient.http.aio as http_aio

        return http_aio
    import tritonclient.http as http_sync

    return http_sync


def _infer_input(module: ModuleType, protocol: str, data: npt.NDArray[Any]) -> Any:
    inp = module.InferInput(INPUT, list(data.shape), "FP32")
    if protocol == "gRPC":
        inp.set_data_from_numpy(data)
    else:
        inp.set_data_from_numpy(data, binary_data=True)
    return inp


def _async_client(
    protocol: str, url: str, data: npt.NDArray[Any]
) -> tuple[Callable[[], AsyncCall], AsyncCall]:
    """One tritonclient asyncio client shared by every task; a call per task."""
    module = _client_module(protocol, "asyncio")
    extra = {} if protocol == "gRPC" else {"conn_limit": max(CONCURRENCY)}
    client = module.InferenceServerClient(url, **extra)

    def make_call() -> AsyncCall:
        inputs = [_infer_input(module, protocol, data)]

        async def call() -> None:
            result = await client.infer(MODEL, inputs)
            result.as_numpy(OUTPUT)

        return call

    async def close() -> None:
        await client.close()

    return make_call, close


def _sync_client(protocol: str, url: str, data: npt.NDArray[Any]) -> tuple[SyncCall, SyncCall]:
    """A blocking tritonclient client, made in the thread that uses it (the HTTP one's
    gevent hubs are per thread)."""
    module = _client_module(protocol, "threads")
    client = module.InferenceServerClient(url)
    inputs = [_infer_input(module, protocol, data)]

    def call() -> None:
        client.infer(MODEL, inputs).as_numpy(OUTPUT)

    return call, client.close


def _standalone_latencies(
    protocol: str,
    style: ClientStyle,
    url: str,
    data: npt.NDArray[Any],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> list[float]:
    if style == "threads":
        return drive_threads(
            lambda: _sync_client(protocol, url, data), concurrency, warmup_s, duration_s
        )

    async def run() -> list[float]:
        make_call, close = _async_client(protocol, url, data)
        try:
            return await drive_async(make_call, concurrency, warmup_s, duration_s)
        finally:
            await close()

    return asyncio.run(run())


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
    ) -> EngineCell:
        protocol = path.split()[-1]
        lat: list[float] = []
        client: str = style
        for attempt in (1, 2):
            try:
                url = standalone.url(protocol)
                lat = _standalone_latencies(protocol, style, url, data, conc, warmup_s, duration_s)
                break
            except Exception as exc:  # restart once, then report the failure in the table
                print(f"  {path} {style} c={conc} failed: {exc}", file=sys.stderr)
                client = f"{style}-failed"
                if attempt == 1:
                    print("  restarting the standalone server", file=sys.stderr)
                    standalone.restart()
                    client = style
        return _cell(path, tensor, busy, conc, client, lat, duration_s)

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
    module = _client_module(protocol, "threads")
    client = module.InferenceServerClient(url)
    try:
        inp = module.InferInput(INPUT, list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        _check_echo(client.infer(MODEL, [inp]).as_numpy(OUTPUT), data, f"standalone {protocol}")
        metadata = client.get_server_metadata()
        version = metadata.version if protocol == "gRPC" else metadata["version"]
        return str(version)
    finally:
        client.close()
