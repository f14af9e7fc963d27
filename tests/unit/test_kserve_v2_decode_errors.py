"""Every malformed infer request is a precise 4xx naming the field or input at fault."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from app.errors import BadRequest, NotImplementedFeature, ServingError
from app.protocol.kserve_v2 import decode_infer_request, parse_header_length

LIMITS: dict[str, int] = {"max_elements": 1000, "max_bytes_element": 64}


def tensor(name: str = "x", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def decode(doc: Any, binary: bytes = b"", header: int | str | None = "auto") -> Any:
    text = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    if header == "auto":
        header_length = len(text) if binary else None
    else:
        assert not isinstance(header, str)
        header_length = header
    return decode_infer_request(text + binary, header_length, **LIMITS)


def fails(
    doc: Any,
    kind: type[ServingError],
    *needles: str,
    binary: bytes = b"",
    header: int | str | None = "auto",
) -> None:
    with pytest.raises(ServingError) as info:
        decode(doc, binary, header)
    assert type(info.value) is kind, info.value
    for needle in needles:
        assert needle in info.value.message, info.value.message


def bytes_payload(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_body_not_json() -> None:
    fails(b"{not json", BadRequest, "not valid JSON")


def test_body_invalid_utf8() -> None:
    fails(b'{"inputs": "\xff"}', BadRequest, "not valid JSON")


def test_body_not_an_object() -> None:
    fails([1, 2], BadRequest, "must be an object", "list")


def test_deeply_nested_json() -> None:
    fails(b"[" * 5000 + b"]" * 5000, BadRequest, "not valid JSON")


def test_missing_inputs() -> None:
    fails({"id": "a"}, BadRequest, "'inputs'", "Field required")


def test_unknown_top_level_field() -> None:
    fails({"inputs": [tensor()], "extra": 1}, BadRequest, "'extra'")


def test_id_not_a_string() -> None:
    fails({"id": 5, "inputs": [tensor()]}, BadRequest, "'id'")


def test_input_missing_name() -> None:
    fails(
        {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, BadRequest, "inputs[0].name"
    )


@pytest.mark.parametrize("missing", ["shape", "datatype"])
def test_input_missing_field_names_input(missing: str) -> None:
    doc = tensor()
    del doc[missing]
    fails({"inputs": [doc]}, BadRequest, "input 'x'", f"'{missing}'")


def test_unknown_input_field_names_input() -> None:
    fails({"inputs": [tensor(contents={})]}, BadRequest, "input 'x'", "'contents'")


@pytest.mark.parametrize("datatype", ["FP8", "fp32", "TYPE_FP32", "STRING", "INVALID", ""])
def test_unknown_datatype(datatype: str) -> None:
    fails({"inputs": [tensor(datatype=datatype)]}, BadRequest, "input 'x'", "unknown datatype")


def test_negative_shape() -> None:
    fails({"inputs": [tensor(shape=[-1, 2])]}, BadRequest, "input 'x'", "negative")


@pytest.mark.parametrize("dim", [1.5, "2", True, None, 2.0])
def test_non_integer_shape(dim: Any) -> None:
    fails({"inputs": [tensor(shape=[dim])]}, BadRequest, "input 'x'", "shape[0]")


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**63, 2**63, 4], [2**70]])
def test_overflowing_shape_is_400(shape: list[int]) -> None:
    fails({"inputs": [tensor(shape=shape)]}, BadRequest, "input 'x'", "invalid shape")


def test_shape_over_the_element_limit_is_400() -> None:
    fails({"inputs": [tensor(shape=[10, 101])]}, BadRequest, "input 'x'", "1010")


def test_data_count_differs_from_shape() -> None:
    fails({"inputs": [tensor(shape=[3])]}, BadRequest, "input 'x'", "2 elements", "needs 3")
    fails(
        {"inputs": [tensor(shape=[2, 2], data=[[1.0, 2.0], [3.0]])]},
        BadRequest,
        "input 'x'",
        "3 elements",
    )


@pytest.mark.parametrize(
    ("datatype", "data", "needle"),
    [
        ("FP32", ["1.0", 2.0], "numbers"),
        ("FP32", [True, 1.0], "numbers"),
        ("FP32", [None, 1.0], "null"),
        ("FP64", [{"a": 1}, 1.0], "object"),
        ("INT32", [1.5, 2], "integers"),
        ("INT32", [True, 2], "integers"),
        ("INT8", [128, 0], "out of range"),
        ("INT8", [-129, 0], "out of range"),
        ("UINT8", [-1, 0], "out of range"),
        ("UINT8", [256, 0], "out of range"),
        ("UINT64", [2**64, 0], "out of range"),
        ("INT64", [-(2**63) - 1, 0], "out of range"),
        ("UINT32", [2**32, 0], "out of range"),
        ("BOOL", [0, 1], "true/false"),
        ("BYTES", [1, "a"], "strings"),
        ("FP32", [10**400, 1.0], "too large"),
    ],
)
def test_data_of_the_wrong_type(datatype: str, data: list[Any], needle: str) -> None:
    fails({"inputs": [tensor(datatype=datatype, data=data)]}, BadRequest, "input 'x'", needle)


@pytest.mark.parametrize("data", [1.0, "ab", None, {"a": 1}])
def test_data_not_a_list(data: Any) -> None:
    fails({"inputs": [tensor(shape=[], data=data)]}, BadRequest, "input 'x'", "must be a list")


def test_neither_data_nor_binary() -> None:
    fails({"inputs": [tensor(data=...)]}, BadRequest, "input 'x'", "neither")


def test_both_data_and_binary() -> None:
    doc = {"inputs": [tensor(parameters={"binary_data_size": 8})]}
    fails(doc, BadRequest, "input 'x'", "both", binary=b"\0" * 8)


@pytest.mark.parametrize("size", [-1, True, "8", 8.0])
def test_bad_binary_data_size(size: Any) -> None:
    doc = {"inputs": [tensor(data=..., parameters={"binary_data_size": size})]}
    fails(doc, BadRequest, "input 'x'", "binary_data_size", binary=b"\0" * 8)


def test_binary_without_header() -> None:
    doc = {"inputs": [tensor(data=..., parameters={"binary_data_size": 8})]}
    fails(doc, BadRequest, "input 'x'", "Inference-Header-Content-Length", header=None)


def test_binary_size_beyond_body() -> None:
    doc = {"inputs": [tensor(data=..., parameters={"binary_data_size": 8})]}
    fails(doc, BadRequest, "input 'x'", "only 4 bytes", binary=b"\0" * 4)


def test_leftover_bytes_after_binary() -> None:
    doc = {"inputs": [tensor(data=..., parameters={"binary_data_size": 8})]}
    fails(doc, BadRequest, "3 bytes", binary=b"\0" * 11)


def test_leftover_bytes_with_json_only_inputs() -> None:
    fails({"inputs": [tensor()]}, BadRequest, "5 bytes", binary=b"extra")


def test_binary_size_not_element_count_times_itemsize() -> None:
    doc = {"inputs": [tensor(data=..., shape=[3], parameters={"binary_data_size": 8})]}
    fails(doc, BadRequest, "input 'x'", "needs 12", binary=b"\0" * 8)


def _bytes_doc(payload: bytes, shape: list[int]) -> dict[str, Any]:
    params = {"binary_data_size": len(payload)}
    return {"inputs": [tensor("s", datatype="BYTES", shape=shape, data=..., parameters=params)]}


def test_bytes_binary_truncated_in_length() -> None:
    payload = bytes_payload(b"ab") + b"\x01\x00"
    fails(_bytes_doc(payload, [2]), BadRequest, "input 's'", "truncated", binary=payload)


def test_bytes_binary_truncated_in_data() -> None:
    payload = bytes_payload(b"ab")[:-1]
    fails(_bytes_doc(payload, [1]), BadRequest, "input 's'", "truncated", binary=payload)


@pytest.mark.parametrize(("items", "shape"), [(2, [3]), (3, [2]), (0, [1])])
def test_bytes_binary_with_other_element_count(items: int, shape: list[int]) -> None:
    payload = bytes_payload(*[b"x"] * items)
    fails(_bytes_doc(payload, shape), BadRequest, "input 's'", "elements", binary=payload)


def test_bytes_element_over_the_limit_is_400() -> None:
    payload = bytes_payload(b"x" * 65)
    fails(_bytes_doc(payload, [1]), BadRequest, "input 's'", "65 bytes", binary=payload)
    doc = {"inputs": [tensor("s", datatype="BYTES", shape=[1], data=["y" * 65])]}
    fails(doc, BadRequest, "input 's'", "65 bytes")


@pytest.mark.parametrize("header", [-1, 10**6])
def test_header_length_out_of_range(header: int) -> None:
    fails({"inputs": [tensor()]}, BadRequest, "Inference-Header-Content-Length", header=header)


def test_header_length_zero_is_raw_request() -> None:
    fails({"inputs": [tensor()]}, NotImplementedFeature, "raw binary", header=0)


def test_header_length_cuts_the_json() -> None:
    fails({"inputs": [tensor()]}, BadRequest, "not valid JSON", header=5)


def test_duplicate_input_names() -> None:
    fails({"inputs": [tensor(), tensor()]}, BadRequest, "input 'x'", "more than once")


def test_duplicate_output_names() -> None:
    doc = {"inputs": [tensor()], "outputs": [{"name": "y"}, {"name": "y"}]}
    fails(doc, BadRequest, "output 'y'", "more than once")


def test_unknown_output_field() -> None:
    doc = {"inputs": [tensor()], "outputs": [{"name": "y", "binary": True}]}
    fails(doc, BadRequest, "output 'y'", "'binary'")


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"binary_data": 1}, "binary_data"), ({"classification": -1}, "classification")],
)
def test_bad_output_parameters(params: dict[str, Any], needle: str) -> None:
    doc = {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": params}]}
    fails(doc, BadRequest, "output 'y'", needle)


def test_shared_memory_is_not_implemented() -> None:
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 8}
    fails({"inputs": [tensor(data=..., parameters=params)]}, NotImplementedFeature, "input 'x'")
    doc = {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": params}]}
    fails(doc, NotImplementedFeature, "output 'y'")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"priority": -1}, "'priority'"),
        ({"timeout": 1.5}, "'timeout'"),
        ({"sequence_id": True}, "'sequence_id'"),
        ({"sequence_id": -5}, "'sequence_id'"),
        ({"sequence_start": "yes"}, "'sequence_start'"),
        ({"binary_data_output": 1}, "'binary_data_output'"),
        ({"triton_enable": True}, "'triton_enable'"),
        ({"big": 2**63}, "'big'"),
        ({"nested": {"a": 1}}, "parameters.nested"),
        ({"listed": [1]}, "parameters.listed"),
        ({"none": None}, "parameters.none"),
    ],
)
def test_bad_request_parameters(params: dict[str, Any], needle: str) -> None:
    fails({"inputs": [tensor()], "parameters": params}, BadRequest, needle)


def test_bad_input_parameter_value() -> None:
    doc = {"inputs": [tensor(parameters={"k": {"nested": 1}})]}
    fails(doc, BadRequest, "input 'x'", "parameters.k")


@pytest.mark.parametrize("value", ["12abc", "+-5", "", "1.5", "\u0661"])
def test_parse_header_length_rejects_garbage(value: str) -> None:
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        parse_header_length(value)


def test_valid_zero_size_binary_needs_no_header() -> None:
    doc = {"inputs": [tensor(shape=[0], data=..., parameters={"binary_data_size": 0})]}
    decoded = decode(doc, header=None)
    assert decoded.inputs[0].data.shape == (0,)
    assert decoded.inputs[0].data.dtype == np.float32


def test_fp16_and_bf16_accepted_in_json() -> None:
    doc = {
        "inputs": [
            tensor("h", datatype="FP16", data=[0.5, 1]),
            tensor("b", datatype="BF16", data=[1.5, -2]),
        ]
    }
    decoded = decode(doc)
    assert decoded.inputs[0].data.tolist() == [0.5, 1.0]
    assert decoded.inputs[1].data.astype(np.float32).tolist() == [1.5, -2.0]


@pytest.mark.parametrize("shape", [[0, 2**63], [2**41, 0], [1] * 33])
def test_degenerate_shapes_are_400(shape: list[int]) -> None:
    doc = {"inputs": [tensor(shape=shape, data=..., parameters={"binary_data_size": 0})]}
    fails(doc, BadRequest, "input 'x'", "invalid shape", header=None)
