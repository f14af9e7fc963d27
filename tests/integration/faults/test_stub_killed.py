"""A python-backend stub process SIGKILLed. Triton's python backend neither restarts it nor marks
the model unready, so the replica does: the model is reported unready with the reason
(``/v2/models/<m>/ready``, ``/v2/health/ready``), requests get a JSON 503 with
Retry-After, and the replica reloads the model; when Triton cannot unload it (requests
the dead stub never answered), the replica fails its health check and Serve replaces
it."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.faults.checks import (
    assert_unavailable,
    echo,
    echo_answered,
    stream_tokens,
    streamed_in_order,
    stub_death_aborted_replica,
    until_answered,
)
from tests.integration.faults.conftest import APP_NAME
from tests.integration.faults.sse import read_stream
from tests.support import procs
from tests.support.waiting import wait_until

# The replica looks at its stubs every 2 s (REPORT_PERIOD_S).
NOTICED_BOUND_S = 10.0
# Reloaded in the same replica (measured ~4 s on 2 shared cores).
RELOADED_BOUND_S = 45.0
# Three failed health checks 10 s apart, the old replica's stop, the new one's start
# (measured ~31 s).
REPLACED_BOUND_S = 120.0


def _ready(url: str, path: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", timeout=10)


def test_idle_model_is_reported_unready_then_reloaded_in_place(faults_url: str) -> None:
    (replica,) = procs.replica_pids(APP_NAME, "echo")
    (stub,) = procs.stubs([replica])
    assert echo_answered(echo(faults_url))
    procs.sigkill(stub.pid)
    killed_at = time.monotonic()

    # The replica checks its stubs before a request reaches Triton: this one is
    # refused at once, and the model is unready with the reason until reloaded.
    why = f"its python backend stub process 'echo_0_0' (pid {stub.pid}) died"
    assert_unavailable(echo(faults_url), "model 'echo' is not ready", why)
    seen: list[str] = []
    while time.monotonic() - killed_at < RELOADED_BOUND_S:
        model = _ready(faults_url, "/v2/models/echo/ready")
        if model.status_code == 200:
            break
        # The replica answers at once; the reason comes from its reports, which
        # reach the router every 2 s.
        assert_unavailable(model, "model 'echo' is not ready")
        seen.append(model.json()["error"])
        health = _ready(faults_url, "/v2/health/ready")
        if health.status_code != 200:
            assert_unavailable(health, "echo: ")
            seen.append(health.json()["error"])
        time.sleep(0.2)
    took = time.monotonic() - killed_at
    print(f"echo reloaded in its replica {took:.1f} s after its stub was killed")
    assert f"model 'echo' is not ready: {why}; reloading it" in seen, seen
    assert f"not ready: echo: {why}; reloading it" in seen, seen
    assert took < RELOADED_BOUND_S
    assert echo_answered(echo(faults_url))
    wait_until(lambda: _ready(faults_url, "/v2/health/ready").status_code == 200, 10, "ready again")
    assert procs.replica_pids(APP_NAME, "echo") == [replica]
    (new_stub,) = procs.stubs([replica])
    assert new_stub.pid != stub.pid and new_stub.instance == "echo_0_0"
    assert len(procs.shm_files([replica])) == 1  # the dead stub's region went with the unload


@pytest.mark.slow
def test_stream_under_way_fails_and_the_replica_is_replaced(faults_url: str) -> None:
    (replica,) = procs.replica_pids(APP_NAME, "streamer")
    (stub,) = procs.stubs([replica])
    killed_at: list[float] = []

    def kill_stub_after_three(index: int, event: object) -> None:
        if index == 3:
            procs.sigkill(stub.pid)
            killed_at.append(time.monotonic())

    with httpx.Client(timeout=60) as client:
        result = read_stream(
            client,
            f"{faults_url}/v2/models/streamer/generate_stream",
            {"COUNT": 100, "DELAY_MS": 100},
            on_event=kill_stub_after_three,
        )
    # Without the replica's watch this stream never ended (Triton waits for the stub).
    assert result.status == 200 and result.transport_error is None
    assert time.monotonic() - killed_at[0] < NOTICED_BOUND_S
    *tokens, last = result.events
    assert [t["INDEX"] for t in tokens] == list(range(len(tokens)))
    why = f"its python backend stub process 'streamer_0_0' (pid {stub.pid}) died"
    # Or Triton's python backend aborted the replica (the stub died holding the lock
    # of a response it was sending): replaced all the same.
    aborted = stub_death_aborted_replica(last["error"], "streamer")
    if not aborted:
        assert last == {"error": f"model 'streamer': {why}"}

    reasons: set[str] = set()

    def unavailable_naming_the_stub(response: httpx.Response) -> None:
        assert_unavailable(response)
        reasons.add(response.json()["error"])
        health = _ready(faults_url, "/v2/health/ready")
        assert health.status_code in (200, 503), health.text

    took = until_answered(
        lambda: stream_tokens(faults_url, 3),
        lambda r: streamed_in_order(r, 3),
        REPLACED_BOUND_S,
        allowed=unavailable_naming_the_stub,
    )
    print(f"streamer answered by a new replica {took:.1f} s after the stub was killed")
    assert aborted or any(why in r for r in reasons), reasons
    # The old replica stops (Serve's graceful shutdown, then Triton's stop, which no
    # longer waits for the requests the dead stub holds) while the new one may run.
    gone = wait_until(lambda: not procs.alive(replica), 60, "the old replica exits")
    print(f"the old streamer replica exited {gone:.1f} s later")
    replicas = procs.replica_pids(APP_NAME, "streamer")
    assert len(replicas) == 1 and replica not in replicas
    wait_until(lambda: not procs.stubs([replica]), 10, "the old replica's stubs exit")
    wait_until(lambda: not procs.shm_files([replica]), 10, "its regions are removed")
