"""Stopping with requests in flight: deleting an application, or ``serve.shutdown()``,
lets requests already running finish (each model replica waits up to its
``graceful_shutdown_timeout_s``, 30 s, see ``app/builders.py``) and leaves no stub
process and no ``/dev/shm`` region of its replicas."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from ray import serve

from tests.integration.faults.checks import echo, echo_answered
from tests.integration.faults.conftest import APP_NAME, Stack
from tests.support import procs
from tests.support.stack import deploy
from tests.support.waiting import wait_for_models, wait_until

DELAY_MS = 2000
IN_FLIGHT = 4
# Deleting waits for the requests in flight (at most DELAY_MS) and then stops the
# replicas (Triton's stop, a second or two).
STOP_BOUND_S = 30.0
DRAIN_APP = "drain"


def _deploy_drain_app(stack: Stack) -> str:
    args = {
        "model_repository": str(stack.model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [{"name": "echo", "models": ["echo"], "num_gpus": 0, "num_cpus": 0.1}],
    }
    deploy(args, DRAIN_APP, f"/{DRAIN_APP}")
    url = f"{stack.url}/{DRAIN_APP}"
    wait_for_models(url, ["echo"], timeout=120)
    return url


def _stop_with_requests_in_flight(url: str, stop: object, owners: list[int]) -> float:
    """Start IN_FLIGHT slow requests, ``stop()`` once they run; returns how long it took."""
    assert callable(stop)
    assert owners and procs.stubs(owners) and procs.shm_files(owners)
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        in_flight = [pool.submit(echo, url, DELAY_MS) for _ in range(IN_FLIGHT)]
        time.sleep(0.5)  # all accepted, each waiting out its delay in the stub
        assert not any(f.done() for f in in_flight)
        started = time.monotonic()
        stop()
        took = time.monotonic() - started
        for future in in_flight:
            response = future.result()
            assert echo_answered(response), (response.status_code, response.text)
    wait_until(lambda: not any(map(procs.alive, owners)), 30, "replica processes exit")
    assert procs.stubs(owners) == []
    assert procs.shm_files(owners) == []
    return took


def test_deleting_the_application_finishes_requests_in_flight(
    stack: Stack, faults_url: str
) -> None:
    url = _deploy_drain_app(stack)
    owners = procs.replica_pids(DRAIN_APP, "echo")

    took = _stop_with_requests_in_flight(url, lambda: serve.delete(DRAIN_APP), owners)
    print(f"serve.delete with {IN_FLIGHT} requests in flight took {took:.1f} s")
    assert took < STOP_BOUND_S
    assert DRAIN_APP not in serve.status().applications
    # The other application was not touched.
    assert echo_answered(echo(faults_url))


@pytest.mark.slow
def test_serve_shutdown_cuts_http_but_replicas_still_clean_up(
    stack: Stack, faults_url: str
) -> None:
    """``serve.shutdown()`` kills Serve's HTTP proxies at once (Ray 2.60's
    ``ProxyState.shutdown``), so requests in flight through them are cut, not
    finished: drain with ``serve.delete`` first. The replicas still stop Triton."""
    owners = [
        pid
        for deployment in ("echo", "streamer", "tiny-llm")
        for pid in procs.replica_pids(APP_NAME, deployment)
    ]
    assert procs.stubs(owners) and procs.shm_files(owners)
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        in_flight = [pool.submit(echo, faults_url, DELAY_MS) for _ in range(IN_FLIGHT)]
        time.sleep(0.5)
        started = time.monotonic()
        stack.running = False  # the next test deploys again
        serve.shutdown()
        took = time.monotonic() - started
        for future in in_flight:
            try:
                response = future.result()
            except httpx.RemoteProtocolError:
                continue  # cut by the proxy: a closed connection, never a hang
            assert echo_answered(response), (response.status_code, response.text)
    print(f"serve.shutdown with {IN_FLIGHT} requests in flight took {took:.1f} s")
    assert took < STOP_BOUND_S
    wait_until(lambda: not any(map(procs.alive, owners)), 30, "replica processes exit")
    assert procs.stubs(owners) == []
    assert procs.shm_files(owners) == []
