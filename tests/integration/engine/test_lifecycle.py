"""Server lifecycle and model control against the real library (the pure parts, errors
and ``Options`` validation, are unit tests)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.triton import (
    InvalidArgumentError,
    ModelState,
    Options,
    Server,
    TritonError,
    UnavailableError,
)
from tests.support import procs


def test_metadata_names_the_build(server: Server) -> None:
    meta = server.metadata()
    assert meta.version.startswith("2.")
    assert "model_repository" in meta.extensions
    assert server.install.source in ("TRITON_HOME", "ngc", "pytriton-wheel")
    assert server.live() and server.ready()


def test_model_metadata_and_config(server: Server) -> None:
    meta = server.model("echo").metadata()
    assert meta.platform == "python"
    assert {t.name for t in meta.inputs} >= {"INPUT_FP32", "INPUT_BYTES"}
    config = server.model("echo").config()
    assert config.max_batch_size == 64
    assert config.dynamic_batching is not None
    assert server.model("streamer").config().decoupled


def test_repository_index_lists_unloaded_models(server: Server) -> None:
    index = {e.name: e for e in server.repository_index()}
    assert index["echo"].state == ModelState.READY
    assert "invalid_config" in index
    ready_only = {e.name for e in server.repository_index(ready_only=True)}
    assert "echo" in ready_only and "invalid_config" not in ready_only


def test_invalid_config_reports_tritons_reason(server: Server) -> None:
    with pytest.raises(TritonError) as info:
        server.load("invalid_config")
    assert "dim" in str(info.value)
    entry = next(e for e in server.repository_index() if e.name == "invalid_config")
    assert entry.state == ModelState.UNAVAILABLE
    assert "dim" in entry.reason
    assert server.model("echo").ready()  # the others keep serving


def test_load_unknown_model(server: Server) -> None:
    with pytest.raises(TritonError, match="no_such_model"):
        server.load("no_such_model")


def test_statistics_and_metrics(server: Server) -> None:
    asyncio.run(server.model("echo").infer({"INPUT_FP32": np.ones((1, 2), np.float32)}))
    # Triton counts a request when it releases it, just after the response is delivered.
    deadline = time.monotonic() + 5
    stats = server.model("echo").statistics()
    while stats.inference_count < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = server.model("echo").statistics()
    assert stats.inference_count >= 1
    assert stats.inference_stats.success.count >= 1
    text = server.metrics()
    assert 'nv_inference_request_success{model="echo",version="1"}' in text


def test_load_unload_config_override_and_dependents(model_repository: Path) -> None:
    with Server(Options(model_repository=model_repository)) as srv:
        srv.load("ensemble_pipeline")
        assert srv.model("ens_scale").ready()
        srv.unload("ensemble_pipeline", unload_dependents=True, wait_until_unloaded=True)
        index = {e.name: e.state for e in srv.repository_index()}
        assert index["ensemble_pipeline"] != ModelState.READY
        assert index["ens_scale"] != ModelState.READY

        override = {"version_policy": {"specific": {"versions": [1]}}}
        srv.load("versioned", config=override)
        assert srv.model("versioned", 1).ready()
        assert not srv.model("versioned", 2).ready()
        with pytest.raises(InvalidArgumentError):
            srv.load("versioned", files={"model.py": b""})


def test_two_servers_and_restart_leave_nothing_behind(model_repository: Path) -> None:
    me = os.getpid()
    before_children = set(procs.children(me))
    first = Server(Options(model_repository=model_repository)).start()
    second = Server(Options(model_repository=model_repository)).start()
    assert first.shm_prefix != second.shm_prefix
    first.load("echo")
    second.load("echo")

    async def both() -> None:
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        a, b = await asyncio.gather(
            first.model("echo").infer({"INPUT_FP32": x}),
            second.model("echo").infer({"INPUT_FP32": x + 1}),
        )
        np.testing.assert_array_equal(a.outputs["OUTPUT_FP32"], x)
        np.testing.assert_array_equal(b.outputs["OUTPUT_FP32"], x + 1)

    asyncio.run(both())
    assert set(procs.children(me)) - before_children  # the python backend's stubs run
    first.stop()
    first.stop()  # idempotent
    asyncio.run(both_after_first_stopped(second))
    second.stop()
    with pytest.raises(UnavailableError):
        first.start()
    third = Server(Options(model_repository=model_repository)).start()  # restart in-process
    third.load("echo")
    asyncio.run(third.model("echo").infer({"INPUT_FP32": np.ones((1, 1), np.float32)}))
    third.stop()
    deadline = time.monotonic() + 10
    while set(procs.children(me)) - before_children and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (set(procs.children(me)) - before_children)
    for srv in (first, second, third):
        assert procs.shm_files_with_prefix(srv.shm_prefix) == []


async def both_after_first_stopped(second: Server) -> None:
    response = await second.model("echo").infer({"INPUT_FP32": np.ones((1, 1), np.float32)})
    assert response.outputs["OUTPUT_FP32"][0, 0] == 1


def test_stop_with_requests_in_flight(model_repository: Path) -> None:
    srv = Server(Options(model_repository=model_repository, exit_timeout_s=10)).start()
    srv.load("echo")

    async def scenario() -> list[object]:
        x = np.ones((1, 1), np.float32)
        tasks = [
            asyncio.create_task(
                srv.model("echo").infer({"INPUT_FP32": x}, parameters={"delay_ms": 300})
            )
            for _ in range(4)
        ]
        await asyncio.sleep(0.1)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=20)
        await asyncio.to_thread(stopper.join, 20)
        return results

    results = asyncio.run(scenario())
    assert not srv.started
    # Requests in flight finish (exit timeout) or fail cleanly; none hangs.
    for result in results:
        assert not isinstance(result, BaseException) or isinstance(result, TritonError)
    assert any(not isinstance(r, BaseException) for r in results)
    with pytest.raises(UnavailableError):
        asyncio.run(srv.model("echo").infer({"INPUT_FP32": np.ones((1, 1), np.float32)}))


def test_start_removes_regions_of_dead_processes(model_repository: Path) -> None:
    import subprocess

    child = subprocess.Popen(["true"])  # once reaped, its pid belongs to nobody
    child.wait()
    stale = Path(f"/dev/shm/tsrv{child.pid}x0_left-by-a-killed-replica")
    stale.write_bytes(b"\0" * 16)
    mine = Path(f"/dev/shm/tsrv{os.getpid()}x999_still-mine")
    mine.write_bytes(b"\0")
    try:
        with Server(Options(model_repository=model_repository)):
            assert not stale.exists()
            assert mine.exists()  # a live process's regions are left alone
    finally:
        stale.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)
