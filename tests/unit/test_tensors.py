"""Datatypes, element counts, the BYTES wire encoding and numpy conversion (no Triton needed)."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.triton import DataType, Tensor
from app.triton.tensors import (
    MAX_ELEMENTS,
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
)

# (datatype, numpy dtype, bytes per element): the whole table, BYTES and BF16 included.
TABLE = [
    (DataType.BOOL, np.dtype(np.bool_), 1),
    (DataType.UINT8, np.dtype(np.uint8), 1),
    (DataType.UINT16, np.dtype(np.uint16), 2),
    (DataType.UINT32, np.dtype(np.uint32), 4),
    (DataType.UINT64, np.dtype(np.uint64), 8),
    (DataType.INT8, np.dtype(np.int8), 1),
    (DataType.INT16, np.dtype(np.int16), 2),
    (DataType.INT32, np.dtype(np.int32), 4),
    (DataType.INT64, np.dtype(np.int64), 8),
    (DataType.FP16, np.dtype(np.float16), 2),
    (DataType.FP32, np.dtype(np.float32), 4),
    (DataType.FP64, np.dtype(np.float64), 8),
    (DataType.BYTES, np.dtype(np.object_), 0),
    (DataType.BF16, np.dtype(ml_dtypes.bfloat16), 2),
]
NUMERIC = [(dt, np_dtype) for dt, np_dtype, _ in TABLE if dt is not DataType.BYTES]


def test_table_covers_every_datatype() -> None:
    assert {dt for dt, _, _ in TABLE} == set(DataType) - {DataType.INVALID}


def test_codes_match_tritonserver_h() -> None:
    assert (DataType.INVALID, DataType.BOOL, DataType.FP32) == (0, 1, 11)
    assert (DataType.BYTES, DataType.BF16) == (13, 14)


# ---- DataType ----


@pytest.mark.parametrize(("data_type", "np_dtype", "size"), TABLE)
def test_from_string_plain_and_config_spelling(
    data_type: DataType, np_dtype: np.dtype[np.generic], size: int
) -> None:
    assert DataType.from_string(data_type.name) is data_type
    if data_type is not DataType.BYTES:  # the config spells BYTES as TYPE_STRING
        assert DataType.from_string(f"TYPE_{data_type.name}") is data_type


@pytest.mark.parametrize("name", ["STRING", "TYPE_STRING", "BYTES", "TYPE_BYTES"])
def test_string_is_bytes(name: str) -> None:
    assert DataType.from_string(name) is DataType.BYTES


@pytest.mark.parametrize(
    "name", ["INVALID", "TYPE_INVALID", "", "TYPE_", "fp32", "FP8", "TYPE_FP8", "FLOAT32", "TYPE"]
)
def test_from_string_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown datatype"):
        DataType.from_string(name)


@pytest.mark.parametrize(("data_type", "np_dtype", "size"), TABLE)
def test_numpy_dtype_and_byte_size(
    data_type: DataType, np_dtype: np.dtype[np.generic], size: int
) -> None:
    assert data_type.numpy_dtype == np_dtype
    assert data_type.byte_size == size


@pytest.mark.parametrize(("data_type", "np_dtype"), NUMERIC)
def test_from_numpy_numeric(data_type: DataType, np_dtype: np.dtype[np.generic]) -> None:
    assert DataType.from_numpy(np_dtype) is data_type
    assert DataType.from_numpy(np_dtype.type) is data_type  # a scalar type works too


@pytest.mark.parametrize("dtype", [np.object_, "U5", "S3", np.str_, np.bytes_])
def test_from_numpy_text_and_objects_are_bytes(dtype: str | type) -> None:
    assert DataType.from_numpy(dtype) is DataType.BYTES


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "datetime64[s]", np.void])
def test_from_numpy_rejects_dtypes_triton_lacks(dtype: str | type) -> None:
    with pytest.raises(ValueError, match="no Triton datatype"):
        DataType.from_numpy(dtype)


def test_from_numpy_is_byte_order_aware() -> None:
    assert DataType.from_numpy(np.dtype("<f4")) is DataType.FP32
    with pytest.raises(ValueError):
        DataType.from_numpy(np.dtype(">f4"))  # Triton's buffers are little-endian


# ---- element_count ----


@pytest.mark.parametrize(
    ("shape", "count"),
    [((), 1), ((0,), 0), ((3,), 3), ((2, 3, 4), 24), ([1, 16], 16), ((0, 1 << 50), 0)],
)
def test_element_count(shape: tuple[int, ...], count: int) -> None:
    assert element_count(shape) == count


@pytest.mark.parametrize("shape", [(-1,), (2, -3), (0, -1), (-1, 0)])
def test_element_count_rejects_negative_dimensions(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="negative"):
        element_count(shape)


def test_element_count_limit() -> None:
    assert element_count((1 << 20, 1 << 20)) == MAX_ELEMENTS
    with pytest.raises(ValueError, match="more than"):
        element_count((1 << 20, 1 << 20, 2))
    with pytest.raises(ValueError, match="more than"):
        element_count((MAX_ELEMENTS + 1,))
    with pytest.raises(ValueError, match="more than"):  # would overflow int64 in Triton
        element_count((1 << 32, 1 << 32, 1 << 32))


@pytest.mark.parametrize("shape", [(2.0,), ("3",), (True, 2), (None,)])
def test_element_count_rejects_non_integers(shape: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="non-integer"):
        element_count(shape)  # type: ignore[arg-type]


# ---- BYTES encoding ----


def test_bytes_encoding_is_length_prefixed_little_endian() -> None:
    raw = serialize_bytes_tensor(["ab", b"\x00\xff", ""])
    assert raw == b"\x02\x00\x00\x00ab" + b"\x02\x00\x00\x00\x00\xff" + b"\x00\x00\x00\x00"


def test_bytes_round_trip_mixed_items() -> None:
    values = np.array(
        [["hello", "wörld", ""], [b"a\x00b", np.bytes_(b"raw"), bytearray(b"ba")]], dtype=object
    )
    raw = serialize_bytes_tensor(values)
    out = deserialize_bytes_tensor(raw, 6)
    assert out.dtype == np.object_
    assert out.tolist() == [b"hello", "wörld".encode(), b"", b"a\x00b", b"raw", b"ba"]


def test_bytes_non_text_items_are_stringified() -> None:
    out = deserialize_bytes_tensor(serialize_bytes_tensor([1, 2.5, None]))
    assert out.tolist() == [b"1", b"2.5", b"None"]


def test_bytes_accepts_any_buffer() -> None:
    raw = serialize_bytes_tensor(["x", "yz"])
    for buffer in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, np.uint8)):
        assert deserialize_bytes_tensor(buffer, 2).tolist() == [b"x", b"yz"]


def test_bytes_empty() -> None:
    assert serialize_bytes_tensor([]) == b""
    assert deserialize_bytes_tensor(b"", 0).shape == (0,)
    assert deserialize_bytes_tensor(b"").shape == (0,)


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_bytes_round_trip_property(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    assert deserialize_bytes_tensor(serialize_bytes_tensor(array), len(items)).tolist() == items


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (b"\x05", "in an element length"),
        (b"\x05\x00\x00", "in an element length"),
        (b"\x05\x00\x00\x00abc", "in an element's data"),
        (b"\x01\x00\x00\x00a\x02\x00", "in an element length"),
        (b"\x01\x00\x00\x00a\x02\x00\x00\x00b", "in an element's data"),
        (b"\xff\xff\xff\xff", "in an element's data"),
    ],
)
def test_bytes_truncated_buffers(buffer: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deserialize_bytes_tensor(buffer)


def test_bytes_count_mismatch() -> None:
    raw = serialize_bytes_tensor(["a", "b", "c"])
    with pytest.raises(ValueError, match="holds 3 elements, its shape needs 4"):
        deserialize_bytes_tensor(raw, 4)
    with pytest.raises(ValueError, match="its shape needs 2"):
        deserialize_bytes_tensor(raw, 2)
    with pytest.raises(ValueError, match="holds 1 elements, its shape needs 0"):
        deserialize_bytes_tensor(raw, 0)


def test_bytes_length_prefix_is_unsigned_32_bit() -> None:
    data = b"z" * 300
    raw = serialize_bytes_tensor([data])
    assert struct.unpack_from("<I", raw)[0] == 300
    assert deserialize_bytes_tensor(raw, 1)[0] == data


# ---- Tensor ----


@pytest.mark.parametrize(("data_type", "np_dtype"), NUMERIC)
def test_tensor_numeric_round_trip(data_type: DataType, np_dtype: np.dtype[np.generic]) -> None:
    array = (np.arange(12).reshape(3, 4) % 5).astype(np_dtype)
    tensor = Tensor.from_numpy(array)
    assert tensor.data_type is data_type
    assert tensor.shape == (3, 4)
    assert tensor.byte_size == 12 * np_dtype.itemsize
    back = tensor.to_numpy()
    assert back.dtype == np_dtype and back.shape == (3, 4)
    np.testing.assert_array_equal(back, array)


def test_tensor_from_contiguous_array_does_not_copy() -> None:
    array = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = Tensor.from_numpy(array)
    assert np.shares_memory(np.asarray(tensor.buffer), array)
    assert np.shares_memory(tensor.to_numpy(), array)


def test_tensor_from_non_contiguous_array_copies() -> None:
    array = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    tensor = Tensor.from_numpy(array)
    assert not np.shares_memory(np.asarray(tensor.buffer), array)
    np.testing.assert_array_equal(tensor.to_numpy(), array)


def test_tensor_bf16() -> None:
    array = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -0.0078125]], dtype=ml_dtypes.bfloat16)
    tensor = Tensor.from_numpy(array)
    assert tensor.data_type is DataType.BF16
    assert tensor.byte_size == 12  # two bytes per element, exported as raw bytes
    memoryview(tensor.buffer)  # the buffer protocol works (bfloat16 itself cannot be exported)
    back = tensor.to_numpy()
    assert back.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(back.astype(np.float32), array.astype(np.float32))


def test_tensor_converts_to_a_requested_datatype() -> None:
    tensor = Tensor.from_numpy(np.array([1.5, 2.5], dtype=np.float64), DataType.BF16)
    assert tensor.data_type is DataType.BF16
    assert tensor.to_numpy().astype(np.float32).tolist() == [1.5, 2.5]
    tensor = Tensor.from_numpy([1, 0, 2], DataType.BOOL)
    assert tensor.to_numpy().tolist() == [True, False, True]


def test_tensor_bytes_round_trip() -> None:
    array = np.array([["a", "bc"], ["", "dé"]], dtype=object)
    tensor = Tensor.from_numpy(array)
    assert tensor.data_type is DataType.BYTES
    assert tensor.shape == (2, 2)
    assert tensor.byte_size == 4 * 4 + 1 + 2 + 0 + 3
    assert tensor.to_numpy().tolist() == [[b"a", b"bc"], [b"", "dé".encode()]]
    assert Tensor.from_numpy(np.array(["x", "yy"])).to_numpy().tolist() == [b"x", b"yy"]


def test_tensor_empty() -> None:
    empty = Tensor.from_numpy(np.zeros((0, 3), np.int16))
    assert empty.shape == (0, 3)
    assert empty.byte_size == 0 and empty.to_numpy().shape == (0, 3)


def test_tensor_scalar_keeps_its_shape() -> None:
    scalar = Tensor.from_numpy(np.float32(2.0))
    assert scalar.shape == ()
    assert scalar.to_numpy() == 2.0


def test_tensor_to_numpy_checks_the_buffer_size() -> None:
    with pytest.raises(ValueError, match="needs 8 bytes, got 4"):
        Tensor(DataType.FP32, (2,), b"\x00" * 4).to_numpy()
    with pytest.raises(ValueError, match="holds 1 elements, its shape needs 2"):
        Tensor(DataType.BYTES, (2,), serialize_bytes_tensor(["a"])).to_numpy()
    with pytest.raises(ValueError, match="negative"):
        Tensor(DataType.FP32, (-1,), b"").to_numpy()
