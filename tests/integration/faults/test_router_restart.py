"""The router replica's process SIGKILLed: Serve starts a new one by itself. Requests
sent meanwhile are held by Serve's proxy until it is up (or get a 503); none is lost
to a broken connection, and the service answers again within a bound. Requests that
were inside the router when it died get Serve's own 500."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.faults.checks import echo, echo_answered
from tests.integration.faults.conftest import APP_NAME
from tests.support import procs
from tests.support.waiting import wait_until

# Measured: the proxy held requests ~11 s until the new router answered.
BACK_BOUND_S = 60.0
CLIENTS = 4


def test_router_killed_comes_back_by_itself(faults_url: str) -> None:
    (victim,) = procs.replica_pids(APP_NAME, "router")
    assert echo_answered(echo(faults_url))
    stop = threading.Event()
    outcomes: list[tuple[float, float, int, str]] = []  # sent, answered, status, body

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            response = echo(faults_url, timeout=120)
            outcomes.append((sent, time.monotonic(), response.status_code, response.text))

    with ThreadPoolExecutor(CLIENTS) as pool:
        running = [pool.submit(client) for _ in range(CLIENTS)]
        time.sleep(1.0)
        procs.sigkill(victim)
        killed_at = time.monotonic()
        wait_until(
            lambda: any(sent > killed_at and status == 200 for sent, _, status, _ in outcomes),
            BACK_BOUND_S,
            "a request sent after the kill answered",
        )
        back_s = min(done for sent, done, status, _ in outcomes if sent > killed_at) - killed_at
        time.sleep(1.0)
        stop.set()
        for future in running:
            future.result()  # a broken connection would raise here

    statuses = sorted({status for *_, status, _ in outcomes})
    print(f"router back {back_s:.1f} s after the kill; statuses seen {statuses}")
    assert back_s < BACK_BOUND_S
    for sent, _, status, text in outcomes:
        if status == 200:
            assert echo_answered(httpx.Response(200, text=text))
        elif sent < killed_at:
            # Inside the router when it died: Serve's proxy answers a dead ingress
            # replica (RayActorError) with its plain-text 500 (Ray 2.60,
            # http_util.get_http_response_status); the app has no say there.
            assert (status, text) == (500, "Internal Server Error"), (status, text)
        else:
            # Sent after the kill: held by the proxy until the new router is up.
            assert status == 503, (round(sent - killed_at, 2), status, text)
    replicas = procs.replica_pids(APP_NAME, "router")
    assert replicas and victim not in replicas
    assert httpx.get(f"{faults_url}/v2/health/ready", timeout=10).status_code == 200
