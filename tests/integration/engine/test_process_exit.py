"""A process that embeds Triton and exits without ``stop()`` (or is SIGTERMed) leaves nothing.

Each scenario runs in a fresh interpreter; afterwards no python-backend stub whose command
line names the server's shm prefix may be alive, and no ``/dev/shm/<prefix>*`` file may exist.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.support import procs

REPO_ROOT = Path(__file__).resolve().parents[3]

# Starts `n` servers, prints each shm prefix, runs one inference on each, then (tail) ends.
SCRIPT = textwrap.dedent(
    """
    import asyncio
    import numpy as np
    from app.triton import Options, Server

    servers = []
    for _ in range({n}):
        server = Server(Options(model_repository="model_repository")).start()
        print("PREFIX", server.shm_prefix, flush=True)
        server.load("echo")
        servers.append(server)

    async def infer_all():
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        for server in servers:
            response = await server.model("echo").infer({{"INPUT_FP32": x}})
            assert response.outputs["OUTPUT_FP32"].tolist() == x.tolist()

    asyncio.run(infer_all())
    {tail}
    """
)


def _assert_nothing_left(prefixes: list[str], since: float, grace_s: float = 3.0) -> None:
    """No stub and no shm file of ``prefixes``; ``grace_s`` lets the kernel reap exited stubs."""
    deadline = time.monotonic() + grace_s
    while True:
        stubs = [s for p in prefixes for s in procs.stubs_mentioning(p)]
        files = [f for p in prefixes for f in procs.shm_files_with_prefix(p, since)]
        if (not stubs and not files) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert stubs == [], f"stub processes left behind: {stubs}"
    assert files == [], f"/dev/shm files left behind: {files}"


def _start(n: int, tail: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(n=n, tail=tail)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    """stdout lines up to and including ``marker`` (fails if the process ends or stalls)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if line == marker:
            return seen
    proc.kill()
    proc.wait()
    assert proc.stderr is not None
    pytest.fail(
        f"no {marker!r} from the child (stdout {seen}); stderr:\n{proc.stderr.read()[-3000:]}"
    )


def _prefixes(lines: list[str]) -> list[str]:
    prefixes = [line.split()[1] for line in lines if line.startswith("PREFIX ")]
    assert prefixes and all(p.startswith("tsrv") for p in prefixes)
    return prefixes


@pytest.mark.parametrize("servers", [1, 2])
def test_exit_without_stop_leaves_nothing(servers: int) -> None:
    since = time.time() - 1
    proc = _start(servers, tail='print("DONE", flush=True)')
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child did not exit; stderr:\n{err[-3000:]}")
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr:\n{err[-3000:]}"
    lines = out.splitlines()
    assert lines[-1] == "DONE"
    prefixes = _prefixes(lines)
    assert len(set(prefixes)) == servers
    _assert_nothing_left(prefixes, since)


def test_sigterm_stops_the_server_and_leaves_nothing() -> None:
    since = time.time() - 1
    proc = _start(1, tail='print("READY", flush=True)\nimport time; time.sleep(600)')
    try:
        lines = _read_until(proc, "READY", timeout_s=180)
        prefixes = _prefixes(lines)
        assert procs.stubs_mentioning(prefixes[0]), (
            "the python backend's stub should run while serving"
        )
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the child did not exit within 30 s of SIGTERM")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    # The handler stops every server, then re-raises SIGTERM with the default action.
    assert proc.returncode == -signal.SIGTERM
    assert took < 30
    _assert_nothing_left(prefixes, since)
