"""A replica whose process crashes in the middle of a model-control call (SIGSEGV, as an
engine crash would) is replaced; requests sent meanwhile get a clean answer, and the
model serves again."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray

from tests.support import procs

BODY = json.dumps(
    {"inputs": [{"name": "INPUT_FP32", "shape": [1, 1], "datatype": "FP32", "data": [5.0]}]}
)


def _infer(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/echo/infer", content=BODY, timeout=120)


def _answered_or_unavailable(response: httpx.Response) -> bool:
    """200 with echo's answer, or a clean JSON 503 with Retry-After; anything else fails."""
    if response.status_code == 200:
        assert response.json()["outputs"][0]["data"] == [5.0]
        return True
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]
    return False


def _echo_replicas() -> list[int]:
    """This cluster's echo replicas (another local stack may run an app of this name)."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [pid for pid in procs.replica_pids("triton", "echo") if procs.parent(pid) == raylet]


@pytest.fixture
def echo_config_restored(serve_url: str) -> Iterator[None]:
    """The override below is an operator intent that outlives the test (replicas load
    it when they start, and Triton keeps it over a plain reload): load echo's own
    config again, as an override, for the tests after."""
    config = httpx.get(f"{serve_url}/v2/models/echo/config", timeout=30).json()
    yield
    body = {"parameters": {"config": json.dumps(config)}}
    restored = httpx.post(f"{serve_url}/v2/repository/models/echo/load", json=body, timeout=120)
    assert restored.status_code == 200, restored.text
    deadline = time.monotonic() + 60  # until every replica has reported it ready again
    entry = f"{serve_url}/v2/repository/models/echo"
    while httpx.get(entry, timeout=30).json()["state"] != "READY":
        assert time.monotonic() < deadline, "echo's replicas did not report it ready"
        time.sleep(0.5)


@pytest.mark.usefixtures("echo_config_restored")
def test_replica_crashing_mid_load_is_replaced(serve_url: str) -> None:
    (victim,) = _echo_replicas()
    load_status: list[int] = []

    # A reload with a config override (a whole config): new instances start, the old
    # are torn down.
    config = httpx.get(f"{serve_url}/v2/models/echo/config", timeout=30).json()
    body = {"parameters": {"config": json.dumps({**config, "max_batch_size": 128})}}

    def load() -> None:
        response = httpx.post(f"{serve_url}/v2/repository/models/echo/load", json=body, timeout=120)
        load_status.append(response.status_code)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.3)  # the replica is inside Server.load (a python model loads in ~1 s)
    os.kill(victim, signal.SIGSEGV)
    with ThreadPoolExecutor(4) as pool:
        meanwhile = list(pool.map(lambda _: _infer(serve_url), range(4)))
    loader.join(timeout=120)
    # The load either finished before the crash or fails cleanly: never a 500, never a hang.
    assert load_status and load_status[0] in (200, 503), load_status
    for response in meanwhile:
        _answered_or_unavailable(response)

    deadline = time.monotonic() + 120
    while not _answered_or_unavailable(_infer(serve_url)):
        assert time.monotonic() < deadline, "echo did not come back"
        time.sleep(1)
    replicas = _echo_replicas()
    assert replicas and victim not in replicas
