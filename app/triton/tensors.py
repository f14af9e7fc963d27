"""Triton datatypes, numpy conversion and the BYTES wire encoding.

Pure Python: used by the engine and by the protocol layer, which decodes client
payloads into numpy before anything reaches Triton.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

__all__ = [
    "DataType",
    "Tensor",
    "deserialize_bytes_tensor",
    "element_count",
    "serialize_bytes_tensor",
]

# Largest element count we accept for one tensor: far beyond any real tensor,
# small enough that byte sizes stay inside int64 for every datatype.
MAX_ELEMENTS = 1 << 40


class DataType(enum.IntEnum):
    """``TRITONSERVER_DataType``; the member name is the KServe v2 datatype string."""

    INVALID = 0
    BOOL = 1
    UINT8 = 2
    UINT16 = 3
    UINT32 = 4
    UINT64 = 5
    INT8 = 6
    INT16 = 7
    INT32 = 8
    INT64 = 9
    FP16 = 10
    FP32 = 11
    FP64 = 12
    BYTES = 13
    BF16 = 14

    @classmethod
    def from_string(cls, name: str) -> DataType:
        """Parse ``"FP32"`` or the config spelling ``"TYPE_FP32"``; ``ValueError`` if unknown."""
        key = name[5:] if name.startswith("TYPE_") else name
        if key == "STRING":
            key = "BYTES"
        try:
            member = cls[key]
        except KeyError:
            raise ValueError(f"unknown datatype {name!r}") from None
        if member is DataType.INVALID:
            raise ValueError(f"unknown datatype {name!r}")
        return member

    @classmethod
    def from_numpy(cls, dtype: npt.DTypeLike) -> DataType:
        """The Triton datatype that holds numpy ``dtype``; ``ValueError`` if none does."""
        np_dtype = np.dtype(dtype)
        if np_dtype.kind in ("O", "S", "U"):
            return DataType.BYTES
        found = _FROM_NUMPY.get(np_dtype)
        if found is None:
            raise ValueError(f"numpy dtype {np_dtype} has no Triton datatype")
        return found

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """Numpy dtype of the elements (``object`` for BYTES, ``ml_dtypes.bfloat16`` for BF16)."""
        return _TO_NUMPY[self]

    @property
    def byte_size(self) -> int:
        """Bytes per element; 0 for BYTES, whose elements vary in size."""
        return 0 if self is DataType.BYTES else _TO_NUMPY[self].itemsize


_TO_NUMPY: dict[DataType, np.dtype[Any]] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype(np.float16),
    DataType.FP32: np.dtype(np.float32),
    DataType.FP64: np.dtype(np.float64),
    DataType.BYTES: np.dtype(np.object_),
    DataType.BF16: np.dtype(ml_dtypes.bfloat16),
}
_FROM_NUMPY: dict[np.dtype[Any], DataType] = {
    v: k for k, v in _TO_NUMPY.items() if k is not DataType.BYTES
}


def element_count(shape: Sequence[int]) -> int:
    """Number of elements in ``shape``; ``ValueError`` for negative dims or absurd sizes."""
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise ValueError(f"shape {list(shape)} has a non-integer dimension")
        if dim < 0:
            raise ValueError(f"shape {list(shape)} has a negative dimension")
        count *= dim
        if count > MAX_ELEMENTS:
            raise ValueError(f"shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    return count


def serialize_bytes_tensor(values: npt.NDArray[Any] | Iterable[Any]) -> bytes:
    """Triton's BYTES encoding: each element as a little-endian uint32 length then its bytes."""
    flat = np.asarray(values, dtype=np.object_).ravel(order="C")
    parts: list[bytes] = []
    for item in flat:
        if isinstance(item, str):
            raw = item.encode("utf-8")
        elif isinstance(item, bytes | bytearray | memoryview | np.bytes_):
            raw = bytes(item)
        else:
            raw = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(
    buffer: bytes | bytearray | memoryview, count: int | None = None
) -> npt.NDArray[np.object_]:
    """Decode Triton's BYTES encoding into a flat object array of ``bytes``.

    ``ValueError`` when the buffer is truncated or (with ``count``) holds a
    different number of elements.
    """
    view = memoryview(buffer).cast("B")
    total = len(view)
    items: list[bytes] = []
    offset = 0
    while offset < total:
        if offset + 4 > total:
            raise ValueError("BYTES tensor is truncated in an element length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > total:
            raise ValueError("BYTES tensor is truncated in an element's data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
        if count is not None and len(items) > count:
            break
    if count is not None and len(items) != count:
        raise ValueError(f"BYTES tensor holds {len(items)} elements, its shape needs {count}")
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor as Triton sees it: datatype, shape and a C-contiguous buffer.

    For BYTES the buffer holds the length-prefixed encoding. ``from_numpy`` does
    not copy numeric arrays that are already C-contiguous.
    """

    data_type: DataType
    shape: tuple[int, ...]
    buffer: Any  # any object exporting the buffer protocol

    @classmethod
    def from_numpy(cls, array: Any, data_type: DataType | None = None) -> Tensor:
        arr = np.asarray(array)
        dtype = data_type if data_type is not None else DataType.from_numpy(arr.dtype)
        if dtype is DataType.BYTES:
            return cls(dtype, tuple(arr.shape), serialize_bytes_tensor(arr))
        if arr.dtype != dtype.numpy_dtype:
            arr = arr.astype(dtype.numpy_dtype)
        if not arr.flags.c_contiguous:  # (ascontiguousarray would make a 0-d array 1-d)
            arr = arr.copy(order="C")
        # Hand over a uint8 view: the buffer protocol cannot export bfloat16's format.
        return cls(dtype, tuple(arr.shape), arr.reshape(-1).view(np.uint8))

    @property
    def byte_size(self) -> int:
        return memoryview(self.buffer).nbytes

    def to_numpy(self) -> npt.NDArray[Any]:
        """Array view of the buffer (no copy for numeric types)."""
        count = element_count(self.shape)
        if self.data_type is DataType.BYTES:
            return deserialize_bytes_tensor(self.buffer, count).reshape(self.shape)
        return to_numpy(self.data_type, self.shape, self.buffer)


def to_numpy(data_type: DataType, shape: tuple[int, ...], buffer: Any) -> npt.NDArray[Any]:
    """Numeric buffer to an array of ``shape``; ``ValueError`` when the size does not match."""
    np_dtype = data_type.numpy_dtype
    raw = np.frombuffer(buffer, dtype=np.uint8)
    expected = element_count(shape) * np_dtype.itemsize
    if raw.size != expected:
        raise ValueError(
            f"{data_type.name} tensor of shape {list(shape)} needs {expected} bytes, got {raw.size}"
        )
    return raw.view(np_dtype).reshape(shape)
