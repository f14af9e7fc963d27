"""README's examples, pasted against `make serve`'s stack (serve_configs/local.yaml, run by
app.local_stack on free ports): every curl answers without an HTTP error, the Python
snippet runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _curl_commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith("curl "):
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[int, int]]:
    http_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.local_stack",
            "serve_configs/local.yaml",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 600
        assert process.stdout is not None
        for line in process.stdout:
            if "RUNNING" in line or time.monotonic() > deadline:
                break
            assert "DEPLOY_FAILED" not in line, line
        # Keep reading the stack's output (a full pipe would block it).
        threading.Thread(target=process.stdout.read, daemon=True).start()
        # Ready once every model is: a stub that died while starting is reloaded first.
        url = f"http://127.0.0.1:{http_port}/v2/health/ready"
        ready_by = time.monotonic() + 240
        while (ready := httpx.get(url, timeout=30)).status_code != 200:
            assert time.monotonic() < ready_by, ready.text
            time.sleep(2)
        yield http_port, grpc_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_readme_has_its_examples() -> None:
    assert len(_curl_commands()) >= 5 and _blocks("python")


@pytest.mark.parametrize("command", _curl_commands())
def test_curl_example(stack: tuple[int, int], command: str) -> None:
    http_port, _ = stack
    pasted = command.replace("localhost:8000", f"127.0.0.1:{http_port}")
    pasted = pasted.replace("curl ", "curl --fail-with-body --max-time 60 ", 1)
    done = subprocess.run(["bash", "-c", pasted], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"{command}\n{done.stdout[-1000:]}{done.stderr[-1000:]}"
    if not re.search(r"/(load|unload)$", command):  # those answer 200 with no body
        assert done.stdout.strip(), command


@pytest.mark.parametrize("snippet", _blocks("python"))
def test_python_example(stack: tuple[int, int], snippet: str) -> None:
    http_port, grpc_port = stack
    code = snippet.replace("localhost:8000", f"127.0.0.1:{http_port}")
    code = code.replace("localhost:8001", f"127.0.0.1:{grpc_port}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
