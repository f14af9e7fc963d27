"""A stub's own child processes (vLLM's executor workers, say) do not outlive Triton:
neither a stop by the replica nor the replica's death leaves one.

Outside ``tests/integration/engine``: the python backend takes its shared-memory prefix
from the first server of a process, so these tests need a process whose only server is
their own (the engine package keeps one running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.triton import Options, Server
from app.triton.process_tree import Proc, is_alive, proc

REPO_ROOT = Path(__file__).resolve().parents[3]

_MODEL = """
import json, subprocess
from pathlib import Path
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        pid_file = Path(config["parameters"]["pid_file"]["string_value"])
        # Like an executor worker; in a session of its own, so a stub that ends its own
        # process group as it dies does not take it along (the case to cover).
        self.child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        pid_file.write_text(str(self.child.pid))

    def execute(self, requests):
        out = np.zeros((1,), dtype=np.float32)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]) for _ in requests]
"""

_CONFIG = """
name: "spawner"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
parameters {{ key: "pid_file" value: {{ string_value: "{pid_file}" }} }}
"""


def _repository(root: Path) -> tuple[Path, Path]:
    pid_file = root / "child.pid"
    model = root / "repo" / "spawner"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(_MODEL)
    (model / "config.pbtxt").write_text(_CONFIG.format(pid_file=pid_file))
    return root / "repo", pid_file


def _child(pid_file: Path) -> Proc:
    found = proc(int(pid_file.read_text()))
    assert found is not None and is_alive(found)
    return found


def _gone(p: Proc, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(p) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not is_alive(p)


def test_stop_ends_the_stubs_children(tmp_path: Path) -> None:
    repo, pid_file = _repository(tmp_path)
    server = Server(Options(model_repository=repo, log_info=False)).start()
    try:
        server.load("spawner")
        child = _child(pid_file)
        stubs = [Proc(s.pid, s.started) for s in server.stub_processes()]
        assert stubs
    finally:
        server.stop()
    assert _gone(child, timeout=1.0), "the stub's child outlived Triton's stop"
    assert not any(is_alive(s) for s in stubs)


_OWNER = textwrap.dedent(
    """
    import sys, time
    from app.triton import Options, Server
    server = Server(Options(model_repository=sys.argv[1], log_info=False)).start()
    server.load("spawner")
    print("loaded", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_owners_stub_children_are_ended_by_the_next_server(tmp_path: Path) -> None:
    repo, pid_file = _repository(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(repo)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "loaded"
        child = _child(pid_file)
        owner.send_signal(signal.SIGKILL)  # what `ray kill` / the OOM killer does
        owner.wait()
        time.sleep(1)
        assert is_alive(child), "nothing to test: the child died with its owner"
        # The replacement replica starting on the node ends it.
        Server(Options(model_repository=repo, log_info=False)).start().stop()
        assert _gone(child, timeout=1.0), "the killed owner's stub child survived"
    finally:
        owner.kill()
        found = proc(int(pid_file.read_text())) if pid_file.exists() else None
        if found is not None and is_alive(found):
            os.kill(found.pid, signal.SIGKILL)


@pytest.mark.parametrize("name", ["mixtral-8x7b-vllm"])
def test_tensor_parallel_vllm_names_its_executor(name: str) -> None:
    import json

    engine = json.loads((REPO_ROOT / "model_repository" / name / "1" / "model.json").read_text())
    assert engine["tensor_parallel_size"] > 1
    assert engine.get("distributed_executor_backend") == "mp"
