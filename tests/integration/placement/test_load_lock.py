"""Two replicas on one (logical) GPU load their engines one after the other, then both
serve.

The model is the CPU stand-in LLM (vLLM's interface) wrapped so that its load takes
``load_seconds`` and records when it started and ended; without the GPU load lock the
two replicas, started together, load at the same time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray import serve

from tests.support.stack import local_stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

MODEL = "slow-llm"
LOAD_SECONDS = 4.0

_WRAPPER = '''"""tiny-llm whose load takes load_seconds and is logged (tests only)."""
import json, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tiny_model  # noqa: E402


class TritonPythonModel(tiny_model.TritonPythonModel):
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        engine_args = json.loads((version_dir / "model.json").read_text())
        log = Path(engine_args["load_log"])
        with log.open("a") as f:
            f.write(f"{os.getppid()} start {time.time()}\\n")
        time.sleep(float(engine_args["load_seconds"]))
        super().initialize(args)
        with log.open("a") as f:
            f.write(f"{os.getppid()} end {time.time()}\\n")
'''


def slow_llm_repository(root: Path, load_log: Path, load_seconds: float) -> Path:
    """A repository with ``slow-llm``: tiny-llm plus a slow, logged load."""
    source = Path(__file__).resolve().parents[3] / "model_repository" / "tiny-llm"
    target = root / MODEL
    shutil.copytree(source, target)
    config = (target / "config.pbtxt").read_text().replace('"tiny-llm"', f'"{MODEL}"')
    (target / "config.pbtxt").write_text(config)
    (target / "1" / "model.py").rename(target / "1" / "tiny_model.py")
    (target / "1" / "model.py").write_text(_WRAPPER)
    engine_args = json.loads((target / "1" / "model.json").read_text())
    engine_args |= {"load_log": str(load_log), "load_seconds": load_seconds}
    (target / "1" / "model.json").write_text(json.dumps(engine_args))
    return root


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("repo")
    load_log = root / "loads.log"
    slow_llm_repository(root, load_log, LOAD_SECONDS)
    args = {
        "model_repository": str(root),
        "triton": {"log_info": False},
        "gpus": {"memory_gb": 10},
        "deployments": [
            {
                "name": "slow",
                "models": [MODEL],
                "num_gpus": 0.5,
                "num_cpus": 0.25,
                "num_replicas": 2,
                # Declaring GPU memory is what makes a deployment take the load lock.
                "gpu_memory": {"engine": "fixed", "weights_gb": 1, "overhead_gb": 1},
                "openai": {MODEL: {"task": "generate"}},
            }
        ],
    }
    # A lock directory of this test only: other clusters on the host use logical GPU 0 too.
    env = {"env_vars": {"TRITON_SERVE_GPU_LOCK_DIR": str(root / "locks")}}
    with local_stack(
        args,
        name="lock",
        num_cpus=2,
        num_gpus=1,
        ready_models=[MODEL],
        ready_timeout=240,
        runtime_env=env,
    ) as stack:
        wait_until(lambda: load_log.read_text().count(" end ") >= 2, 120, "both replicas loaded")
        yield stack.url, load_log


def _spans(load_log: Path) -> dict[str, dict[str, float]]:
    spans: dict[str, dict[str, float]] = {}
    for line in load_log.read_text().splitlines():
        pid, what, at = line.split()
        spans.setdefault(pid, {})[what] = float(at)
    return spans


def test_loads_on_one_gpu_never_overlap(two_replicas: tuple[str, Path]) -> None:
    _, load_log = two_replicas
    spans = sorted(_spans(load_log).values(), key=lambda s: s["start"])
    assert len(spans) == 2, load_log.read_text()  # two replicas, one load each
    first, second = spans
    assert first["end"] - first["start"] >= LOAD_SECONDS
    assert second["start"] >= first["end"], f"loads overlapped: {spans}"


def test_both_replicas_serve(two_replicas: tuple[str, Path]) -> None:
    url, _ = two_replicas
    # The second replica finishes its __init__ (and Serve notices) after its load.
    deadline = time.monotonic() + 90
    while True:
        status = serve.status().applications["lock"].deployments["slow"]
        if status.replica_states.get("RUNNING") == 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "temperature": 0}
    for _ in range(6):
        answer = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["finish_reason"] in ("length", "stop")
