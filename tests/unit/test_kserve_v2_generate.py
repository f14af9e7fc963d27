"""The generate extension: flat JSON in, tensors shaped from the model's dims, flat JSON out."""

from __future__ import annotations

import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from app.errors import BadRequest, ServingError, Unavailable
from app.protocol.kserve_v2 import (
    InputSpec,
    decode_generate_request,
    encode_generate_response,
    sse_error_event,
    sse_event,
)
from app.triton.tensors import DataType

LIMITS: dict[str, int] = {"max_elements": 100, "max_bytes_element": 32}
TEXT = InputSpec("text_input", DataType.BYTES, (-1,))
STREAM = InputSpec("stream", DataType.BOOL, (1,), optional=True)
MAX_TOKENS = InputSpec("max_tokens", DataType.INT32, (1,), optional=True)


def decode(doc: Any, specs: list[Any], max_batch_size: int = 0) -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_generate_request(body, specs, max_batch_size, **LIMITS)


@pytest.mark.parametrize(
    ("dims", "max_batch_size", "value", "shape"),
    [
        ((-1,), 0, "hi", (1,)),
        ((-1,), 8, "hi", (1, 1)),
        ((-1,), 8, ["a", "b", "c"], (1, 3)),
        ((1,), 8, "hi", (1, 1)),
        ((1,), 8, ["a", "b", "c"], (3, 1)),
        ((2, -1), 0, ["a"] * 6, (2, 3)),
        ((-1, -1), 0, ["a"] * 4, (1, 4)),
        ((), 0, "hi", ()),
        ((-1,), 0, [], (0,)),
    ],
)
def test_values_fill_the_declared_shape(
    dims: tuple[int, ...], max_batch_size: int, value: Any, shape: tuple[int, ...]
) -> None:
    spec = InputSpec("text_input", DataType.BYTES, dims)
    inputs, _, _ = decode({"text_input": value}, [spec], max_batch_size)
    assert inputs[0].shape == shape
    expected = [v.encode() for v in (value if isinstance(value, list) else [value])]
    assert inputs[0].to_numpy().ravel().tolist() == expected


def test_inputs_parameters_and_id() -> None:
    doc = {
        "id": "g1",
        "text_input": "What is Triton?",
        "temperature": 0.1,
        "parameters": {"stream": False, "max_tokens": 16, "top_k": 4, "mode": "x"},
    }
    inputs, parameters, request_id = decode(doc, [TEXT, STREAM, MAX_TOKENS])
    assert request_id == "g1"
    assert parameters == {"temperature": 0.1, "top_k": 4, "mode": "x"}
    by_name = {t.name: t for t in inputs}
    assert by_name["stream"].to_numpy().tolist() == [False]
    assert by_name["stream"].datatype is DataType.BOOL
    assert by_name["max_tokens"].to_numpy().tolist() == [16]
    assert by_name["max_tokens"].data.dtype == np.int32


def test_tuple_specs_and_numeric_lists() -> None:
    inputs, _, _ = decode({"x": [[1.5, 2.5], [3.0, 4.0]]}, [("x", DataType.FP32, [2, 2], False)])
    np.testing.assert_array_equal(inputs[0].to_numpy(), [[1.5, 2.5], [3.0, 4.0]])


def test_optional_inputs_may_be_omitted_and_empty_body_is_empty_object() -> None:
    inputs, parameters, request_id = decode(b"  ", [STREAM, MAX_TOKENS])
    assert inputs == [] and parameters == {} and request_id is None


@pytest.mark.parametrize(
    ("doc", "kind", "needles"),
    [
        (b"{oops", BadRequest, ["not valid JSON"]),
        ([1], BadRequest, ["JSON object"]),
        ({"temperature": 1}, BadRequest, ["missing", "'text_input'"]),
        ({"text_input": {"a": 1}}, BadRequest, ["input 'text_input'", "dict"]),
        ({"text_input": None}, BadRequest, ["input 'text_input'"]),
        ({"text_input": 5}, BadRequest, ["input 'text_input'", "strings"]),
        ({"text_input": "x", "max_tokens": 2**40}, BadRequest, ["input 'max_tokens'", "range"]),
        ({"text_input": "x", "max_tokens": [1, 2]}, BadRequest, ["input 'max_tokens'", "shape"]),
        ({"text_input": "x", "stream": 1}, BadRequest, ["input 'stream'", "true/false"]),
        ({"text_input": "x", "parameters": [1]}, BadRequest, ["'parameters'", "object"]),
        ({"text_input": "x", "id": 3}, BadRequest, ["'id'"]),
        ({"text_input": "x", "k": [1, 2]}, BadRequest, ["parameter 'k'"]),
        ({"text_input": "x", "k": None}, BadRequest, ["parameter 'k'"]),
        ({"text_input": "x", "parameters": {"text_input": "y"}}, BadRequest, ["more than once"]),
        ({"text_input": ["a"] * 101}, BadRequest, ["input 'text_input'", "101"]),
        ({"text_input": "x" * 33}, BadRequest, ["input 'text_input'", "33 bytes"]),
    ],
)
def test_malformed_generate_requests(
    doc: Any, kind: type[ServingError], needles: list[str]
) -> None:
    with pytest.raises(ServingError) as info:
        decode(doc, [TEXT, STREAM, MAX_TOKENS])
    assert type(info.value) is kind, info.value
    for needle in needles:
        assert needle in info.value.message, info.value.message


def test_input_named_parameters_conflicts() -> None:
    spec = InputSpec("parameters", DataType.INT32, (1,))
    with pytest.raises(BadRequest, match="parameters"):
        decode({"parameters": {}}, [spec])


def test_fixed_dims_that_cannot_take_the_value() -> None:
    spec = InputSpec("x", DataType.INT32, (2,))
    with pytest.raises(BadRequest, match=r"input 'x': 3 elements cannot fill"):
        decode({"x": [1, 2, 3]}, [spec])


def test_bad_input_spec_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="dims"):
        InputSpec("x", DataType.INT32, (-2,))


def test_encode_generate_response_is_flat() -> None:
    doc = encode_generate_response(
        "llm",
        1,
        [
            ("text_output", DataType.BYTES, np.array([b"Triton is..."], dtype=np.object_)),
            ("tokens", DataType.INT32, np.array([[1, 2, 3]], dtype=np.int32)),
            ("score", DataType.BF16, np.array([0.5], dtype=ml_dtypes.bfloat16)),
            ("h", DataType.FP16, np.array([1.5, 2.0], dtype=np.float16)),
            ("empty", DataType.FP32, np.zeros((0,), dtype=np.float32)),
        ],
        request_id="r1",
        parameters={"triton_final_response": True},
    )
    assert doc == {
        "id": "r1",
        "model_name": "llm",
        "model_version": "1",
        "triton_final_response": True,
        "text_output": "Triton is...",
        "tokens": [1, 2, 3],
        "score": 0.5,
        "h": [1.5, 2.0],
        "empty": [],
    }
    json.dumps(doc)


def test_encode_generate_non_utf8_and_clashes() -> None:
    doc = encode_generate_response(
        "m",
        None,
        [
            ("t", DataType.BYTES, np.array([b"ok\xe2\x82"], dtype=np.object_)),
            ("model_name", DataType.INT32, np.array([7], dtype=np.int32)),
        ],
    )
    assert doc == {"model_name": "m", "t": "ok\ufffd"}


def test_sse_events() -> None:
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse_error_event(Unavailable("busy")) == b'data: {"error":"busy"}\n\n'


def test_generate_scheduling_parameters_are_split_off() -> None:
    from app.errors import BadRequest
    from app.protocol.kserve_v2 import split_scheduling

    assert split_scheduling({"priority": 2, "timeout": 500, "temperature": 0.5}) == (
        2,
        500,
        {"temperature": 0.5},
    )
    assert split_scheduling({"max_tokens": 4}) == (0, 0, {"max_tokens": 4})
    for bad in ({"priority": -1}, {"timeout": "soon"}, {"priority": True}):
        with pytest.raises(BadRequest):
            split_scheduling(bad)
