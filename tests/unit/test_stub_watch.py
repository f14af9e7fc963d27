"""A replica's watch over its python-backend stubs, without Triton: a real process
stands in for a stub, a fake server records what the watch asks of it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import Unavailable
from app.replica.stub_watch import StubWatch
from app.triton import UnavailableError
from app.triton.stubs import StubProcess, is_running, model_of_instance


def _started(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_model_of_instance_follows_tritons_instance_names() -> None:
    models = ("echo", "tiny-llm", "echo_2")
    assert model_of_instance("echo_0_0", models) == "echo"
    assert model_of_instance("tiny-llm_1_3", models) == "tiny-llm"
    assert model_of_instance("echo_2_0_1", models) == "echo_2"
    assert model_of_instance("other_0_0", models) is None
    assert model_of_instance("named_group", models) is None


def test_a_killed_process_is_not_running_even_as_a_zombie() -> None:
    child = subprocess.Popen(["sleep", "30"])
    stub = StubProcess(child.pid, _started(child.pid), "echo_0_0")
    assert is_running(stub)
    assert not is_running(StubProcess(child.pid, stub.started + 1, "echo_0_0"))  # reused pid
    child.kill()
    time.sleep(0.2)  # not reaped yet: a zombie
    assert Path(f"/proc/{child.pid}").exists() and not is_running(stub)
    child.wait()
    assert not is_running(stub)


class FakeServer:
    def __init__(self, stubs: list[StubProcess], unload_error: Exception | None = None) -> None:
        self.stubs = stubs
        self.unload_error = unload_error
        self.failed: list[tuple[str, str]] = []
        self.unloaded: list[str] = []
        self.retiring: set[StubProcess] = set()

    def stub_processes(self) -> list[StubProcess]:
        return list(self.stubs)

    def retiring_stubs(self) -> set[StubProcess]:
        return set(self.retiring)

    def fail_requests(self, model: str, error: UnavailableError) -> None:
        self.failed.append((model, error.message))

    def unload(self, model: str, *, wait_until_unloaded: bool, timeout: float) -> None:
        if self.unload_error is not None:
            raise self.unload_error
        self.unloaded.append(model)


def _watch(
    server: FakeServer,
    reloaded: list[str],
    lock: threading.Lock,
    release: threading.Event | None = None,
) -> StubWatch:
    def reload(model: str) -> None:
        if release is not None:
            release.wait(5)
        reloaded.append(model)
        server.stubs = [StubProcess(server.stubs[0].pid + 1000, 1, f"{model}_0_0")]

    return StubWatch(server, ("echo", "streamer"), lock, reload)  # type: ignore[arg-type]


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def stub_process() -> Iterator[StubProcess]:
    child = subprocess.Popen(["sleep", "30"])
    yield StubProcess(child.pid, _started(child.pid), "echo_0_0")
    child.kill()
    child.wait()


def test_a_dead_stub_makes_its_model_unavailable_until_reloaded(
    stub_process: StubProcess,
) -> None:
    server = FakeServer([stub_process])
    reloaded: list[str] = []
    lock = threading.Lock()
    release = threading.Event()  # a reload takes seconds; this one until released
    watch = _watch(server, reloaded, lock, release)
    watch.check()
    assert watch.why_unavailable("echo") is None
    with lock:  # a load in progress: deaths are not looked for
        subprocess.run(["kill", "-9", str(stub_process.pid)], check=True)
        time.sleep(0.1)
        watch.check()
        assert watch.why_unavailable("echo") is None
    with pytest.raises(Unavailable) as raised:
        watch.raise_if_unavailable("echo")  # checks first
    why = f"its python backend stub process 'echo_0_0' (pid {stub_process.pid}) died"
    assert raised.value.message == f"model 'echo' is not ready: {why}; reloading it"
    assert raised.value.retry_after == 5
    assert server.failed == [("echo", f"model 'echo': {why}")]
    release.set()
    _wait_for(lambda: watch.why_unavailable("echo") is None)
    assert server.unloaded == ["echo"] and reloaded == ["echo"]
    assert watch.health_problem() is None
    watch.raise_if_unavailable("streamer")


def test_a_model_that_cannot_be_reloaded_fails_the_health_check(
    stub_process: StubProcess,
) -> None:
    stuck = UnavailableError("model 'echo' did not unload within 5.0 s")
    server = FakeServer([stub_process], unload_error=stuck)
    watch = _watch(server, [], threading.Lock())
    subprocess.run(["kill", "-9", str(stub_process.pid)], check=True)
    time.sleep(0.1)
    watch.check()
    _wait_for(lambda: watch.health_problem() is not None)
    why = f"its python backend stub process 'echo_0_0' (pid {stub_process.pid}) died"
    expected = f"{why}; reloading it failed: model 'echo' did not unload within 5.0 s"
    assert watch.health_problem() == f"echo: {expected}"
    assert watch.why_unavailable("echo") == expected


def test_a_reloads_replaced_stub_exiting_later_is_no_death(stub_process: StubProcess) -> None:
    """A config reload returns before Triton destroys the old version: its stub exits
    after the snapshot that follows the load."""
    server = FakeServer([stub_process])
    server.retiring = {stub_process}
    watch = _watch(server, [], threading.Lock())
    subprocess.run(["kill", "-9", str(stub_process.pid)], check=True)
    time.sleep(0.1)
    watch.check()
    assert watch.why_unavailable("echo") is None
    assert server.failed == [] and server.unloaded == []


def test_tritons_own_stub_death_answer_gets_the_watchs_reason(stub_process: StubProcess) -> None:
    server = FakeServer([stub_process])
    watch = _watch(server, [], threading.Lock(), threading.Event())  # reload held back
    assert watch.explain_stub_death("echo") is None  # the stub lives: Triton's words stand
    subprocess.run(["kill", "-9", str(stub_process.pid)], check=True)
    time.sleep(0.1)
    explained = watch.explain_stub_death("echo")  # looks at once, no report period
    why = f"its python backend stub process 'echo_0_0' (pid {stub_process.pid}) died"
    assert explained is not None and explained.retry_after == 5
    assert explained.message == f"model 'echo': {why}; reloading it"
    assert server.failed == [("echo", f"model 'echo': {why}")]
