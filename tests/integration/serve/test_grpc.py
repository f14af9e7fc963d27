"""Triton's gRPC protocol through Serve's gRPC proxy, with the unchanged tritonclient.grpc.

Other applications may run in this cluster (test_auth.py's), so the client names
the application in the call metadata (Serve's ``application`` key) with a
tritonclient plugin; with a single application no metadata is needed
(``test_single_application_needs_no_metadata``, which waits until the others are gone).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from ray import serve
from tritonclient.utils import InferenceServerException

from tests.echo_dtypes import NUMERIC
from tests.integration.serve.conftest import APP_NAME, BODY_LIMIT
from tests.integration.serve.grpc_support import (
    Collector,
    Metadata,
    echo_input,
    is_final,
    status_of,
)
from tests.support.waiting import wait_until


def make_client(grpc_host: str, **metadata: str) -> triton_grpc.InferenceServerClient:
    client = triton_grpc.InferenceServerClient(grpc_host)
    client.register_plugin(Metadata(application=APP_NAME, **metadata))
    return client


@pytest.fixture(scope="module")
def client(grpc_host: str) -> Iterator[triton_grpc.InferenceServerClient]:
    with make_client(grpc_host) as c:
        yield c


# ---- health, metadata, config ----


def test_health_and_server_metadata(
    client: triton_grpc.InferenceServerClient, serve_url: str
) -> None:
    assert client.is_server_live()
    # The package's app holds a model Triton refuses and one that cannot be placed,
    # so the server is not ready, as HTTP says.
    assert httpx.get(f"{serve_url}/v2/health/ready", timeout=30).status_code == 503
    assert client.is_server_ready() is False
    assert client.is_model_ready("echo")
    meta = client.get_server_metadata()
    assert meta.name == "triton"
    assert meta.version.startswith("2.")
    assert "model_repository" in meta.extensions


def test_model_metadata_and_config(client: triton_grpc.InferenceServerClient) -> None:
    meta = client.get_model_metadata("echo")
    assert meta.name == "echo"
    assert meta.platform == "python"
    inputs = {t.name: t for t in meta.inputs}
    assert inputs["INPUT_BF16"].datatype == "BF16"
    assert list(inputs["INPUT_FP32"].shape) == [-1, -1]
    config = client.get_model_config("echo").config
    assert config.max_batch_size == 64
    assert config.backend == "python"
    streamer = client.get_model_config("streamer").config
    assert streamer.model_transaction_policy.decoupled
    assert [o.name for o in streamer.output] == ["INDEX", "TEXT"]


# ---- inference ----


def test_every_dtype(client: triton_grpc.InferenceServerClient) -> None:
    inputs, expected = [], {}
    for name, dtype in NUMERIC:
        data = (np.arange(6).reshape(2, 3) % 5).astype(dtype)
        inputs.append(echo_input(f"INPUT_{name}", data, name))
        expected[f"OUTPUT_{name}"] = data
    result = client.infer("echo", inputs, request_id="dtypes-1")
    assert result.get_response().id == "dtypes-1"
    for name, data in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == data.dtype, name
        np.testing.assert_array_equal(got, data)


def test_bytes_large_tensor_and_requested_outputs(
    client: triton_grpc.InferenceServerClient,
) -> None:
    strings = np.array([["héllo".encode(), b""], [b"\xff\x00raw", b"z" * 5000]], dtype=object)
    big = np.random.default_rng(1).random((2, 1 << 19), dtype=np.float32)  # 4 MiB
    inputs = [echo_input("INPUT_BYTES", strings, "BYTES"), echo_input("INPUT_FP32", big, "FP32")]
    result = client.infer("echo", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT_BYTES"), strings)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT_FP32"), big)
    only = client.infer("echo", inputs, outputs=[triton_grpc.InferRequestedOutput("OUTPUT_BYTES")])
    assert [o.name for o in only.get_response().outputs] == ["OUTPUT_BYTES"]


def test_ensemble(client: triton_grpc.InferenceServerClient) -> None:
    x = np.array([1.0, 2.0, -3.5], dtype=np.float32)
    result = client.infer("ensemble_pipeline", [echo_input("INPUT0", x, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x * 2 + 1)


def test_statistics(client: triton_grpc.InferenceServerClient) -> None:
    before = client.get_inference_statistics("echo").model_stats
    x = np.ones((1, 2), dtype=np.float32)
    client.infer("echo", [echo_input("INPUT_FP32", x, "FP32")])
    after = client.get_inference_statistics("echo").model_stats
    assert [s.name for s in after] == ["echo"]
    assert after[0].inference_count == before[0].inference_count + 1
    assert after[0].inference_stats.success.count >= 1
    every = {s.name for s in client.get_inference_statistics().model_stats}
    assert {"echo", "streamer", "ensemble_pipeline"} <= every


def test_repository_index_unload_and_load(client: triton_grpc.InferenceServerClient) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["echo"].state == "READY"
    assert index["invalid_config"].state != "READY"
    assert index["invalid_config"].reason
    client.unload_model("streamer")
    assert not client.is_model_ready("streamer")
    client.load_model("streamer")
    assert client.is_model_ready("streamer")


# ---- ModelStreamInfer ----


def count_input(n: int, delay_ms: int | None = None) -> list[triton_grpc.InferInput]:
    inputs = [echo_input("COUNT", np.array([n], dtype=np.int32), "INT32")]
    if delay_ms is not None:
        inputs.append(echo_input("DELAY_MS", np.array([delay_ms], dtype=np.int32), "INT32"))
    return inputs


def test_stream_tokens_in_order_with_empty_final(client: triton_grpc.InferenceServerClient) -> None:
    collector = Collector()
    client.start_stream(callback=collector)
    try:
        client.async_stream_infer(
            "streamer", count_input(3), request_id="s1", enable_empty_final_response=True
        )
        got = collector.take(4)
    finally:
        client.stop_stream()
    assert [error for _, error in got] == [None] * 4
    results = [result for result, _ in got]
    assert [r.get_response().id for r in results] == ["s1"] * 4
    assert [r.as_numpy("INDEX").tolist() for r in results[:3]] == [[0], [1], [2]]
    assert [r.as_numpy("TEXT")[0] for r in results[:3]] == [b"token-0", b"token-1", b"token-2"]
    assert [is_final(r) for r in results] == [False, False, False, True]
    assert len(results[3].get_response().outputs) == 0


def test_stream_without_empty_final_and_interleaved(
    client: triton_grpc.InferenceServerClient,
) -> None:
    collector = Collector()
    client.start_stream(callback=collector)
    try:
        client.async_stream_infer("streamer", count_input(3, delay_ms=200), request_id="slow")
        client.async_stream_infer("streamer", count_input(2), request_id="fast")
        got = collector.take(5)
    finally:
        client.stop_stream()
    assert collector.items.empty()  # no empty final responses unless asked for
    order = [(r.get_response().id, int(r.as_numpy("INDEX")[0])) for r, _ in got]
    # Each request's tokens in order; the fast one does not wait for the slow one.
    assert [i for rid, i in order if rid == "slow"] == [0, 1, 2]
    assert [i for rid, i in order if rid == "fast"] == [0, 1]
    assert order.index(("fast", 1)) < order.index(("slow", 2))
    assert all(is_final(r) is None for r, _ in got)


def test_stream_errors_stay_in_the_stream(client: triton_grpc.InferenceServerClient) -> None:
    collector = Collector()
    client.start_stream(callback=collector)
    try:
        client.async_stream_infer("no-such-model", count_input(1), request_id="bad")
        ((result, error),) = collector.take(1)
        assert result is None
        assert "no-such-model" in error.message()
        client.async_stream_infer("streamer", count_input(-1), request_id="failing")
        ((result, error),) = collector.take(1)
        assert result is None and error.message()
        bad_dtype = [echo_input("COUNT", np.array([1.0], dtype=np.float32), "FP32")]
        client.async_stream_infer("streamer", bad_dtype)
        ((result, error),) = collector.take(1)
        assert result is None and "COUNT" in error.message()
        # The stream still serves the next request.
        client.async_stream_infer("streamer", count_input(1), request_id="after")
        ((result, error),) = collector.take(1)
        assert error is None and result.get_response().id == "after"
    finally:
        client.stop_stream()


def test_non_decoupled_model_on_a_stream(client: triton_grpc.InferenceServerClient) -> None:
    collector = Collector()
    client.start_stream(callback=collector)
    try:
        x = np.array([1.0, 2.0], dtype=np.float32)
        client.async_stream_infer(
            "ensemble_pipeline", [echo_input("INPUT0", x, "FP32")], enable_empty_final_response=True
        )
        ((result, error),) = collector.take(1)
    finally:
        client.stop_stream()
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x * 2 + 1)
    assert is_final(result) is True


# ---- errors as gRPC status codes ----


def test_unknown_model_is_not_found(client: triton_grpc.InferenceServerClient) -> None:
    x = np.ones((1, 2), dtype=np.float32)
    assert status_of(lambda: client.infer("nope", [echo_input("INPUT_FP32", x, "FP32")])) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert status_of(lambda: client.get_model_metadata("nope")) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: client.get_model_config("nope")) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: client.is_model_ready("nope")) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: client.load_model("nope")) == grpc.StatusCode.NOT_FOUND


def test_bad_shape_and_dtype_are_invalid_argument(
    client: triton_grpc.InferenceServerClient,
) -> None:
    x = np.ones((1, 3), dtype=np.float32)
    wrong_shape = echo_input("INPUT_FP32", x, "FP32")
    wrong_shape.set_shape([1, 5])  # 12 bytes of data for 5 elements
    with pytest.raises(InferenceServerException) as info:
        client.infer("echo", [wrong_shape])
    assert info.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "INPUT_FP32" in info.value.message()
    wrong_dtype = echo_input("INPUT_FP32", x.astype(np.int32), "INT32")
    assert status_of(lambda: client.infer("echo", [wrong_dtype])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    negative = echo_input("INPUT_FP32", x, "FP32")
    negative.set_shape([-1, 3])
    assert status_of(lambda: client.infer("echo", [negative])) == grpc.StatusCode.INVALID_ARGUMENT


def test_decoupled_model_on_unary_infer_is_unimplemented(
    client: triton_grpc.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("streamer", count_input(1))
    assert info.value.status() == str(grpc.StatusCode.UNIMPLEMENTED)
    assert "decoupled" in info.value.message()


def test_oversize_body_and_tensor_limits(client: triton_grpc.InferenceServerClient) -> None:
    big = np.zeros((1, BODY_LIMIT // 4 + 16), dtype=np.float32)
    assert status_of(lambda: client.infer("echo", [echo_input("INPUT_FP32", big, "FP32")])) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    huge = echo_input("INPUT_FP32", np.ones((1, 1), dtype=np.float32), "FP32")
    huge.set_shape([1, 1 << 40])  # too many elements, refused before any data is read
    assert status_of(lambda: client.infer("echo", [huge])) == grpc.StatusCode.INVALID_ARGUMENT


def test_timeout_is_deadline_exceeded(grpc_host: str) -> None:
    with make_client(grpc_host, **{"x-request-timeout": "0.5"}) as slow_client:
        x = np.ones((1, 1), dtype=np.float32)
        call = lambda: slow_client.infer(  # noqa: E731
            "echo", [echo_input("INPUT_FP32", x, "FP32")], parameters={"delay_ms": 5000}
        )
        assert status_of(call) == grpc.StatusCode.DEADLINE_EXCEEDED


def _router_count(serve_url: str, route: str, status: int) -> int:
    text = httpx.get(f"{serve_url}/metrics", timeout=30).text
    line = f'triton_serve_requests_total{{model="echo",route="{route}",status="{status}"}} '
    rows = [row.removeprefix(line) for row in text.splitlines() if row.startswith(line)]
    counts = [int(float(value)) for value in rows]
    return counts[0] if counts else 0


def _echo_compute_s(client: triton_grpc.InferenceServerClient) -> float:
    stats = client.get_inference_statistics("echo", as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["compute_infer"]["ns"]) / 1e9


def test_client_deadline_is_the_request_timeout(
    client: triton_grpc.InferenceServerClient, serve_url: str
) -> None:
    """The client's own gRPC deadline, no metadata: the router times the call out
    itself (its 408 count rises) and the work stops in Triton (echo's compute time
    grows by about the deadline, not the 4 s asked for; the next call runs at once)."""
    timed_out = _router_count(serve_url, "grpc/ModelInfer", 408)
    compute = _echo_compute_s(client)
    x = np.ones((1, 1), dtype=np.float32)
    call = lambda: client.infer(  # noqa: E731
        "echo",
        [echo_input("INPUT_FP32", x, "FP32")],
        parameters={"delay_ms": 4000},
        client_timeout=1.0,
    )
    assert status_of(call) == grpc.StatusCode.DEADLINE_EXCEEDED
    result = client.infer("echo", [echo_input("INPUT_FP32", x, "FP32")], client_timeout=30)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT_FP32"), x)
    for _ in range(40):  # the router's answer may land after the client gave up
        if _router_count(serve_url, "grpc/ModelInfer", 408) > timed_out:
            break
        time.sleep(0.25)
    assert _router_count(serve_url, "grpc/ModelInfer", 408) == timed_out + 1
    assert _echo_compute_s(client) - compute < 2.5


def test_shared_memory_is_unimplemented(client: triton_grpc.InferenceServerClient) -> None:
    assert status_of(client.get_system_shared_memory_status) == grpc.StatusCode.UNIMPLEMENTED
    tensor = triton_grpc.InferInput("INPUT_FP32", [1, 2], "FP32")
    tensor.set_shared_memory("region", 8)
    assert status_of(lambda: client.infer("echo", [tensor])) == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_requests_are_counted(
    client: triton_grpc.InferenceServerClient, serve_url: str
) -> None:
    client.get_model_metadata("echo")
    text = httpx.get(f"{serve_url}/metrics", timeout=30).text
    assert 'model="echo",route="grpc/ModelMetadata",status="200"' in text


def test_single_application_needs_no_metadata(grpc_host: str) -> None:
    """tritonclient's own call pattern: no ``application`` metadata at all. Serve needs
    the metadata while another application runs, so this waits (bounded) until the
    module-scoped applications of the modules before it are deleted."""
    wait_until(
        lambda: set(serve.status().applications) == {APP_NAME},
        120,
        "the other applications deleted",
    )
    with triton_grpc.InferenceServerClient(grpc_host) as plain:
        assert plain.is_server_live()
        x = np.ones((1, 2), dtype=np.float32)
        result = plain.infer("echo", [echo_input("INPUT_FP32", x, "FP32")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT_FP32"), x)
