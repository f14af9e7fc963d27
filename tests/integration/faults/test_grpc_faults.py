"""The fault tests of HTTP, over gRPC: a model replica's process, then a python-backend
stub, SIGKILLed under an open ``ModelStreamInfer`` stream and during a unary
``ModelInfer``. Each call ends with ``UNAVAILABLE`` (never ``UNKNOWN`` or
``INTERNAL``, never a hang), and the models answer again afterwards.

The streams ask for Triton's ``triton_grpc_error: true``, so an error ends the stream
with its gRPC status rather than as an in-stream ``error_message``."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.faults.checks import stub_death_aborted_replica
from tests.integration.faults.conftest import APP_NAME, settled
from tests.integration.serve.grpc_support import Collector, echo_input
from tests.support import procs
from tests.support.waiting import wait_until

# The bounds of the HTTP fault tests (test_replica_killed.py, test_stub_killed.py).
CALL_END_BOUND_S = 10.0
REPLACED_BOUND_S = 120.0
ECHO_DATA = np.array([[1.5, -2.0, 3.25]], dtype=np.float32)
GRPC_ERROR = {"triton_grpc_error": "true"}


def _tokens(count: int, delay_ms: int = 0) -> list[triton_grpc.InferInput]:
    inputs = [echo_input("COUNT", np.array([count], dtype=np.int32), "INT32")]
    if delay_ms:
        inputs.append(echo_input("DELAY_MS", np.array([delay_ms], dtype=np.int32), "INT32"))
    return inputs


def _echo(address: str, delay_ms: int = 0) -> Any:
    with triton_grpc.InferenceServerClient(address) as client:
        parameters = {"delay_ms": delay_ms} if delay_ms else None
        inputs = [echo_input("INPUT_FP32", ECHO_DATA, "FP32")]
        return client.infer("echo", inputs, parameters=parameters, client_timeout=60)


def _status(error: BaseException) -> str | None:
    assert isinstance(error, InferenceServerException), repr(error)
    return error.status()


def _assert_unavailable(error: BaseException, *words: str) -> None:
    assert _status(error) == str(grpc.StatusCode.UNAVAILABLE), error
    for word in words:
        assert word in str(error.message()), error  # type: ignore[attr-defined]


class OpenStream:
    """A ``ModelStreamInfer`` stream asking ``streamer`` for many tokens."""

    def __init__(self, address: str) -> None:
        self.client = triton_grpc.InferenceServerClient(address)
        self.collector = Collector()
        self.client.start_stream(callback=self.collector, headers=GRPC_ERROR)
        self.client.async_stream_infer("streamer", _tokens(100, delay_ms=100))

    def tokens(self, n: int) -> None:
        for result, error in self.collector.take(n):
            assert error is None, error
            assert result.as_numpy("INDEX") is not None

    def error(self, bound_s: float) -> BaseException:
        """The error the stream ends with, skipping tokens still on their way."""
        started = time.monotonic()
        while time.monotonic() - started < bound_s:
            _, error = self.collector.items.get(timeout=bound_s)
            if error is not None:
                return error  # type: ignore[no-any-return]
        raise AssertionError(f"the stream did not end within {bound_s} s")

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def _streams_again(address: str) -> bool:
    client = triton_grpc.InferenceServerClient(address)
    collector = Collector()
    try:
        client.start_stream(callback=collector, headers=GRPC_ERROR)
        client.async_stream_infer("streamer", _tokens(3))
        answers = collector.take_until_error(3, timeout=60)
    finally:
        client.stop_stream()
        client.close()
    for _, error in answers:
        if error is not None:
            _assert_unavailable(error)
            return False
    indices = [int(result.as_numpy("INDEX")[0]) for result, _ in answers]
    assert indices == [0, 1, 2]
    return True


def _echoes_again(address: str) -> bool:
    try:
        result = _echo(address)
    except InferenceServerException as error:
        _assert_unavailable(error)
        return False
    np.testing.assert_array_equal(result.as_numpy("OUTPUT_FP32"), ECHO_DATA)
    return True


def _until(answered: Callable[[], bool], bound_s: float) -> float:
    """Seconds until ``answered()``; every failure meanwhile is a clean UNAVAILABLE."""
    started = time.monotonic()
    while not answered():
        assert time.monotonic() - started < bound_s, f"not answered within {bound_s} s"
        time.sleep(0.25)
    return time.monotonic() - started


def _unary_error(future: Future[Any]) -> BaseException:
    with pytest.raises(InferenceServerException) as info:
        future.result(timeout=60)
    return info.value


def test_replicas_killed_under_a_stream_and_a_unary_call(faults_grpc: str) -> None:
    (streamer,) = procs.replica_pids(APP_NAME, "streamer")
    (echo,) = procs.replica_pids(APP_NAME, "echo")
    stream = OpenStream(faults_grpc)
    try:
        with ThreadPoolExecutor(1) as pool:
            unary = pool.submit(_echo, faults_grpc, 5000)
            stream.tokens(3)
            time.sleep(0.5)  # the unary call waits out its delay in the echo replica
            procs.sigkill(streamer)
            procs.sigkill(echo)
            killed_at = time.monotonic()
            stream_error = stream.error(CALL_END_BOUND_S)
            unary_error = _unary_error(unary)
        assert time.monotonic() - killed_at < CALL_END_BOUND_S
    finally:
        stream.close()
    _assert_unavailable(stream_error, "model 'streamer'", "replica is unavailable")
    _assert_unavailable(unary_error, "model 'echo'", "replica is unavailable")

    took = _until(lambda: _echoes_again(faults_grpc), REPLACED_BOUND_S)
    print(f"echo answered over gRPC {took:.1f} s after its replica was killed")
    took = _until(lambda: _streams_again(faults_grpc), REPLACED_BOUND_S)
    print(f"streamer streamed over gRPC {took:.1f} s after its replica was killed")
    assert streamer not in procs.replica_pids(APP_NAME, "streamer")
    assert echo not in procs.replica_pids(APP_NAME, "echo")


def test_stubs_killed_under_a_stream_and_a_unary_call(faults_grpc: str) -> None:
    (streamer,) = procs.replica_pids(APP_NAME, "streamer")
    (echo,) = procs.replica_pids(APP_NAME, "echo")
    (streamer_stub,) = procs.stubs([streamer])
    (echo_stub,) = procs.stubs([echo])
    stream = OpenStream(faults_grpc)
    try:
        with ThreadPoolExecutor(1) as pool:
            unary = pool.submit(_echo, faults_grpc, 5000)
            stream.tokens(3)
            time.sleep(0.5)
            procs.sigkill(streamer_stub.pid)
            procs.sigkill(echo_stub.pid)
            killed_at = time.monotonic()
            stream_error = stream.error(CALL_END_BOUND_S)
            unary_error = _unary_error(unary)
        assert time.monotonic() - killed_at < CALL_END_BOUND_S
    finally:
        stream.close()
    why = "its python backend stub process '{}_0_0' (pid {}) died"
    _assert_unavailable(unary_error, why.format("echo", echo_stub.pid))
    # The watch ends the stream, or Triton's python backend aborted the replica (a stub
    # killed while it held a decoupled send's lock; docs/benchmarks.md) and Serve
    # replaces it.
    _assert_unavailable(stream_error)
    message = str(stream_error.message())  # type: ignore[attr-defined]
    aborted = stub_death_aborted_replica(message, "streamer")
    if not aborted:
        _assert_unavailable(stream_error, why.format("streamer", streamer_stub.pid))

    took = _until(lambda: _echoes_again(faults_grpc), REPLACED_BOUND_S)
    print(f"echo answered over gRPC {took:.1f} s after its stub was killed")
    took = _until(lambda: _streams_again(faults_grpc), REPLACED_BOUND_S)
    print(f"streamer streamed over gRPC {took:.1f} s after its stub was killed")
    # A replaced replica has exited with its stubs, a reloaded one runs only its new stub.
    wait_until(settled, REPLACED_BOUND_S, "one replica per deployment, one stub each")
    if aborted:
        assert streamer not in procs.replica_pids(APP_NAME, "streamer")
