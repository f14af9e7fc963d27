"""The client's half of the infer protocol is the exact inverse of the server's: what
``encode_infer_request`` writes, ``decode_infer_request`` reads back, and what
``encode_infer_response`` writes, ``decode_infer_response`` reads back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.protocol.kserve_v2 import (
    HEADER_LENGTH_HEADER,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
    generate_event_tokens,
    request_headers,
)
from app.triton.tensors import DataType

LIMITS: dict[str, Any] = {"max_elements": 1 << 20, "max_bytes_element": 1 << 16}


def _tensors() -> list[tuple[str, DataType, Any]]:
    texts = np.empty((1, 2), dtype=np.object_)
    texts[:] = [[b"hello", "w\u00f6rld".encode()]]
    return [
        ("F", DataType.FP32, np.arange(6, dtype=np.float32).reshape(2, 3) / 8),
        ("I", DataType.INT64, np.array([[-3, 1 << 40]], dtype=np.int64)),
        ("B", DataType.BOOL, np.array([True, False])),
        ("T", DataType.BYTES, texts),
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_the_server_decodes_what_the_client_encodes(binary: bool) -> None:
    body, header_length = encode_infer_request(
        _tensors(), ["OUT"], binary=binary, parameters={"delay_ms": 5}
    )
    assert (header_length is None) == (not binary)
    decoded = decode_infer_request(body, header_length, **LIMITS)
    assert decoded.parameters == {"delay_ms": 5}
    assert decoded.outputs is not None and [o.name for o in decoded.outputs] == ["OUT"]
    assert decoded.outputs[0].binary is binary
    for (name, datatype, array), got in zip(_tensors(), decoded.inputs, strict=True):
        assert (got.name, got.datatype, got.shape) == (name, datatype, array.shape)
        np.testing.assert_array_equal(got.to_numpy(), array)


@pytest.mark.parametrize("binary", [True, False])
def test_the_client_reads_what_the_server_answers(binary: bool) -> None:
    body, header_length = encode_infer_response("m", 1, None, _tensors(), binary_outputs=binary)
    outputs = decode_infer_response(body, header_length)
    assert list(outputs) == [name for name, _, _ in _tensors()]
    for name, datatype, array in _tensors():
        got_type, got = outputs[name]
        assert got_type is datatype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_headers_name_the_json_header_length() -> None:
    body, header_length = encode_infer_request(_tensors()[:1])
    assert header_length is not None and body[:header_length].endswith(b"}")
    assert request_headers(header_length)[HEADER_LENGTH_HEADER] == str(header_length)
    assert request_headers(None) == {"Content-Type": "application/json"}


def test_a_truncated_response_is_refused() -> None:
    body, header_length = encode_infer_response("m", 1, None, _tensors(), binary_outputs=True)
    with pytest.raises(ValueError, match="past the body"):
        decode_infer_response(body[:-1], header_length)


def test_bytes_that_are_not_utf8_cannot_go_as_json() -> None:
    raw = np.array([b"\xff"], dtype=np.object_)
    with pytest.raises(ValueError, match="binary=True"):
        encode_infer_request([("T", DataType.BYTES, raw)], binary=False)


def test_the_engines_token_count_wins() -> None:
    assert generate_event_tokens({"text_output": "ab", "num_output_tokens": 2}) == 2
    assert generate_event_tokens({"text_output": "", "num_output_tokens": 0}) == 0


def test_without_a_count_each_event_with_text_is_one_token() -> None:
    events = [{"text_output": "He"}, {"text_output": "llo"}, {"text_output": ""}]
    assert sum(generate_event_tokens(e) for e in events) == 2
