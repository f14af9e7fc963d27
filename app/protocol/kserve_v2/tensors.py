"""Tensor data as the v2 protocol carries it: JSON element lists and binary segments.

Shared by ``infer`` and ``generate``. Every check names the tensor (``what``)
and raises ``BadRequest`` (malformed, or a tensor over its element or BYTES limit),
so nothing malformed reaches the engine.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from app.errors import BadRequest
from app.protocol.kserve_v2.documents import ParameterValue
from app.triton.tensors import (
    DataType,
    Tensor,
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
)

__all__ = [
    "DecodedInput",
    "array_to_binary",
    "array_to_json",
    "binary_to_array",
    "check_parameter",
    "checked_count",
    "json_to_array",
    "parse_datatype",
]

MAX_DIMS = 32  # numpy's limit (NPY_MAXDIMS in numpy 1.x)
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_LENGTH = struct.Struct("<I")
_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True, slots=True)
class DecodedInput:
    """One validated input tensor.

    ``data`` is a numpy array of ``shape`` for numeric datatypes (a read-only,
    possibly unaligned view of the request body for binary inputs), and for
    BYTES a flat ``uint8`` array holding Triton's length-prefixed encoding,
    which is what the engine consumes. Both pickle, so a decoded request can
    cross a Ray handle.
    """

    name: str
    datatype: DataType
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: dict[str, ParameterValue] = field(default_factory=dict)

    def to_numpy(self) -> npt.NDArray[Any]:
        """The tensor as numpy; BYTES become an object array of ``bytes``."""
        if self.datatype is DataType.BYTES:
            count = element_count(self.shape)
            return deserialize_bytes_tensor(self.data.data, count).reshape(self.shape)
        return self.data

    def to_tensor(self) -> Tensor:
        """The engine's view: datatype, shape and a buffer, without copying."""
        if self.datatype is DataType.BYTES:
            return Tensor(DataType.BYTES, self.shape, self.data)
        return Tensor.from_numpy(self.data, self.datatype)


def parse_datatype(what: str, text: str) -> DataType:
    """A KServe datatype string exactly as the protocol spells it (``"FP32"``)."""
    member = DataType.__members__.get(text)
    if member is None or member is DataType.INVALID:
        raise BadRequest(f"{what}: unknown datatype {text!r}")
    return member


def checked_count(what: str, shape: Sequence[int], max_elements: int) -> int:
    """Element count of ``shape``: 400 if malformed or overflowing, 413 over the limit."""
    try:
        count = element_count(shape)
    except ValueError as exc:
        raise BadRequest(f"{what}: invalid shape: {exc}") from None
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"{what}: invalid shape: more than {MAX_DIMS} dimensions")
    if count == 0:  # [0, 2**63] has no elements, but numpy cannot hold that shape
        try:
            element_count([d for d in shape if d != 0])
        except ValueError as exc:
            raise BadRequest(f"{what}: invalid shape: {exc}") from None
    if count > max_elements:
        raise BadRequest(
            f"{what}: shape {list(shape)} has {count} elements, more than the limit of "
            f"{max_elements}"
        )
    return count


def check_parameter(what: str, key: str, value: Any) -> ParameterValue:
    """A parameter value must be a JSON scalar; integers must fit int64."""
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise BadRequest(f"{what}: parameter {key!r} is out of the int64 range")
        return value
    raise BadRequest(
        f"{what}: parameter {key!r} has invalid type {type(value).__name__}; "
        "it must be a bool, int, float or string"
    )


def _flatten(data: list[Any]) -> tuple[list[Any], set[type]]:
    """Row-major leaves of nested lists (ragged nesting accepted, as Triton does)."""
    flat = data
    while True:
        kinds = set(map(type, flat))
        if list not in kinds:
            return flat, kinds
        if kinds == {list}:
            flat = list(chain.from_iterable(flat))
            continue
        out: list[Any] = []
        for item in flat:
            if isinstance(item, list):
                out.extend(item)
            else:
                out.append(item)
        flat = out


def _type_names(kinds: set[type]) -> str:
    names = {"NoneType": "null", "dict": "object", "str": "string"}
    return ", ".join(sorted(names.get(k.__name__, k.__name__) for k in kinds))


def json_to_array(
    what: str,
    datatype: DataType,
    data: Any,
    count: int,
    *,
    max_bytes_element: int,
    shape_text: str,
) -> npt.NDArray[Any]:
    """JSON elements to a flat array (BYTES: the flat length-prefixed ``uint8`` encoding).

    ``data`` may be a list (nested or flat) or, for ``generate``, a scalar.
    """
    values, kinds = _flatten(data) if isinstance(data, list) else ([data], {type(data)})
    if len(values) != count:
        raise BadRequest(
            f"{what}: data holds {len(values)} elements, shape {shape_text} needs {count}"
        )
    if count == 0:
        kinds = set()
    if datatype is DataType.BYTES:
        return _strings_to_bytes(what, values, kinds, max_bytes_element)
    np_dtype = datatype.numpy_dtype
    if datatype is DataType.BOOL:
        if not kinds <= {bool}:
            raise BadRequest(f"{what}: BOOL data must be true/false, got {_type_names(kinds)}")
        return np.array(values, dtype=np.bool_)
    if np_dtype.kind in "iu":
        if not kinds <= {int}:
            raise BadRequest(
                f"{what}: {datatype.name} data must be integers, got {_type_names(kinds)}"
            )
        if values:
            info = np.iinfo(np_dtype)
            low, high = min(values), max(values)
            if low < info.min or high > info.max:
                bad = low if low < info.min else high
                raise BadRequest(
                    f"{what}: value {bad} is out of range for {datatype.name} "
                    f"[{info.min}, {info.max}]"
                )
        return np.array(values, dtype=np_dtype)
    if not kinds <= _NUMBER_TYPES:
        raise BadRequest(f"{what}: {datatype.name} data must be numbers, got {_type_names(kinds)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf, as a C cast
            return np.array(values, dtype=np_dtype)
    except OverflowError:
        raise BadRequest(f"{what}: an integer in data is too large for {datatype.name}") from None


def _strings_to_bytes(
    what: str, values: list[Any], kinds: set[type], max_bytes_element: int
) -> npt.NDArray[np.uint8]:
    if not kinds <= {str}:
        raise BadRequest(f"{what}: BYTES data must be strings, got {_type_names(kinds)}")
    parts: list[bytes] = []
    for text in values:
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{what}: a BYTES element is not valid Unicode") from None
        if len(raw) > max_bytes_element:
            raise BadRequest(
                f"{what}: a BYTES element of {len(raw)} bytes exceeds the limit of "
                f"{max_bytes_element}"
            )
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def binary_to_array(
    what: str,
    datatype: DataType,
    shape: tuple[int, ...],
    count: int,
    body: bytes,
    offset: int,
    size: int,
    *,
    max_bytes_element: int,
) -> npt.NDArray[Any]:
    """A binary segment of ``body`` as an array view (no copy); sizes are checked."""
    segment = np.frombuffer(body, dtype=np.uint8, count=size, offset=offset)
    if datatype is DataType.BYTES:
        _check_bytes_encoding(what, body, offset, size, count, max_bytes_element)
        return segment
    np_dtype = datatype.numpy_dtype
    expected = count * np_dtype.itemsize
    if size != expected:
        raise BadRequest(
            f"{what}: binary_data_size is {size} bytes, but {datatype.name} shape "
            f"{list(shape)} needs {expected}"
        )
    return segment.view(np_dtype).reshape(shape)


def _check_bytes_encoding(
    what: str, body: bytes, offset: int, size: int, count: int, max_bytes_element: int
) -> None:
    """Walk the length prefixes: truncation, element count and element size."""
    end = offset + size
    pos = offset
    found = 0
    unpack = _LENGTH.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(f"{what}: BYTES data is truncated in an element length")
        (length,) = unpack(body, pos)
        pos += 4
        if length > max_bytes_element:
            raise BadRequest(
                f"{what}: a BYTES element of {length} bytes exceeds the limit of "
                f"{max_bytes_element}"
            )
        if pos + length > end:
            raise BadRequest(f"{what}: BYTES data is truncated in element {found}")
        pos += length
        found += 1
        if found > count:
            break
    if found != count:
        more = "more than " if found > count else ""
        raise BadRequest(f"{what}: BYTES data holds {more}{found} elements, shape needs {count}")


def array_to_json(datatype: DataType, array: npt.NDArray[Any]) -> list[Any] | None:
    """Flat row-major JSON elements; ``None`` when BYTES are not valid UTF-8.

    FP16 and BF16 become numbers (Triton refuses them in JSON; we do not).
    """
    flat = np.asarray(array).ravel(order="C")
    if datatype is DataType.BYTES:
        out: list[Any] = []
        for item in flat.tolist():
            if isinstance(item, bytes | bytearray):
                try:
                    out.append(item.decode("utf-8"))
                except UnicodeDecodeError:
                    return None
            elif isinstance(item, str):
                out.append(item)
            else:
                out.append(str(item))
        return out
    np_dtype = datatype.numpy_dtype
    if datatype in (DataType.BF16, DataType.FP16):
        return flat.astype(np.float32).tolist()  # type: ignore[no-any-return]
    if flat.dtype != np_dtype:
        flat = flat.astype(np_dtype)
    return flat.tolist()  # type: ignore[no-any-return]


def array_to_binary(datatype: DataType, array: npt.NDArray[Any]) -> bytes:
    """A tensor's segment in the binary extension: raw little-endian elements, or
    Triton's length-prefixed encoding for BYTES."""
    if datatype is DataType.BYTES:
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=datatype.numpy_dtype).tobytes()
