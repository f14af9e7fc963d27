"""``router.gpus_optional`` lets a config of CPU models with GPU shares (local.yaml) run
under plain ``serve run`` on a Ray cluster without GPUs, instead of failing its build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from app.builders import build_app
from tests.integration.serve.conftest import _free_port, _wait_for_models


def _args(model_repository: Path, gpus_optional: bool) -> dict[str, object]:
    return {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.25, "fixed_cluster": True, "gpus_optional": gpus_optional},
        "deployments": [{"name": "echo", "models": ["echo"], "num_gpus": 0.25, "num_cpus": 0.25}],
    }


@pytest.fixture(scope="module")
def cpu_cluster() -> Iterator[int]:
    port = _free_port()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def test_without_gpus_optional_the_build_says_what_to_do(
    cpu_cluster: int, model_repository: Path
) -> None:
    with pytest.raises(ValueError, match="gpus_optional"):
        build_app(_args(model_repository, gpus_optional=False))


def test_with_gpus_optional_the_gpu_deployment_serves_on_cpu(
    cpu_cluster: int, model_repository: Path
) -> None:
    serve._run(build_app(_args(model_repository, gpus_optional=True)), _blocking=False)
    url = f"http://127.0.0.1:{cpu_cluster}"
    _wait_for_models(url, ["echo"], timeout=180)
    tensor = {"name": "INPUT_INT32", "datatype": "INT32", "shape": [1, 2], "data": [4, 5]}
    body = {"inputs": [tensor]}
    answer = httpx.post(f"{url}/v2/models/echo/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [4, 5]
