"""Inference through the real library: dtypes, BYTES, batching, streaming, errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.triton import (
    DataType,
    InvalidArgumentError,
    NotFoundError,
    Server,
    Tensor,
    TritonError,
)
from tests.echo_dtypes import NUMERIC


@pytest.mark.parametrize(("name", "dtype"), NUMERIC)
async def test_every_numeric_dtype_round_trips(server: Server, name: str, dtype: type) -> None:
    data = (np.arange(12).reshape(3, 4) % 7).astype(dtype)
    response = await server.model("echo").infer({f"INPUT_{name}": data})
    out = response.outputs[f"OUTPUT_{name}"]
    assert out.dtype == np.dtype(dtype)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out, data)


async def test_all_dtypes_in_one_request(server: Server) -> None:
    inputs = {f"INPUT_{n}": np.ones((2, 3), dtype=d) for n, d in NUMERIC}
    response = await server.model("echo").infer(inputs)
    assert sorted(response.outputs) == sorted(f"OUTPUT_{n}" for n, _ in NUMERIC)


async def test_bytes_strings_and_raw_bytes(server: Server) -> None:
    values = np.array([["hello", "wörld", ""], ["a\x00b", "x" * 1000, "z"]], dtype=object)
    response = await server.model("echo").infer({"INPUT_BYTES": values})
    out = response.outputs["OUTPUT_BYTES"]
    assert out.shape == (2, 3)
    assert out[0, 1] == "wörld".encode()
    assert out[1, 0] == b"a\x00b"
    raw = np.array([[b"\xff\xfe\x00", b"\x80"]], dtype=object)
    response = await server.model("echo").infer({"INPUT_BYTES": raw})
    assert response.outputs["OUTPUT_BYTES"].tolist() == [[b"\xff\xfe\x00", b"\x80"]]


async def test_tensor_objects_and_requested_outputs(server: Server) -> None:
    tensor = Tensor.from_numpy(np.array([[1.5, 2.5]], dtype=np.float32))
    assert tensor.data_type is DataType.FP32
    response = await server.model("echo").infer(
        {"INPUT_FP32": tensor, "INPUT_INT32": np.array([[7]], dtype=np.int32)},
        output_names=["OUTPUT_INT32"],
    )
    assert list(response.outputs) == ["OUTPUT_INT32"]


async def test_large_tensor(server: Server) -> None:
    data = np.random.default_rng(0).random((1, 1 << 20), dtype=np.float32)  # 4 MiB
    response = await server.model("echo").infer({"INPUT_FP32": data})
    np.testing.assert_array_equal(response.outputs["OUTPUT_FP32"], data)


async def test_concurrent_requests_are_batched(server: Server) -> None:
    model = server.model("echo")
    before = model.statistics()

    async def one(i: int) -> None:
        x = np.full((1, 16), i, dtype=np.float32)
        response = await model.infer({"INPUT_FP32": x})
        np.testing.assert_array_equal(response.outputs["OUTPUT_FP32"], x)

    await asyncio.gather(*(one(i) for i in range(200)))
    after = model.statistics()
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 200
    assert executions < inferences  # the dynamic batcher merged requests


async def test_batch_dimension(server: Server) -> None:
    x = np.arange(64 * 5, dtype=np.int64).reshape(64, 5)
    response = await server.model("echo").infer({"INPUT_INT64": x})
    np.testing.assert_array_equal(response.outputs["OUTPUT_INT64"], x)


async def test_versions(server: Server) -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    latest = await server.model("versioned").infer({"INPUT0": x})
    v1 = await server.model("versioned", 1).infer({"INPUT0": x})
    np.testing.assert_array_equal(latest.outputs["OUTPUT0"], x * 2)
    np.testing.assert_array_equal(v1.outputs["OUTPUT0"], x)
    with pytest.raises(TritonError):
        await server.model("versioned", 3).infer({"INPUT0": x})


async def test_ensemble(server: Server) -> None:
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    response = await server.model("ensemble_pipeline").infer({"INPUT0": x})
    np.testing.assert_array_equal(response.outputs["OUTPUT0"], x * 2 + 1)


async def test_decoupled_stream(server: Server) -> None:
    model = server.model("streamer")
    assert model.decoupled
    responses = [r async for r in model.async_infer({"COUNT": np.array([4], dtype=np.int32)})]
    with_outputs = [r for r in responses if r.outputs]
    assert [int(r.outputs["INDEX"][0]) for r in with_outputs] == [0, 1, 2, 3]
    assert with_outputs[2].outputs["TEXT"][0] == b"token-2"
    assert responses[-1].final
    assert not any(r.final for r in responses[:-1])


async def test_decoupled_stream_of_zero(server: Server) -> None:
    responses = [
        r async for r in server.model("streamer").async_infer({"COUNT": np.array([0], np.int32)})
    ]
    assert len(responses) == 1
    assert responses[0].final
    assert responses[0].outputs == {}


async def test_decoupled_error_response(server: Server) -> None:
    with pytest.raises(TritonError, match="COUNT"):
        async for _ in server.model("streamer").async_infer({"COUNT": np.array([-1], np.int32)}):
            pass


async def test_request_parameters_reach_the_model(server: Server) -> None:
    x = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="delay_ms"):
        await server.model("echo").infer({"INPUT_FP32": x}, parameters={"delay_ms": "soon"})
    response = await server.model("echo").infer(
        {"INPUT_FP32": x}, parameters={"delay_ms": 1, "flag": True, "ratio": 0.5}, priority=1
    )
    assert "OUTPUT_FP32" in response.outputs


async def test_unknown_model_is_not_found(server: Server) -> None:
    with pytest.raises(NotFoundError):
        await server.model("no_such_model").infer({"X": np.zeros(1, np.float32)})


async def test_wrong_dtype_and_unknown_input(server: Server) -> None:
    with pytest.raises(InvalidArgumentError):
        await server.model("versioned").infer({"INPUT0": np.zeros(2, np.int32)})
    with pytest.raises(InvalidArgumentError):
        await server.model("echo").infer({"NOPE": np.zeros((1, 1), np.float32)})


async def test_non_contiguous_input_is_accepted(server: Server) -> None:
    x = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    response = await server.model("echo").infer({"INPUT_FP32": x})
    np.testing.assert_array_equal(response.outputs["OUTPUT_FP32"], x)


async def test_cancel_reaches_triton(server: Server) -> None:
    """A cancelled waiter cancels the request in Triton; the model sees it and stops."""
    model = server.model("echo")
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(
        model.infer({"INPUT_FP32": np.zeros((1, 1), np.float32)}, parameters={"delay_ms": 10_000})
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The model polls is_cancelled(): the next request is served well before 10 s.
    response = await asyncio.wait_for(
        model.infer({"INPUT_FP32": np.ones((1, 1), np.float32)}), timeout=5
    )
    assert response.outputs["OUTPUT_FP32"][0, 0] == 1
    assert loop.time() - started < 5


async def test_cancel_stops_a_stream(server: Server) -> None:
    stream = server.model("streamer").async_infer(
        {"COUNT": np.array([1000], np.int32), "DELAY_MS": np.array([20], np.int32)}
    )
    received = 0
    async for response in stream:
        received += 1 if response.outputs else 0
        if received == 3:
            stream.cancel()
        if response.final:
            break
    assert received < 100
