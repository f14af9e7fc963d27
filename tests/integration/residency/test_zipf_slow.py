"""Ten minutes of Zipf(1.1) traffic over the 40 long-tail models in a budget that holds
about ten: every request answers 200 with its model's value, and the accounted
resident memory never exceeds the budget (sampled every second)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from ray import serve

from tests.integration.residency.conftest import metric
from tests.support.longtail_models import ROOT
from tests.support.longtail_traffic import zipf_trace
from tests.support.stack import deploy
from tests.support.waiting import wait_until

APP = "residency-zipf"
PREFIX = "/zipf"
SECONDS = float(os.environ.get("ZIPF_SECONDS", "600"))
BUDGET_GB = 0.65
BODY = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [1]}]}


@pytest.fixture(scope="module")
def zipf_url(pool_url: str) -> Iterator[str]:
    args = {
        "model_repository": str(ROOT),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1, "request_timeout_s": 300},
        "deployments": [
            {
                "name": "longtail",
                "models": ["pool-*"],
                "num_cpus": 0.25,
                "residency": {
                    "memory_budget_gb": BUDGET_GB,
                    "pinned": ["pool-00"],
                    "min_resident_s": 10,
                },
            }
        ],
    }
    deploy(args, APP, PREFIX)
    url = f"{pool_url}{PREFIX}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200,
            240,
            "the long-tail app",
        )
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP, _blocking=True)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 600)  # past pytest's 300 s default: the traffic, then the checks
def test_zipf_traffic_has_no_failed_request(zipf_url: str) -> None:
    budget = BUDGET_GB * (1 << 30)
    trace = iter(zipf_trace(40, 1_000_000, 1.1, seed=11))
    lock = threading.Lock()
    failures: list[str] = []
    answered = [0]
    samples: list[float] = []
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while time.monotonic() < deadline:
                with lock:
                    model = next(trace)
                response = http.post(f"{zipf_url}/v2/models/pool-{model:02d}/infer", json=BODY)
                ok = response.status_code == 200 and response.json()["outputs"][0]["data"] == [
                    1.0 + model
                ]
                with lock:
                    answered[0] += 1
                    if not ok:
                        failures.append(f"pool-{model:02d}: {response.status_code} {response.text}")

    def sample() -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                samples.append(metric(zipf_url, "triton_serve_resident_bytes"))
            time.sleep(1)

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(client) for _ in range(4)] + [pool.submit(sample)]
        for future in futures:
            future.result()
    loads = metric(zipf_url, "triton_serve_model_loads_total")
    evictions = metric(zipf_url, "triton_serve_model_evictions_total")
    print(
        f"{answered[0]} requests in {SECONDS:.0f} s, {len(failures)} failed; {loads:.0f} loads,"
        f" {evictions:.0f} evictions; resident bytes at most {max(samples, default=0):.0f}"
        f" of {budget:.0f} ({len(samples)} samples)"
    )
    assert not failures, failures[:5]
    assert answered[0] > 0
    assert samples and max(samples) <= budget
    assert metric(zipf_url, "triton_serve_model_evictions_total") > 0  # the tail was served
