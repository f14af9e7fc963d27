"""100k requests through the engine leave no memory and no shim objects behind.

Mix per 100 requests: small FP32 and INT64 tensors, a few BYTES tensors, one request with
parameters, one that Triton rejects when it is submitted (unknown input) and one that the
model answers with an error (bad ``delay_ms``), so every completion path is exercised.

The shim's counters catch its own leaks exactly. RSS catches the rest (Python objects kept
per request, e.g. a stream never removed from the dispatcher). Measured on a 2-core VM:
+0.1 to +0.2 MB of RSS growth between 10k and 100k requests over 5 runs, while a test
harness leaking one 17-byte ``bytes`` per request (~64 B with its list slot) grew +7.0 MB.
The 4 MB bound is 20x the noise and still catches any leak above ~45 bytes per request
(a 20 MB bound would miss that one).

The shim's counters are process-wide, and other tests of this package leave requests
behind in event loops that ended before Triton answered them (the engine bug shown by
``test_requests_outliving_their_loop_are_freed``), so each test compares the counters
with their value when it started: zero when the slow tests run alone (``make test-slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest

from app.triton import InvalidArgumentError, Server, TritonError, _shim

TOTAL = 100_000
WARMUP = 10_000
CONCURRENCY = 16
RSS_GROWTH_LIMIT_MB = 4.0

pytestmark = pytest.mark.slow


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Mix:
    """The inputs of request ``i`` and a check of its response."""

    def __init__(self) -> None:
        self.fp32 = np.arange(16, dtype=np.float32).reshape(1, 16)
        self.int64 = np.arange(8, dtype=np.int64).reshape(1, 8)
        self.text = np.array([["token", "wörd", ""]], dtype=object)
        self.counts = {"ok": 0, "rejected": 0, "model_error": 0}

    async def run(self, server: Server, i: int) -> None:
        model = server.model("echo")
        kind = i % 100
        if kind == 0:  # rejected by Triton before it runs
            with pytest.raises(InvalidArgumentError):
                await model.infer({"NOPE": self.fp32})
            self.counts["rejected"] += 1
        elif kind == 1:  # an error response from the model
            with pytest.raises(InvalidArgumentError, match="delay_ms"):
                await model.infer({"INPUT_FP32": self.fp32}, parameters={"delay_ms": "x"})
            self.counts["model_error"] += 1
        elif kind < 5:
            response = await model.infer({"INPUT_BYTES": self.text})
            assert response.outputs["OUTPUT_BYTES"][0, 1] == "wörd".encode()
            self.counts["ok"] += 1
        elif kind < 30:
            response = await model.infer({"INPUT_INT64": self.int64}, request_id=f"r{i}")
            assert response.outputs["OUTPUT_INT64"][0, 7] == 7
            self.counts["ok"] += 1
        else:
            params = {"delay_ms": 0, "tag": "leak"} if kind == 99 else {}
            response = await model.infer({"INPUT_FP32": self.fp32}, parameters=params)
            assert response.outputs["OUTPUT_FP32"][0, 15] == 15.0
            self.counts["ok"] += 1


async def _drive(server: Server, mix: _Mix, start: int, stop: int) -> None:
    next_index = start

    async def worker() -> None:
        nonlocal next_index
        while next_index < stop:
            i = next_index
            next_index += 1
            await mix.run(server, i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@pytest.mark.timeout(600)
async def test_100k_requests_leak_nothing(server: Server) -> None:
    gc.collect()
    live_before = _shim.stats()
    mix = _Mix()
    started = time.monotonic()
    await _drive(server, mix, 0, WARMUP)
    gc.collect()
    rss_warm = _rss_mb()
    await _drive(server, mix, WARMUP, TOTAL)
    await asyncio.sleep(0.2)  # the last release events reach the loop
    gc.collect()
    rss_end = _rss_mb()
    elapsed = time.monotonic() - started
    print(
        f"\n{TOTAL} requests in {elapsed:.1f} s ({TOTAL / elapsed:.0f}/s); RSS {rss_warm:.1f} MB "
        f"after warm-up, {rss_end:.1f} MB at the end ({rss_end - rss_warm:+.1f} MB); {mix.counts}"
    )
    assert sum(mix.counts.values()) == TOTAL
    assert mix.counts["rejected"] == mix.counts["model_error"] == TOTAL // 100
    assert _shim.stats() == live_before
    assert rss_end - rss_warm < RSS_GROWTH_LIMIT_MB


async def test_cancelled_requests_leak_nothing(server: Server) -> None:
    """Requests cancelled while they wait in Triton release everything once Triton is done."""
    gc.collect()
    live_before = _shim.stats()
    model = server.model("echo")
    x = np.ones((1, 4), np.float32)
    for _ in range(20):
        tasks = [
            asyncio.create_task(model.infer({"INPUT_FP32": x}, parameters={"delay_ms": 50}))
            for _ in range(8)
        ]
        await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError | TritonError) for r in results), results
    # A cancelled task keeps its CancelledError, whose traceback holds the frame that holds
    # the request: drop the tasks (the loop variable too) and the exceptions first.
    del tasks, task, results
    gc.collect()
    # Cancelled requests still complete in Triton; wait until the shim saw the last one.
    for _ in range(200):  # up to 10 s
        if _shim.stats()["live_requests"] == live_before["live_requests"]:
            break
        await asyncio.sleep(0.05)
    response = await model.infer({"INPUT_FP32": x})
    assert response.outputs["OUTPUT_FP32"].tolist() == x.tolist()
    del response  # its output array is a live buffer
    await asyncio.sleep(0.2)
    assert _shim.stats() == live_before


def test_requests_outliving_their_loop_are_freed(server: Server) -> None:
    """``asyncio.run`` per request, and requests still in Triton when their loop ends."""
    model = server.model("echo")
    x = np.ones((1, 4), np.float32)

    async def abandon() -> None:
        with contextlib.suppress(TimeoutError):  # Triton still holds it when the loop ends
            await asyncio.wait_for(
                model.infer({"INPUT_FP32": x}, parameters={"delay_ms": 100}), 0.02
            )

    gc.collect()
    live_before, fds_before = _shim.stats(), len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        asyncio.run(model.infer({"INPUT_FP32": x}))
        asyncio.run(abandon())
    time.sleep(1.0)  # Triton answered and released every request long ago
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) - fds_before < 5  # not one eventfd per loop
    assert _shim.stats() == live_before
