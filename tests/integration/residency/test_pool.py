"""A pool on real Triton and Ray: listing, single flight, LRU eviction within the
measured budget, pinning by explicit load, refusals with their reasons."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.residency.conftest import BUDGET_GB, index, infer, metric
from tests.support.waiting import wait_until

NOT_LOADED = "not loaded: loads on first request"


def test_every_pool_model_is_listed(pool_url: str) -> None:
    models = {m["name"]: m for m in httpx.get(f"{pool_url}/v2/models", timeout=10).json()["models"]}
    assert {f"pool-{i:02d}" for i in range(8)} | {"huge", "broken"} <= set(models)
    assert models["pool-00"]["state"] == "READY"  # pinned: loaded at start
    cold = index(pool_url)["pool-07"]
    assert (cold["state"], cold["reason"]) == ("UNAVAILABLE", NOT_LOADED)
    assert httpx.get(f"{pool_url}/v2/health/ready", timeout=10).status_code == 200


def test_concurrent_first_requests_share_one_load(pool_url: str) -> None:
    wait_until(lambda: metric(pool_url, "triton_serve_model_loads_total") >= 1, what="a report")
    loads = metric(pool_url, "triton_serve_model_loads_total")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda v: infer(pool_url, "pool-03", v), range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert [r.json()["outputs"][0]["data"][0] for r in responses] == [v + 3.0 for v in range(8)]
    wait_until(
        lambda: metric(pool_url, "triton_serve_model_loads_total") >= loads + 1, what="the load"
    )
    assert metric(pool_url, "triton_serve_model_loads_total") == loads + 1
    wait_until(lambda: index(pool_url)["pool-03"]["state"] == "READY", what="pool-03 READY")


# Slow (make test-slow): a stub's RSS that grows after its load is accounted at the next
# re-measurement (2 s), so a sample can catch the total a few MB over the budget
# (docs/known-gaps.md).
@pytest.mark.slow
def test_least_recently_used_are_evicted_within_the_budget(pool_url: str) -> None:
    budget = BUDGET_GB * (1 << 30)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(metric(pool_url, "triton_serve_resident_bytes"))
            stop.wait(0.3)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        evictions = metric(pool_url, "triton_serve_model_evictions_total")
        for i in [1, 2, 3, 4, 5, 6, 7, 1, 2]:
            response = infer(pool_url, f"pool-{i:02d}", 1.0)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [1.0 + i]
    finally:
        stop.set()
        sampler.join()
    assert samples and max(samples) <= budget
    assert metric(pool_url, "triton_serve_memory_budget_bytes") == int(budget)
    wait_until(
        lambda: metric(pool_url, "triton_serve_model_evictions_total") >= evictions + 4,
        what="evictions reported",
    )

    def triton_resident() -> set[str]:
        return {n for n, e in index(pool_url).items() if e["state"] == "READY"}

    # Triton itself unloaded the least recently used: what stays is the pinned model
    # and the most recently used ones (2, 1, 7, ... back in time), at least the last.
    recent = ["pool-02", "pool-01", "pool-07", "pool-06", "pool-05", "pool-04", "pool-03"]
    wait_until(lambda: "pool-02" in triton_resident(), what="a report after the last load")
    resident = triton_resident()
    unpinned = resident - {"pool-00"}
    assert "pool-00" in resident
    assert unpinned == set(recent[: len(unpinned)]) and unpinned, index(pool_url)
    assert index(pool_url)["pool-03"]["reason"] == NOT_LOADED


# Slow (make test-slow): on a fresh clone the 90 s request ended early twice, cause not
# found yet (docs/known-gaps.md).
@pytest.mark.slow
def test_model_with_a_request_in_flight_is_not_evicted(pool_url: str) -> None:
    with ThreadPoolExecutor(1) as pool:
        # Long enough to outlast four loads on a busy 2-core machine.
        slow = pool.submit(infer, pool_url, "pool-06", 2.0, 240, 90_000)
        wait_until(lambda: index(pool_url)["pool-06"]["state"] == "READY", 60, "pool-06 READY")
        evictions = metric(pool_url, "triton_serve_model_evictions_total")
        for i in [1, 2, 3, 4]:  # room for about one next to pool-06: each evicts another
            assert infer(pool_url, f"pool-{i:02d}").status_code == 200
        wait_until(
            lambda: metric(pool_url, "triton_serve_model_evictions_total") >= evictions + 3,
            what="evictions",
        )
        assert not slow.done(), "the slow request ended before the check"
        assert index(pool_url)["pool-06"]["state"] == "READY"
        response = slow.result()
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [8.0]


def test_explicit_load_pins_until_unload(pool_url: str) -> None:
    response = httpx.post(f"{pool_url}/v2/repository/models/pool-05/load", timeout=120)
    assert response.status_code == 200, response.text
    for i in [1, 2, 3, 4, 6, 7]:
        assert infer(pool_url, f"pool-{i:02d}").status_code == 200
    wait_until(lambda: index(pool_url)["pool-07"]["state"] == "READY", what="pool-07 READY")
    assert index(pool_url)["pool-05"]["state"] == "READY"  # never evicted while pinned
    response = httpx.post(f"{pool_url}/v2/repository/models/pool-05/unload", timeout=120)
    assert response.status_code == 200, response.text
    wait_until(lambda: index(pool_url)["pool-05"]["reason"] == NOT_LOADED, what="pool-05 unloaded")
    assert infer(pool_url, "pool-05").status_code == 200  # loads on demand again


def test_model_too_big_for_the_budget_is_refused(pool_url: str) -> None:
    response = infer(pool_url, "huge")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "needs 1 GiB" in error and "declared" in error, error


def test_failed_load_answers_503_with_trition_reason(pool_url: str) -> None:
    response = infer(pool_url, "broken")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "weights are missing" in response.json()["error"]
    assert infer(pool_url, "pool-01").status_code == 200  # the others are unaffected
