"""Two replicas of a pool: a model's requests go to the replica that holds it (the
model is loaded once, not on every replica its requests happen to land on)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def _loads_per_replica(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(
        r'^triton_serve_model_loads_total\{[^}]*replica="([^"]+)"[^}]*\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return {replica: float(value) for replica, value in found}


def test_a_hot_model_spreads_to_the_other_replica_by_queue(two_replicas_url: str) -> None:
    """Held by one replica, ``pool-06`` gets a burst of slow requests: once the holder
    has ``spread_queue_len`` (4) queued, the router sends the next ones to the other
    replica, which loads it too. Serve's own multiplexed routing would wait for the
    holder to refuse (``max_ongoing_requests``) and never spread here."""
    url = two_replicas_url
    start = _loads_per_replica(url)
    assert len(start) == 2, start
    assert infer(url, "pool-06").status_code == 200
    wait_until(lambda: sum(_loads_per_replica(url).values()) == sum(start.values()) + 1)
    loaded = _loads_per_replica(url)
    (holder,) = [r for r, n in loaded.items() if n > start[r]]
    (other,) = [r for r in loaded if r != holder]
    time.sleep(3)  # the holder's models reach the router

    def slow(value: int) -> httpx.Response:
        return infer(url, "pool-06", float(value), delay_ms=1000)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(slow, range(12)))
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    assert [a.json()["outputs"][0]["data"] for a in answers] == [[v + 6.0] for v in range(12)]
    wait_until(
        lambda: _loads_per_replica(url)[other] > loaded[other],
        timeout=10,
        what="pool-06 loaded by the replica that did not hold it",
    )
    assert _loads_per_replica(url)[holder] == loaded[holder]
