"""Shared fixtures and the `gpu` marker's skip rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.local_stack import INGRESS_ENV

# Every Ray cluster the tests start serves with the ingress `make serve` uses (Serve
# reads these when its modules are first imported, so they are set before any test
# module imports Ray); TEST_INGRESS=haproxy runs the suite behind HAProxy instead.
for _key, _value in INGRESS_ENV[os.environ.get("TEST_INGRESS", "proxy")].items():
    os.environ.setdefault(_key, _value)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"


def _has_cuda_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _has_cuda_gpu():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi found none)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    return MODEL_REPOSITORY


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once its result is reported: stop what still runs in it
    (Triton servers, a Ray driver), then exit without Python's finalization, where the
    native libraries loaded side by side here (Triton, gRPC's aio poller, Ray's core
    worker) have crashed the process after a passing run. Replicas and `make serve`
    stop Triton explicitly and are not affected."""
    if not _EXIT_STATUS:
        return
    from app.triton.server import stop_all_servers

    stop_all_servers()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
