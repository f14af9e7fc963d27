"""Triton's generate extension: ``POST /v2/models/{m}/generate`` (and ``generate_stream``).

The body is one flat JSON object. Keys naming a model input become tensors,
shaped from the model's declared dims; every other key (and every key of the
optional ``parameters`` object that does not name an input) becomes a request
parameter. The response is flat too: output name -> value, one-element tensors
as scalars. This mirrors Triton's ``ConvertGenerateRequest``/``Response``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pydantic_core

from app.errors import BadRequest, ServingError
from app.protocol.kserve_v2.documents import ParameterValue, load_json
from app.protocol.kserve_v2.infer import OutputTensor
from app.protocol.kserve_v2.tensors import (
    DecodedInput,
    array_to_json,
    check_parameter,
    checked_count,
    json_to_array,
)
from app.triton.tensors import DataType

__all__ = [
    "DecodedGenerateRequest",
    "InputSpec",
    "decode_generate_request",
    "encode_generate_response",
    "sse_error_event",
    "sse_event",
]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A model input as ``generate`` needs it.

    ``dims`` are the model configuration's dims, *without* the batch dimension
    (``decode_generate_request`` adds it from ``max_batch_size``); -1 is variable.
    """

    name: str
    datatype: DataType
    dims: tuple[int, ...]
    optional: bool = False

    def __post_init__(self) -> None:
        if any(not isinstance(d, int) or d < -1 for d in self.dims):
            raise ValueError(f"input {self.name!r}: dims {list(self.dims)} must be >= -1")
        if self.datatype is DataType.INVALID:
            raise ValueError(f"input {self.name!r}: datatype is INVALID")


class DecodedGenerateRequest(NamedTuple):
    """Inputs (as ``decode_infer_request`` gives them), request parameters, request id."""

    inputs: list[DecodedInput]
    parameters: dict[str, ParameterValue]
    request_id: str | None


def _as_spec(item: InputSpec | tuple[Any, ...]) -> InputSpec:
    if isinstance(item, InputSpec):
        return item
    name, datatype, dims, *rest = item
    return InputSpec(name, datatype, tuple(dims), bool(rest[0]) if rest else False)


def _generate_shape(what: str, dims: Sequence[int], count: int) -> tuple[int, ...]:
    """Spread ``count`` over ``dims``: fixed dims must divide it, the innermost -1
    takes the rest, other -1 dims become 1 (Triton's two-pass rule)."""
    fixed = 1
    for d in dims:
        if d != -1:
            fixed *= d
    variable = [i for i, d in enumerate(dims) if d == -1]
    if fixed == 0:
        ok, rest = count == 0, 1
    else:
        ok, rest = count % fixed == 0, count // fixed
        ok = ok and (bool(variable) or rest == 1)
    if not ok:
        raise BadRequest(f"{what}: {count} elements cannot fill the model's shape {list(dims)}")
    shape = list(dims)
    for i in variable:
        shape[i] = 1
    if variable:
        shape[variable[-1]] = rest
    return tuple(shape)


def _decode_value(
    spec: InputSpec, value: Any, max_batch_size: int, max_elements: int, max_bytes_element: int
) -> DecodedInput:
    what = f"input '{spec.name}'"
    if isinstance(value, dict) or value is None:
        raise BadRequest(f"{what} must be a scalar or a list, got {type(value).__name__}")
    dims = (-1, *spec.dims) if max_batch_size > 0 else spec.dims
    leaves = _count_leaves(value)  # counted first: the limit applies before any conversion
    checked_count(what, (leaves,), max_elements)
    shape = _generate_shape(what, dims, leaves)
    data = json_to_array(
        what,
        spec.datatype,
        value,
        leaves,
        max_bytes_element=max_bytes_element,
        shape_text=str(list(shape)),
    )
    if spec.datatype is not DataType.BYTES:
        data = data.reshape(shape)
    return DecodedInput(spec.name, spec.datatype, shape, data)


def _count_leaves(value: Any) -> int:
    if not isinstance(value, list):
        return 1
    total = 0
    stack: list[list[Any]] = [value]
    while stack:
        items = stack.pop()
        for item in items:
            if isinstance(item, list):
                stack.append(item)
            else:
                total += 1
    return total


def decode_generate_request(
    body: bytes,
    inputs_metadata: Sequence[InputSpec | tuple[Any, ...]],
    max_batch_size: int,
    *,
    max_elements: int,
    max_bytes_element: int,
) -> DecodedGenerateRequest:
    """Map a generate body onto the model's inputs.

    A scalar or list fills the input's shape: with ``max_batch_size > 0`` a
    leading batch dimension is added, so a scalar for dims ``[-1]`` becomes
    shape ``[1, 1]``. ``"id"`` (when not an input name) is the request id.
    Missing required inputs, values that cannot fill the shape and
    non-scalar parameters are ``BadRequest``; an empty body means ``{}``.
    """
    document: Any = load_json(body, "request body") if body.strip() else {}
    if not isinstance(document, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(document).__name__}")
    specs = {spec.name: spec for spec in map(_as_spec, inputs_metadata)}
    nested = document.get("parameters")
    if "parameters" in document:
        if "parameters" in specs:
            raise BadRequest(
                "keyword 'parameters' for nested schema also given as input tensor name"
            )
        if not isinstance(nested, dict):
            raise BadRequest("field 'parameters' must be a JSON object")
    request_id: str | None = None
    if "id" in document and "id" not in specs:
        request_id = document["id"]
        if not isinstance(request_id, str):
            raise BadRequest(f"field 'id' must be a string, got {type(request_id).__name__}")

    values: dict[str, Any] = {}
    parameters: dict[str, ParameterValue] = {}
    top = [(k, v) for k, v in document.items() if k not in ("parameters", "id") or k in specs]
    for key, value in top + list((nested or {}).items()):
        if key in specs:
            if key in values:
                raise BadRequest(f"input '{key}' is given more than once")
            values[key] = value
        else:
            parameters[key] = check_parameter("request", key, value)

    missing = [name for name, spec in specs.items() if name not in values and not spec.optional]
    if missing:
        raise BadRequest(
            "request is missing required input(s): " + ", ".join(repr(m) for m in missing)
        )
    inputs = [
        _decode_value(specs[name], value, max_batch_size, max_elements, max_bytes_element)
        for name, value in values.items()
    ]
    return DecodedGenerateRequest(inputs, parameters, request_id)


def _to_json_value(datatype: DataType, array: Any) -> Any:
    arr = np.asarray(array)
    data = array_to_json(datatype, arr)
    if data is None:  # BYTES that are not UTF-8: lossy text, not invalid JSON
        flat = arr.ravel(order="C").tolist()
        data = [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes | bytearray) else str(v)
            for v in flat
        ]
    return data[0] if arr.size == 1 else data


def encode_generate_response(
    model_name: str,
    model_version: str | int | None,
    outputs: Sequence[OutputTensor],
    *,
    request_id: str | None = None,
    parameters: Mapping[str, ParameterValue] | None = None,
) -> dict[str, Any]:
    """The flat generate response, as Triton builds it.

    ``id``/``model_name``/``model_version`` first, then response parameters,
    then outputs; on a name clash the earlier key wins (as in Triton).
    Non-UTF-8 BYTES are decoded with U+FFFD replacements so the JSON stays valid
    (a streamed token can end mid-character).
    """
    doc: dict[str, Any] = {}
    if request_id:
        doc["id"] = request_id
    doc["model_name"] = model_name
    if model_version is not None:
        doc["model_version"] = str(model_version)
    for key, value in (parameters or {}).items():
        doc.setdefault(key, value)
    for name, datatype, array in outputs:
        if name not in doc:
            doc[name] = _to_json_value(datatype, array)
    return doc


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One ``generate_stream`` server-sent event: ``data: {json}\\n\\n``."""
    return b"data: " + pydantic_core.to_json(payload) + b"\n\n"


def sse_error_event(err: ServingError) -> bytes:
    """An error inside a stream, as Triton sends it: ``data: {"error": ...}``."""
    return sse_event({"error": err.message})
