"""A replica killed while it loads a model: the requests waiting for the load get a
clean 503, and the model loads in the replacement."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ray import serve

from tests.integration.residency.conftest import infer, pool_args
from tests.support import procs
from tests.support.stack import deploy
from tests.support.waiting import wait_until

APP = "residency-kill"
PREFIX = "/kill"
DEPLOYMENT = "pool-kill"


@pytest.fixture(scope="module")
def kill_url(pool_url: str, pool_repository: Path) -> Iterator[str]:
    args = pool_args(pool_repository)
    args["deployments"][0].update({"name": DEPLOYMENT, "num_cpus": 0.1})
    deploy(args, APP, PREFIX)
    url = f"{pool_url}{PREFIX}"
    try:
        wait_until(lambda: infer(url, "pool-00").status_code == 200, 240, "the replica")
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP, _blocking=True)


def test_waiting_requests_get_503_and_the_replacement_loads(kill_url: str) -> None:
    [victim] = procs.replica_pids(APP, DEPLOYMENT)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(infer, kill_url, "pool-07", float(v)) for v in range(4)]
        wait_until(
            lambda: any("pool-07" in s.instance for s in procs.stubs([victim])),
            30,
            "the load to start its stub",
        )
        procs.sigkill(victim)
        for future in waiting:
            response = future.result()
            assert response.status_code == 503, response.text
            assert "unavailable" in response.json()["error"]
            assert int(response.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 240
    while True:
        response = infer(kill_url, "pool-07", 1.0)
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the replacement never served pool-07"
        time.sleep(2)
    assert response.json()["outputs"][0]["data"] == [8.0]
    wait_until(lambda: not procs.stubs([victim]), 60, "the dead replica's stubs to go")
