"""``router.gpus_optional`` lets a config of CPU models with GPU shares (local.yaml) run
under plain ``serve run`` on a Ray cluster without GPUs, instead of failing its build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.builders import build_app
from tests.support.stack import deploy, local_stack
from tests.support.waiting import wait_for_models


def _args(model_repository: Path, gpus_optional: bool) -> dict[str, object]:
    return {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.25, "fixed_cluster": True, "gpus_optional": gpus_optional},
        "deployments": [{"name": "echo", "models": ["echo"], "num_gpus": 0.25, "num_cpus": 0.25}],
    }


@pytest.fixture(scope="module")
def cpu_cluster() -> Iterator[str]:
    """Ray and Serve on a cluster without GPUs; the tests build and deploy."""
    with local_stack(None, num_cpus=2) as stack:
        yield stack.url


def test_without_gpus_optional_the_build_says_what_to_do(
    cpu_cluster: str, model_repository: Path
) -> None:
    with pytest.raises(ValueError, match="gpus_optional"):
        build_app(_args(model_repository, gpus_optional=False))


def test_with_gpus_optional_the_gpu_deployment_serves_on_cpu(
    cpu_cluster: str, model_repository: Path
) -> None:
    deploy(_args(model_repository, gpus_optional=True), "default")
    url = cpu_cluster
    wait_for_models(url, ["echo"], timeout=180)
    tensor = {"name": "INPUT_INT32", "datatype": "INT32", "shape": [1, 2], "data": [4, 5]}
    body = {"inputs": [tensor]}
    answer = httpx.post(f"{url}/v2/models/echo/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [4, 5]
