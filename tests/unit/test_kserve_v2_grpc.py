"""Triton's gRPC messages to and from the application's types, the status table and
the stream multiplexer, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2 as pb

from app.errors import (
    BadRequest,
    ClientClosedRequest,
    Forbidden,
    Internal,
    NotFound,
    NotImplementedFeature,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from app.grpc.status import grpc_code
from app.grpc.stream import StreamAbort, multiplex
from app.protocol.kserve_v2 import grpc as convert
from app.triton.tensors import DataType
from tests.echo_dtypes import NUMERIC

LIMITS = {"max_elements": 1 << 20, "max_bytes_element": 1024}


def request_of(*tensors: tuple[str, np.ndarray, str], **params: object) -> pb.ModelInferRequest:
    """A request built the way tritonclient.grpc builds it (raw_input_contents)."""
    inputs = []
    for name, data, datatype in tensors:
        tensor = triton_grpc.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    request = pb.ModelInferRequest(model_name="m", id="r1")
    for tensor in inputs:
        request.inputs.append(tensor._get_tensor())
        request.raw_input_contents.append(tensor._get_content())
    for key, value in params.items():
        param = request.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = str(value)
    return request


def decode(request: pb.ModelInferRequest) -> tuple[object, bool]:
    return convert.decode_infer_request(request, **LIMITS)


@pytest.mark.parametrize(("name", "dtype"), NUMERIC)
def test_numeric_raw_inputs_decode_to_the_same_array(name: str, dtype: type) -> None:
    data = (np.arange(6).reshape(2, 3) % 5).astype(dtype)
    decoded, empty_final = convert.decode_infer_request(request_of(("X", data, name)), **LIMITS)
    assert not empty_final
    (tensor,) = decoded.inputs
    assert tensor.datatype is DataType[name]
    assert tensor.shape == (2, 3)
    np.testing.assert_array_equal(tensor.to_numpy(), data)
    assert decoded.id == "r1"


def test_bytes_raw_input() -> None:
    data = np.array([b"a", b"\xff\x00", "héllo".encode()], dtype=object)
    decoded, _ = decode(request_of(("S", data, "BYTES")))
    np.testing.assert_array_equal(decoded.inputs[0].to_numpy(), data)


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("INT8", "int_contents", [-128, 127], np.int8),
        ("UINT16", "uint_contents", [0, 65535], np.uint16),
        ("INT64", "int64_contents", [-(1 << 62), 5], np.int64),
        ("UINT64", "uint64_contents", [(1 << 64) - 1, 0], np.uint64),
        ("FP32", "fp32_contents", [1.5, -2.0], np.float32),
        ("FP64", "fp64_contents", [1e300, 0.0], np.float64),
        ("BOOL", "bool_contents", [True, False], np.bool_),
    ],
)
def test_typed_contents(datatype: str, field: str, values: list[object], dtype: type) -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="X", datatype=datatype, shape=[2])
    getattr(tensor.contents, field).extend(values)
    decoded, _ = decode(request)
    np.testing.assert_array_equal(decoded.inputs[0].to_numpy(), np.array(values, dtype=dtype))


def test_typed_bytes_contents() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="S", datatype="BYTES", shape=[1, 2])
    tensor.contents.bytes_contents.extend([b"x", b"yz"])
    decoded, _ = decode(request)
    assert decoded.inputs[0].to_numpy().tolist() == [[b"x", b"yz"]]


def _bad(request: pb.ModelInferRequest, error: type, *words: str) -> None:
    with pytest.raises(error) as info:
        decode(request)
    for word in words:
        assert word in str(info.value)


def test_size_and_count_mismatches_are_bad_requests() -> None:
    request = request_of(("X", np.ones((1, 3), np.float32), "FP32"))
    request.inputs[0].shape[:] = [1, 5]
    _bad(request, BadRequest, "input 'X'", "20")
    request = request_of(
        ("X", np.ones(2, np.float32), "FP32"), ("Y", np.ones(2, np.int32), "INT32")
    )
    del request.raw_input_contents[1]
    _bad(request, BadRequest, "raw_input_contents")
    request = request_of(("X", np.ones(2, np.float32), "FP32"))
    request.inputs.append(request.inputs[0])
    request.raw_input_contents.append(request.raw_input_contents[0])
    _bad(request, BadRequest, "more than once")
    contents = pb.ModelInferRequest(model_name="m")
    contents.inputs.add(name="X", datatype="INT32", shape=[3]).contents.int_contents.extend([1])
    _bad(contents, BadRequest, "input 'X'", "3")


def test_datatype_shape_and_range_errors() -> None:
    request = request_of(("X", np.ones(2, np.float32), "FP32"))
    request.inputs[0].datatype = "FP8"
    _bad(request, BadRequest, "unknown datatype")
    request.inputs[0].datatype = "FP32"
    request.inputs[0].shape[:] = [-1, 2]
    _bad(request, BadRequest, "invalid shape")
    narrow = pb.ModelInferRequest(model_name="m")
    narrow.inputs.add(name="X", datatype="INT8", shape=[1]).contents.int_contents.extend([300])
    _bad(narrow, BadRequest, "out of range")
    half = pb.ModelInferRequest(model_name="m")
    half.inputs.add(name="X", datatype="FP16", shape=[1]).contents.fp32_contents.extend([1.0])
    _bad(half, BadRequest, "raw_input_contents")


def test_tensor_limits_are_bad_requests() -> None:
    request = request_of(("X", np.ones(2, np.float32), "FP32"))
    request.inputs[0].shape[:] = [1 << 30]
    _bad(request, BadRequest, "elements")
    long = request_of(("S", np.array([b"x" * 2000], dtype=object), "BYTES"))
    _bad(long, BadRequest, "BYTES element")


def test_truncated_bytes_are_refused() -> None:
    request = request_of(("S", np.array([b"abc"], dtype=object), "BYTES"))
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    _bad(request, BadRequest, "truncated")


def test_reserved_and_custom_parameters() -> None:
    request = request_of(
        ("X", np.ones(1, np.float32), "FP32"),
        sequence_id=7,
        sequence_start=True,
        priority=2,
        timeout=1000,
        triton_enable_empty_final_response=True,
        custom="on",
    )
    decoded, empty_final = decode(request)
    assert empty_final
    assert (decoded.sequence_id, decoded.sequence_start, decoded.sequence_end) == (7, True, False)
    assert (decoded.priority, decoded.timeout_us) == (2, 1000)
    assert decoded.parameters == {"custom": "on"}
    _bad(request_of(("X", np.ones(1, np.float32), "FP32"), triton_x=1), BadRequest, "reserved")
    _bad(request_of(("X", np.ones(1, np.float32), "FP32"), priority=-1), BadRequest, "priority")


def test_shared_memory_and_classification_are_not_implemented() -> None:
    request = request_of(("X", np.ones(1, np.float32), "FP32"))
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"
    _bad(request, NotImplementedFeature, "shared-memory")
    request = request_of(("X", np.ones(1, np.float32), "FP32"))
    out = request.outputs.add(name="Y")
    out.parameters["classification"].int64_param = 3
    _bad(request, NotImplementedFeature, "classification")


def test_requested_outputs() -> None:
    request = request_of(("X", np.ones(1, np.float32), "FP32"))
    assert decode(request)[0].outputs is None
    request.outputs.add(name="A")
    request.outputs.add(name="B")
    assert [o.name for o in decode(request)[0].outputs] == ["A", "B"]
    request.outputs.add(name="A")
    _bad(request, BadRequest, "more than once")


def test_malformed_message_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        convert.parse_infer_request(b"\xff\xff\xff")


def test_response_reads_back_with_tritonclient() -> None:
    outputs = [
        ("F", DataType.FP32, np.arange(6, dtype=np.float32).reshape(2, 3)),
        ("B", DataType.BF16, np.array([1.5, -2], dtype=ml_dtypes.bfloat16)),
        ("S", DataType.BYTES, np.array([b"a", b"\xff"], dtype=object)),
        ("E", DataType.INT32, np.zeros((0, 2), dtype=np.int32)),
    ]
    response = convert.encode_infer_response("m", "2", "r1", outputs, {"final": True, "n": 3})
    result = triton_grpc.InferResult(pb.ModelInferResponse.FromString(response.SerializeToString()))
    for name, _, data in outputs:
        got = result.as_numpy(name)
        assert got.shape == data.shape, name
        np.testing.assert_array_equal(got, data)
    parsed = result.get_response()
    assert (parsed.model_name, parsed.model_version, parsed.id) == ("m", "2", "r1")
    assert parsed.parameters["final"].bool_param is True
    assert parsed.parameters["n"].int64_param == 3


def test_stream_messages() -> None:
    inner = convert.encode_infer_response("m", "1", None, [])
    assert convert.stream_response(inner).infer_response.model_name == "m"
    assert convert.stream_error("boom").error_message == "boom"


def test_metadata_config_statistics_and_index() -> None:
    meta = convert.encode_model_metadata(
        {
            "name": "m",
            "versions": ["1"],
            "platform": "python",
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "Y", "datatype": "BYTES", "shape": [1]}],
        }
    )
    assert (meta.inputs[0].name, list(meta.inputs[0].shape)) == ("X", [-1, 3])
    config = convert.encode_model_config(
        {
            "name": "m",
            "backend": "python",
            "max_batch_size": 8,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
            "model_transaction_policy": {"decoupled": True},
            "parameters": {"k": {"string_value": "v"}},
            "a_field_from_a_newer_triton": 1,
        }
    ).config
    assert config.max_batch_size == 8
    assert config.input[0].data_type == triton_grpc.model_config_pb2.TYPE_FP32
    assert config.model_transaction_policy.decoupled
    assert config.parameters["k"].string_value == "v"
    stats = convert.encode_statistics(
        [
            {
                "name": "m",
                "version": "1",
                "inference_count": 4,
                "inference_stats": {"success": {"count": 4, "ns": 10}},
            }
        ]
    )
    assert stats.model_stats[0].inference_stats.success.ns == 10
    index = convert.encode_repository_index(
        [{"name": "m", "version": "1", "state": "READY", "reason": ""}, {"name": "n"}]
    )
    assert [(m.name, m.state) for m in index.models] == [("m", "READY"), ("n", "")]


def test_load_and_unload_parameters() -> None:
    request = pb.RepositoryModelLoadRequest(model_name="m")
    request.parameters["config"].string_param = '{"max_batch_size": 2}'
    request.parameters["file:1/model.py"].bytes_param = b"print(1)"
    load = convert.decode_load_request(request)
    assert load.config == '{"max_batch_size": 2}'
    assert load.files() == {"file:1/model.py": b"print(1)"}
    for key, attr, value in [
        ("config", "string_param", "[1]"),
        ("file:../x", "bytes_param", b""),
        ("other", "string_param", "x"),
        ("config", "bool_param", True),
    ]:
        bad = pb.RepositoryModelLoadRequest(model_name="m")
        setattr(bad.parameters[key], attr, value)
        with pytest.raises(BadRequest):
            convert.decode_load_request(bad)
    unload = pb.RepositoryModelUnloadRequest(model_name="m")
    assert convert.decode_unload_dependents(unload) is False
    unload.parameters["unload_dependents"].bool_param = True
    assert convert.decode_unload_dependents(unload) is True
    unload.parameters["unload_dependents"].string_param = "yes"
    with pytest.raises(BadRequest):
        convert.decode_unload_dependents(unload)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
        (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (RequestTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
        (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (TooManyRequests, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ClientClosedRequest, grpc.StatusCode.CANCELLED),
        (Internal, grpc.StatusCode.INTERNAL),
        (NotImplementedFeature, grpc.StatusCode.UNIMPLEMENTED),
        (Unavailable, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_codes(error: type, code: grpc.StatusCode) -> None:
    assert grpc_code(error("x")) == code


# ---- the ModelStreamInfer multiplexer ----


async def _requests(*items: object, gap_s: float = 0.0) -> AsyncIterator[object]:
    for item in items:
        await asyncio.sleep(gap_s)
        yield item


async def test_multiplex_interleaves_and_keeps_each_requests_order() -> None:
    async def responses(request: object) -> AsyncIterator[bytes]:
        name, count, delay = request  # type: ignore[misc]
        for i in range(count):
            await asyncio.sleep(delay)
            yield f"{name}{i}".encode()

    out = [
        item
        async for item in multiplex(
            _requests(("slow", 3, 0.05), ("fast", 2, 0.01)), responses, max_in_flight=4, buffer=4
        )
    ]
    assert [o for o in out if o.startswith(b"slow")] == [b"slow0", b"slow1", b"slow2"]
    assert [o for o in out if o.startswith(b"fast")] == [b"fast0", b"fast1"]
    assert out.index(b"fast1") < out.index(b"slow1")


async def test_multiplex_bounds_requests_in_flight() -> None:
    running = 0
    peak = 0

    async def responses(request: object) -> AsyncIterator[bytes]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        yield b"x"

    out = [
        item
        async for item in multiplex(_requests(*range(10)), responses, max_in_flight=2, buffer=1)
    ]
    assert len(out) == 10
    assert peak == 2


async def test_closing_the_stream_cancels_running_requests() -> None:
    cancelled = asyncio.Event()

    async def responses(request: object) -> AsyncIterator[bytes]:
        yield b"first"
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()
        yield b"never"

    stream = multiplex(_requests(1), responses, max_in_flight=1, buffer=1)
    assert await stream.__anext__() == b"first"
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), timeout=5)


async def test_a_failing_request_iterator_ends_the_stream_with_its_error() -> None:
    async def broken() -> AsyncIterator[object]:
        yield 1
        raise ConnectionError("client went away")

    async def responses(request: object) -> AsyncIterator[bytes]:
        yield b"ok"

    with pytest.raises(ConnectionError):
        async for _ in multiplex(broken(), responses, max_in_flight=1, buffer=1):
            pass


async def test_an_aborting_request_ends_the_stream_after_earlier_responses() -> None:
    async def responses(request: object) -> AsyncIterator[bytes]:
        if request == "bad":
            await asyncio.sleep(0.05)  # after the good request's response is queued
            raise StreamAbort(Unavailable("its replica is unavailable"))
        yield b"ok"
        await asyncio.sleep(60)  # still running when the stream ends: cancelled
        yield b"never"

    out: list[bytes] = []
    with pytest.raises(Unavailable, match="replica is unavailable"):
        async for item in multiplex(_requests("good", "bad"), responses, max_in_flight=2, buffer=2):
            out.append(item)
    assert out == [b"ok"]
