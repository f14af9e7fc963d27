"""Two replicas of a pool: a model's requests go to the replica that holds it (the
model is loaded once, not on every replica its requests happen to land on)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray import serve

from tests.integration.residency.conftest import infer, metric, pool_args
from tests.support.stack import deploy
from tests.support.waiting import wait_until

APP = "affinity"
PREFIX = "/affinity"


@pytest.fixture(scope="module")
def two_replicas_url(pool_url: str, pool_repository: Path) -> Iterator[str]:
    args = pool_args(pool_repository)
    args["deployments"][0].update({"name": "pool2", "num_replicas": 2, "num_cpus": 0.1})
    deploy(args, APP, PREFIX)
    url = f"{pool_url}{PREFIX}"
    try:
        wait_until(lambda: _replicas_reporting(url) == 2, timeout=240, what="two replicas")
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP, _blocking=True)


def _replicas_reporting(url: str) -> int:
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return len(re.findall(r"^triton_serve_memory_budget_bytes\{", text, re.MULTILINE))
    return 0


def test_requests_follow_the_replica_that_holds_the_model(two_replicas_url: str) -> None:
    url = two_replicas_url
    baseline = metric(url, "triton_serve_model_loads_total")  # the pinned model, per replica
    assert infer(url, "pool-04").status_code == 200
    wait_until(
        lambda: metric(url, "triton_serve_model_loads_total") == baseline + 1, what="the load"
    )
    time.sleep(2)  # Serve's controller relays the replica's models to the router
    for value in range(12):
        response = infer(url, "pool-04", float(value))
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [value + 4.0]
    time.sleep(3)  # one report period: a second load would show by now
    assert metric(url, "triton_serve_model_loads_total") == baseline + 1
