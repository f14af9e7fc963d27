"""Timeouts cancel work in the engine; Triton's priorities and queue policy reach it;
aggregate endpoints do not wait on unplaced models."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import extra_application

X = {"name": "INPUT_FP32", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}


def _echo_compute_s(url: str) -> float:
    response = httpx.get(f"{url}/v2/models/echo/stats", timeout=30)
    stats = response.json()["model_stats"][0]["inference_stats"]
    return float(stats["compute_infer"]["ns"]) / 1e9


def test_request_timeout_is_408_and_stops_the_engine(serve_url: str) -> None:
    """echo holds its one instance for ``delay_ms`` unless the request is cancelled:
    after the 408, the next request runs at once and the timed-out one has used
    about 0.5 s of compute, not 4 s."""
    before = _echo_compute_s(serve_url)
    started = time.monotonic()
    response = httpx.post(
        f"{serve_url}/v2/models/echo/infer",
        json={"inputs": [X], "parameters": {"delay_ms": 4000}},
        headers={"X-Request-Timeout": "0.5"},
        timeout=30,
    )
    assert response.status_code == 408, response.text
    assert "did not answer in time" in response.json()["error"]
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    follow_up = httpx.post(f"{serve_url}/v2/models/echo/infer", json={"inputs": [X]}, timeout=30)
    assert follow_up.status_code == 200
    assert time.monotonic() - started < 2.0, "echo was still busy with the timed-out request"
    time.sleep(0.5)
    assert _echo_compute_s(serve_url) - before < 2.5


def test_invalid_timeout_header_is_400(serve_url: str) -> None:
    response = httpx.post(
        f"{serve_url}/v2/models/echo/infer",
        json={"inputs": [X]},
        headers={"X-Request-Timeout": "0"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "X-Request-Timeout" in response.json()["error"]


def test_statistics_skip_deployments_without_replicas(serve_url: str) -> None:
    """The 'big' deployment cannot be placed; /v2/models/stats answers without it."""
    started = time.monotonic()
    response = httpx.get(f"{serve_url}/v2/models/stats", timeout=60)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 15
    names = {s["name"] for s in response.json()["model_stats"]}
    assert {"echo", "streamer"} <= names and "versioned" not in names


# echo with one instance taking one request at a time, two priority levels (default 2),
# and a queue policy for the default level: one request waits, request timeouts apply.
POLICY = """
max_batch_size: 1
dynamic_batching {
  max_queue_delay_microseconds: 0
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 1
    allow_timeout_override: true
    default_timeout_microseconds: 10000000
  }
}
"""


@pytest.fixture(scope="module")
def policy_url(
    serve_url: str, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An application under /policy whose echo has the queue policy above."""
    repository = tmp_path_factory.mktemp("policy") / "repository"
    shutil.copytree(model_repository / "echo", repository / "echo", ignore=_pycache)
    config = (model_repository / "echo" / "config.pbtxt").read_text()
    config = re.sub(r"max_batch_size: \d+\ndynamic_batching \{[^}]*\}\n", POLICY, config)
    assert "priority_levels" in config
    (repository / "echo" / "config.pbtxt").write_text(config)
    args = {
        "model_repository": str(repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [{"name": "echo", "models": ["echo"], "num_gpus": 0, "num_cpus": 0.25}],
    }
    url = f"{serve_url}/policy"

    def ready() -> bool:
        return httpx.get(f"{url}/v2/models/echo/ready", timeout=30).status_code == 200

    with extra_application(args, "triton-policy", "/policy", ready):
        yield url


def _pycache(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def _infer_in_background(
    url: str, parameters: dict[str, Any]
) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        body = {"inputs": [X], "parameters": parameters}
        result.append(httpx.post(f"{url}/v2/models/echo/infer", json=body, timeout=30))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_queue_policy_and_priority_reach_triton(policy_url: str) -> None:
    """While echo's only instance is busy, one default-priority request waits and the
    next is refused by Triton's queue policy (503 + Retry-After, JSON); a priority-1
    request has its own queue, so Triton took the priority from the request."""
    busy, _ = _infer_in_background(policy_url, {"delay_ms": 3000})
    time.sleep(1.0)  # the margins allow for a busy 2-core machine
    waiting, waited = _infer_in_background(policy_url, {"delay_ms": 1})
    time.sleep(0.5)
    url = f"{policy_url}/v2/models/echo/infer"
    refused = httpx.post(url, json={"inputs": [X]}, timeout=30)
    assert refused.status_code == 503, refused.text
    assert "Exceeds maximum queue size" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    urgent = httpx.post(url, json={"inputs": [X], "parameters": {"priority": 1}}, timeout=30)
    assert urgent.status_code == 200, urgent.text
    for thread in (busy, waiting):
        thread.join()
    assert waited[0].status_code == 200


def test_request_timeout_parameter_reaches_triton(policy_url: str) -> None:
    """The KServe ``timeout`` parameter (µs) is Triton's queue timeout: a request that
    waits longer behind a busy instance is rejected."""
    busy, _ = _infer_in_background(policy_url, {"delay_ms": 2000})
    time.sleep(0.8)
    response = httpx.post(
        f"{policy_url}/v2/models/echo/infer",
        json={"inputs": [X], "parameters": {"timeout": 100_000}},
        timeout=30,
    )
    busy.join()
    assert response.status_code == 503, response.text
    assert "timeout" in response.json()["error"].lower()
    assert response.headers["retry-after"] == "1"
