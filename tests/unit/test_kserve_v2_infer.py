"""Infer requests and responses against the real ``tritonclient.http`` encoder/decoder."""

from __future__ import annotations

import json
import pickle
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient

from app.protocol.kserve_v2 import (
    DecodedInferRequest,
    InferResponse,
    RequestedOutput,
    classify,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from app.triton.tensors import DataType

LIMITS: dict[str, int] = {"max_elements": 1 << 26, "max_bytes_element": 1 << 20}

NUMERIC: list[tuple[str, npt.NDArray[Any]]] = [
    ("BOOL", np.array([[True, False, True], [False, False, True]])),
    ("UINT8", np.array([[0, 255, 7]], dtype=np.uint8)),
    ("UINT16", np.array([0, 65535], dtype=np.uint16)),
    ("UINT32", np.array([0, 2**32 - 1], dtype=np.uint32)),
    ("UINT64", np.array([0, 2**64 - 1], dtype=np.uint64)),
    ("INT8", np.array([-128, 127, 0], dtype=np.int8)),
    ("INT16", np.array([[-(2**15), 2**15 - 1]], dtype=np.int16)),
    ("INT32", np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 7),
    ("INT64", np.array([-(2**63), 2**63 - 1], dtype=np.int64)),
    ("FP16", np.array([0.5, -1.25, 65504.0], dtype=np.float16)),
    ("FP32", np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)),
    ("FP64", np.array([[1e300, -2.5e-300]], dtype=np.float64)),
    ("BF16", np.array([1.5, -2.0, 3.0e38], dtype=ml_dtypes.bfloat16)),
]
BYTES_VALUES = np.array([[b"hello", b""], ["wörld".encode(), b"\x00\x01\xff"]], dtype=np.object_)


def client_body(inputs: list[httpclient.InferInput], **kwargs: Any) -> tuple[bytes, int | None]:
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return bytes(body), header_length


def make_input(name: str, datatype: str, array: npt.NDArray[Any], binary: bool) -> Any:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def parse(body: bytes, header_length: int | None) -> Any:
    return httpclient.InferenceServerClient.parse_response_body(
        body, verbose=False, header_length=header_length, content_encoding=None
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("datatype", "array"), NUMERIC, ids=[d for d, _ in NUMERIC])
def test_numeric_inputs_decode_from_tritonclient(
    datatype: str, array: npt.NDArray[Any], binary: bool
) -> None:
    if datatype == "BF16" and not binary:
        pytest.skip("tritonclient refuses to put BF16 in JSON")
    body, header_length = client_body([make_input("x", datatype, array, binary)])
    assert (header_length is not None) == binary
    decoded = decode_infer_request(body, header_length, **LIMITS)
    (tensor,) = decoded.inputs
    assert tensor.name == "x"
    assert tensor.datatype is DataType[datatype]
    assert tensor.shape == array.shape
    assert tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.to_numpy(), array)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_input_decodes_from_tritonclient(binary: bool) -> None:
    values = BYTES_VALUES if binary else np.array([["a", "ü"], ["", "z z"]], dtype=np.object_)
    body, header_length = client_body([make_input("s", "BYTES", values, binary)])
    (tensor,) = decode_infer_request(body, header_length, **LIMITS).inputs
    assert tensor.datatype is DataType.BYTES
    assert tensor.shape == (2, 2)
    expected = [v if isinstance(v, bytes) else v.encode() for v in values.ravel()]
    assert tensor.to_numpy().ravel().tolist() == expected
    assert tensor.to_tensor().buffer is tensor.data


def test_binary_inputs_are_views_of_the_body() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(4, dtype=np.int64)
    body, header_length = client_body(
        [make_input("a", "FP32", a, True), make_input("b", "INT64", b, True)]
    )
    decoded = decode_infer_request(body, header_length, **LIMITS)
    for tensor in decoded.inputs:
        assert np.shares_memory(tensor.data, np.frombuffer(body, dtype=np.uint8))
        assert not tensor.data.flags.writeable


def test_mixed_json_and_binary_inputs_in_order() -> None:
    inputs = [
        make_input("a", "INT32", np.array([1, 2], dtype=np.int32), True),
        make_input("b", "FP32", np.array([0.5], dtype=np.float32), False),
        make_input("c", "BYTES", np.array([b"x", b"yz"], dtype=np.object_), True),
        make_input("d", "UINT8", np.zeros((0, 3), dtype=np.uint8), True),
    ]
    body, header_length = client_body(inputs)
    decoded = decode_infer_request(body, header_length, **LIMITS)
    assert [t.name for t in decoded.inputs] == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(decoded.inputs[0].data, [1, 2])
    np.testing.assert_array_equal(decoded.inputs[1].data, [0.5])
    assert decoded.inputs[2].to_numpy().tolist() == [b"x", b"yz"]
    assert decoded.inputs[3].data.shape == (0, 3)


def test_request_fields_and_reserved_parameters() -> None:
    outputs = [
        httpclient.InferRequestedOutput("y", binary_data=True),
        httpclient.InferRequestedOutput("z", binary_data=False, class_count=3),
    ]
    body, header_length = client_body(
        [make_input("x", "FP32", np.ones(2, dtype=np.float32), False)],
        outputs=outputs,
        request_id="req-1",
        sequence_id=42,
        sequence_start=True,
        priority=3,
        timeout=1500,
        parameters={"temperature": 0.5, "mode": "fast", "n": 2, "flag": False},
    )
    decoded = decode_infer_request(body, header_length, **LIMITS)
    assert decoded.id == "req-1"
    assert decoded.sequence_id == 42
    assert decoded.sequence_start and not decoded.sequence_end
    assert decoded.priority == 3
    assert decoded.timeout_us == 1500
    assert decoded.parameters == {"temperature": 0.5, "mode": "fast", "n": 2, "flag": False}
    assert decoded.outputs == (RequestedOutput("y", True, 0), RequestedOutput("z", False, 3))
    assert decoded.binary_outputs() == frozenset({"y"})


def test_no_outputs_means_all_and_binary_by_default_from_tritonclient() -> None:
    body, header_length = client_body([make_input("x", "FP32", np.ones(1, np.float32), False)])
    decoded = decode_infer_request(body, header_length, **LIMITS)
    assert decoded.outputs is None
    assert decoded.binary_data_output is True
    assert decoded.binary_outputs() is True


def test_string_sequence_id_and_nested_json_data() -> None:
    doc = {
        "parameters": {"sequence_id": "abc", "sequence_end": True},
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}],
    }
    decoded = decode_infer_request(json.dumps(doc).encode(), None, **LIMITS)
    assert decoded.sequence_id == "abc" and decoded.sequence_end
    np.testing.assert_array_equal(decoded.inputs[0].data, [[1, 2], [3, 4]])
    assert decoded.binary_outputs() is False


def test_decoded_request_pickles() -> None:
    body, header_length = client_body(
        [
            make_input("a", "FP32", np.arange(3, dtype=np.float32), True),
            make_input("s", "BYTES", np.array([b"q"], dtype=np.object_), True),
        ]
    )
    decoded = decode_infer_request(body, header_length, **LIMITS)
    restored: DecodedInferRequest = pickle.loads(pickle.dumps(decoded))
    np.testing.assert_array_equal(restored.inputs[0].data, [0, 1, 2])
    assert restored.inputs[1].to_numpy().tolist() == [b"q"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("datatype", "array"), NUMERIC, ids=[d for d, _ in NUMERIC])
def test_numeric_outputs_parse_with_tritonclient(
    datatype: str, array: npt.NDArray[Any], binary: bool
) -> None:
    body, header_length = encode_infer_response(
        "m", 1, "id-9", [("out", DataType[datatype], array)], binary_outputs=binary
    )
    assert (header_length is not None) == binary
    result = parse(body, header_length)
    got = result.as_numpy("out")
    assert got.shape == array.shape
    if datatype in ("FP16", "BF16") and not binary:
        np.testing.assert_array_equal(got.astype(np.float32), array.astype(np.float32))
    else:
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)
    response = result.get_response()
    assert response["model_name"] == "m"
    assert response["model_version"] == "1"
    assert response["id"] == "id-9"
    InferResponse.model_validate(json.loads(body[:header_length] if header_length else body))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_output_parses_with_tritonclient(binary: bool) -> None:
    values = np.array([[b"hello", "wörld".encode()], [b"", b"x"]], dtype=np.object_)
    body, header_length = encode_infer_response(
        "m", "2", None, [("s", DataType.BYTES, values)], binary_outputs={"s"} if binary else set()
    )
    got = parse(body, header_length).as_numpy("s")
    assert got.shape == (2, 2)
    decoded = [v if isinstance(v, bytes) else v.encode() for v in got.ravel()]
    assert decoded == values.ravel().tolist()


def test_non_utf8_bytes_output_falls_back_to_binary() -> None:
    values = np.array([b"\xff\xfe", b"ok"], dtype=np.object_)
    fine = np.array([1, 2], dtype=np.int32)
    text = np.array(["wörld ✓"], dtype=np.object_)
    body, header_length = encode_infer_response(
        "m",
        1,
        None,
        [("s", DataType.BYTES, values), ("n", DataType.INT32, fine), ("u", DataType.BYTES, text)],
    )
    assert header_length is not None
    result = parse(body, header_length)
    assert result.as_numpy("s").tolist() == [b"\xff\xfe", b"ok"]
    assert "data" in result.get_output("n")
    assert result.as_numpy("u").tolist() == ["wörld ✓"]


def test_response_layout_matches_triton() -> None:
    body, header_length = encode_infer_response(
        "m",
        3,
        None,
        [("a", DataType.FP32, np.array([[1.0, 2.0]], dtype=np.float32))],
        parameters={"sequence_end": True},
    )
    assert header_length is None
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "parameters": {"sequence_end": True},
        "outputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}],
    }
    assert list(json.loads(body)) == ["model_name", "model_version", "parameters", "outputs"]


def test_empty_binary_output_needs_no_header() -> None:
    body, header_length = encode_infer_response(
        "m", 1, None, [("e", DataType.FP32, np.zeros((0, 4), np.float32))], binary_outputs=True
    )
    assert header_length is None
    assert json.loads(body)["outputs"][0]["parameters"] == {"binary_data_size": 0}
    assert parse(body, header_length).as_numpy("e").shape == (0, 4)


def test_multiple_binary_outputs_in_order() -> None:
    a = np.arange(5, dtype=np.int16)
    b = np.array([b"zz"], dtype=np.object_)
    c = np.full((2, 2), 0.25, dtype=np.float64)
    body, header_length = encode_infer_response(
        "m",
        1,
        "r",
        [("a", DataType.INT16, a), ("b", DataType.BYTES, b), ("c", DataType.FP64, c)],
        binary_outputs={"a", "c"},
    )
    result = parse(body, header_length)
    np.testing.assert_array_equal(result.as_numpy("a"), a)
    assert result.as_numpy("b").tolist() == ["zz"]
    np.testing.assert_array_equal(result.as_numpy("c"), c)


def test_classify_matches_triton_format() -> None:
    scores = np.array([[0.1, 0.7, 0.2, 0.7]], dtype=np.float32)
    out = classify(scores, 3, batched=True, labels=["cat", "dog", "eel"])
    assert out.shape == (1, 3)
    assert out.ravel().tolist() == [b"0.700000:1:dog", b"0.700000:3", b"0.200000:2:eel"]
    ints = classify(np.array([3, 9, 1], dtype=np.int32), 5, batched=False)
    assert ints.tolist() == [b"9:1", b"3:0", b"1:2"]


def test_parse_header_length() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length(" 12 ") == 12
