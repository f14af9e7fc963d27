"""A request to a deployment no node can ever hold gets a 503 naming what is missing at
once, not a 408 after request_timeout_s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.stack import local_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(model_repository: Path) -> Iterator[str]:
    args = {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.25, "request_timeout_s": 60, "fixed_cluster": True},
        "deployments": [
            {"name": "echo", "models": ["echo"], "num_gpus": 0, "num_cpus": 0.25},
            {
                "name": "on-gpu",
                "models": ["streamer"],
                "num_gpus": 0.5,
                "num_cpus": 0.25,
                "resources": {"triton_vllm": 1},  # no node advertises it
            },
        ],
    }
    with local_stack(args, name="cpu-only", num_cpus=2, num_gpus=1, ready_models=["echo"]) as stack:
        yield stack.url


def test_a_gpu_deployment_on_a_cluster_answers_503_at_once(cluster: str) -> None:
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [1]}]}
    started = time.monotonic()
    answer = httpx.post(f"{cluster}/v2/models/streamer/infer", json=body, timeout=90)
    assert time.monotonic() - started < 15
    assert answer.status_code == 503, answer.text
    assert "triton_vllm 1" in answer.text and "on-gpu" in answer.text
    assert answer.headers.get("retry-after") == "30"


def test_a_placeable_deployment_still_answers(cluster: str) -> None:
    assert httpx.get(f"{cluster}/v2/models/echo/ready", timeout=30).status_code == 200
