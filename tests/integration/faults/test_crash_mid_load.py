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

from tests.integration.faults.checks import (
    assert_unavailable,
    echo,
    echo_answered,
    until_answered,
)
from tests.integration.faults.conftest import APP_NAME
from tests.support import procs
from tests.support.waiting import wait_until

# echo is replaced and answering within this (a replica restarts in 8-17 s on 2 cores).
BACK_BOUND_S = 120.0


@pytest.fixture
def echo_config_restored(faults_url: str) -> Iterator[None]:
    """The override below is an operator intent that outlives the test (replicas load
    it when they start, and Triton keeps it over a plain reload): load echo's own
    config again, as an override, for the tests after."""
    config = httpx.get(f"{faults_url}/v2/models/echo/config", timeout=30).json()
    yield
    body = {"parameters": {"config": json.dumps(config)}}
    restored = httpx.post(f"{faults_url}/v2/repository/models/echo/load", json=body, timeout=120)
    assert restored.status_code == 200, restored.text
    entry = f"{faults_url}/v2/repository/models/echo"
    wait_until(
        lambda: httpx.get(entry, timeout=30).json()["state"] == "READY",
        60,
        "every echo replica reports it ready again",
    )


def _answered_or_unavailable(response: httpx.Response) -> None:
    """200 with echo's answer, or a clean JSON 503 with Retry-After; anything else fails."""
    if not echo_answered(response):
        assert_unavailable(response)


@pytest.mark.usefixtures("echo_config_restored")
def test_replica_crashing_mid_load_is_replaced(faults_url: str) -> None:
    (victim,) = procs.replica_pids(APP_NAME, "echo")
    load_status: list[int] = []

    # A reload with a config override (a whole config): new instances start, the old
    # are torn down.
    config = httpx.get(f"{faults_url}/v2/models/echo/config", timeout=30).json()
    body = {"parameters": {"config": json.dumps({**config, "max_batch_size": 128})}}

    def load() -> None:
        url = f"{faults_url}/v2/repository/models/echo/load"
        load_status.append(httpx.post(url, json=body, timeout=120).status_code)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.3)  # the replica is inside Server.load (a python model loads in ~1 s)
    os.kill(victim, signal.SIGSEGV)
    with ThreadPoolExecutor(4) as pool:
        meanwhile = list(pool.map(lambda _: echo(faults_url, timeout=120), range(4)))
    loader.join(timeout=120)
    # The load either finished before the crash or fails cleanly: never a 500, never a hang.
    assert load_status and load_status[0] in (200, 503), load_status
    for response in meanwhile:
        _answered_or_unavailable(response)

    until_answered(lambda: echo(faults_url, timeout=120), echo_answered, BACK_BOUND_S)
    replicas = procs.replica_pids(APP_NAME, "echo")
    assert replicas and victim not in replicas
