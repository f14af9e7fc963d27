"""``POST /v2/models/{m}[/versions/{v}]/infer``: request decoding, response encoding.

Follows Triton's HTTP server, including the binary tensor extension: when the
``Inference-Header-Content-Length: N`` header is present, the first N bytes of
the body are the JSON header and the rest are the binary segments of the inputs
that carry ``parameters.binary_data_size``, concatenated in input order.
Responses use the same framing for outputs sent as binary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pydantic_core
from pydantic import ValidationError

from app.errors import BadRequest, NotImplementedFeature
from app.protocol.kserve_v2.documents import (
    InferInputTensor,
    InferRequest,
    ParameterValue,
    format_validation_error,
    load_json,
)
from app.protocol.kserve_v2.tensors import (
    DecodedInput,
    array_to_binary,
    array_to_json,
    binary_to_array,
    check_parameter,
    checked_count,
    json_to_array,
    parse_datatype,
)
from app.triton.tensors import DataType

__all__ = [
    "HEADER_LENGTH_HEADER",
    "DecodedInferRequest",
    "OutputTensor",
    "RequestedOutput",
    "classify",
    "decode_infer_request",
    "encode_infer_response",
    "parse_header_length",
    "split_scheduling",
]

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
OutputTensor = tuple[str, DataType, npt.NDArray[Any]]

_UINT64_MAX = (1 << 64) - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_MAX_CLASSIFICATION_ELEMENTS = 1_000_000  # Triton's bound on classification work


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``; ``classification`` 0 means raw tensor."""

    name: str
    binary: bool = False
    classification: int = 0


@dataclass(frozen=True, slots=True)
class DecodedInferRequest:
    """A validated infer request.

    Triton's reserved request parameters are lifted into typed fields;
    ``parameters`` holds only the custom ones, to be set on the engine request.
    ``outputs`` is ``None`` when the client asked for every output.
    """

    id: str | None
    inputs: tuple[DecodedInput, ...]
    outputs: tuple[RequestedOutput, ...] | None
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    binary_data_output: bool = False
    sequence_id: int | str | None = None
    sequence_start: bool = False
    sequence_end: bool = False
    priority: int = 0
    timeout_us: int | None = None

    def binary_outputs(self) -> frozenset[str] | bool:
        """What ``encode_infer_response`` should send as binary, as Triton decides it.

        Explicitly requested outputs follow their own ``binary_data`` (default
        JSON); ``binary_data_output`` only sets the default for unlisted outputs.
        """
        if self.outputs is None:
            return self.binary_data_output
        return frozenset(o.name for o in self.outputs if o.binary)


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int (``None`` if absent)."""
    if value is None:
        return None
    text = value.strip()
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"Unable to parse {HEADER_LENGTH_HEADER}, got: {value!r}")
    return int(text)


def _uint(key: str, value: ParameterValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
        raise BadRequest(f"parameter {key!r} must be an unsigned integer, got {value!r}")
    return value


def split_scheduling(
    params: Mapping[str, ParameterValue],
) -> tuple[int, int, dict[str, ParameterValue]]:
    """(priority, timeout in microseconds, the other parameters) of a generate request:
    the same reserved ``priority`` and ``timeout`` as ``infer`` takes, for Triton's
    scheduler (priority levels and queue policy of the model's dynamic batcher)."""
    rest = dict(params)
    priority = _uint("priority", rest.pop("priority")) if "priority" in rest else 0
    timeout = _uint("timeout", rest.pop("timeout")) if "timeout" in rest else 0
    return priority, timeout, rest


def _flag(key: str, value: ParameterValue) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be a bool, got {value!r}")
    return value


def _request_parameters(params: Mapping[str, ParameterValue]) -> dict[str, Any]:
    """Split reserved parameters (typed) from custom ones, as Triton's server does."""
    out: dict[str, Any] = {"parameters": {}}
    for key, value in params.items():
        if key == "sequence_id":
            out["sequence_id"] = value if isinstance(value, str) else _uint(key, value)
        elif key in ("sequence_start", "sequence_end", "binary_data_output"):
            out[key] = _flag(key, value)
        elif key == "priority":
            out["priority"] = _uint(key, value)
        elif key == "timeout":
            out["timeout_us"] = _uint(key, value)
        elif key.startswith("triton_"):
            raise BadRequest(
                "parameter keys starting with 'triton_' are reserved for Triton usage "
                f"and should not be specified (got {key!r})"
            )
        else:
            out["parameters"][key] = check_parameter("request", key, value)
    return out


def _reject_shared_memory(what: str, params: Mapping[str, ParameterValue]) -> None:
    if any(key.startswith("shared_memory_") for key in params):
        raise NotImplementedFeature(
            f"{what}: shared-memory tensors are not supported by this server; "
            "send the data in JSON or as binary"
        )


def _requested_outputs(request: InferRequest) -> tuple[RequestedOutput, ...] | None:
    if request.outputs is None:
        return None
    seen: set[str] = set()
    outputs: list[RequestedOutput] = []
    for out in request.outputs:
        what = f"output '{out.name}'"
        if out.name in seen:
            raise BadRequest(f"{what} is requested more than once")
        seen.add(out.name)
        params = out.parameters or {}
        _reject_shared_memory(what, params)
        binary = params.get("binary_data", False)
        if not isinstance(binary, bool):
            raise BadRequest(f"{what}: parameter 'binary_data' must be a bool, got {binary!r}")
        classes = params.get("classification", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise BadRequest(
                f"{what}: parameter 'classification' must be an integer >= 0, got {classes!r}"
            )
        outputs.append(RequestedOutput(out.name, binary, classes))
    return tuple(outputs)


def _split_body(body: bytes, header_length: int | None) -> bytes:
    if header_length is None:
        return body
    if header_length < 0 or header_length > len(body):
        raise BadRequest(
            f"{HEADER_LENGTH_HEADER} must be in range [0, {len(body)}] (the body size), "
            f"got {header_length}"
        )
    if header_length == 0:
        raise NotImplementedFeature(
            f"{HEADER_LENGTH_HEADER}: 0 (a raw binary request without a JSON header) "
            "is not supported; send a JSON header"
        )
    return body[:header_length]


def _decode_input(
    tensor: InferInputTensor,
    body: bytes,
    offset: int,
    has_header: bool,
    max_elements: int,
    max_bytes_element: int,
) -> tuple[DecodedInput, int]:
    """One input and the body offset after its binary segment."""
    what = f"input '{tensor.name}'"
    datatype = parse_datatype(what, tensor.datatype)
    shape = tuple(tensor.shape)
    count = checked_count(what, shape, max_elements)
    params = dict(tensor.parameters or {})
    _reject_shared_memory(what, params)
    has_data = "data" in tensor.model_fields_set
    size = params.pop("binary_data_size", None)
    if has_data == (size is not None):
        raise BadRequest(
            f"{what} must set exactly one of 'data' and 'parameters.binary_data_size', "
            f"but sets {'both' if has_data else 'neither'}"
        )
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"{what}: binary_data_size must be an integer >= 0, got {size!r}")
        if size > 0 and not has_header:
            raise BadRequest(
                f"{what} has binary data, so the request needs the {HEADER_LENGTH_HEADER} header"
            )
        if offset + size > len(body):
            raise BadRequest(
                f"{what}: binary_data_size is {size} bytes, but only {len(body) - offset} "
                "bytes of binary data remain in the body"
            )
        data = binary_to_array(
            what,
            datatype,
            shape,
            count,
            body,
            offset,
            size,
            max_bytes_element=max_bytes_element,
        )
        offset += size
    else:
        if not isinstance(tensor.data, list):
            raise BadRequest(f"{what}: 'data' must be a list, got {type(tensor.data).__name__}")
        data = json_to_array(
            what,
            datatype,
            tensor.data,
            count,
            max_bytes_element=max_bytes_element,
            shape_text=str(list(shape)),
        )
        if datatype is not DataType.BYTES:
            data = data.reshape(shape)
    checked = {k: check_parameter(what, k, v) for k, v in params.items()}
    return DecodedInput(tensor.name, datatype, shape, data, checked), offset


def decode_infer_request(
    body: bytes,
    header_length: int | None,
    *,
    max_elements: int,
    max_bytes_element: int,
) -> DecodedInferRequest:
    """Validate and decode an infer request body.

    ``BadRequest`` (naming the input or field) for every malformed request,
    ``BadRequest`` (400) for a tensor over ``max_elements`` or a BYTES element
    over ``max_bytes_element``, ``NotImplementedFeature`` for shared memory
    and raw (header length 0) requests. Numeric binary inputs are views of
    ``body``, not copies.
    """
    header = _split_body(body, header_length)
    document = load_json(header, "request JSON")
    if not isinstance(document, dict):
        raise BadRequest(f"request JSON must be an object, got {type(document).__name__}")
    try:
        request = InferRequest.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(format_validation_error(exc, document)) from None

    reserved = _request_parameters(request.parameters or {})
    offset = len(header)
    inputs: list[DecodedInput] = []
    seen: set[str] = set()
    for tensor in request.inputs:
        if tensor.name in seen:
            raise BadRequest(f"input '{tensor.name}' appears more than once")
        seen.add(tensor.name)
        decoded, offset = _decode_input(
            tensor, body, offset, header_length is not None, max_elements, max_bytes_element
        )
        inputs.append(decoded)
    if offset != len(body):
        raise BadRequest(
            f"{len(body) - offset} bytes follow the request JSON that no input's "
            "binary_data_size accounts for"
        )
    return DecodedInferRequest(
        id=request.id,
        inputs=tuple(inputs),
        outputs=_requested_outputs(request),
        **reserved,
    )


def encode_infer_response(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
    parameters: Mapping[str, ParameterValue] | None = None,
    binary_outputs: Set[str] | bool = False,
) -> tuple[bytes, int | None]:
    """Triton's infer response: ``(body, header_length)``, ``None`` for pure JSON.

    ``binary_outputs``: names to send as binary, or ``True``/``False`` for all or
    none. A BYTES output that is not valid UTF-8 goes out as binary even when
    JSON was asked for (Triton would emit invalid JSON; tritonclient reads
    either form). FP16/BF16 in JSON are numbers.
    """
    doc: dict[str, Any] = {}
    if request_id:
        doc["id"] = request_id
    doc["model_name"] = model_name
    if model_version is not None:
        doc["model_version"] = str(model_version)
    if parameters:
        doc["parameters"] = dict(parameters)
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, value in outputs:
        array = np.asarray(value)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype.name,
            "shape": [int(d) for d in array.shape],
        }
        binary = binary_outputs if isinstance(binary_outputs, bool) else name in binary_outputs
        data = None if binary else array_to_json(datatype, array)
        if data is None:
            raw = array_to_binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            if raw:
                blobs.append(raw)
        else:
            entry["data"] = data
        entries.append(entry)
    doc["outputs"] = entries
    header = pydantic_core.to_json(doc)  # compact, UTF-8, NaN/Infinity as Python's json writes
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def classify(
    array: npt.NDArray[Any],
    count: int,
    *,
    batched: bool,
    labels: Sequence[str] | None = None,
) -> npt.NDArray[np.object_]:
    """Triton's classification extension: top-``count`` entries as ``"value:index[:label]"``.

    The result is a BYTES tensor of shape ``[batch, k]`` (``batched``) or ``[k]``,
    ``k = min(count, classes)``; ties keep the lower index first.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "iuf" and arr.dtype.name != "bfloat16":
        raise BadRequest(f"class result not available for output of numpy dtype {arr.dtype}")
    if arr.size > _MAX_CLASSIFICATION_ELEMENTS:
        raise BadRequest("classification output tensor too large")
    rows = arr.reshape(arr.shape[0], -1) if batched and arr.ndim > 0 else arr.reshape(1, -1)
    k = min(count, rows.shape[1])
    is_float = arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"
    result: list[bytes] = []
    for row in rows:
        values = row.astype(np.float64) if is_float else row
        # Stable descending order: sort the reversed row ascending, then read backwards.
        order = (len(values) - 1 - np.argsort(values[::-1], kind="stable"))[::-1][:k]
        for idx in order.tolist():
            value = values[idx]
            text = f"{float(value):f}" if is_float else str(int(value))
            text += f":{idx}"
            if labels is not None and idx < len(labels):
                text += f":{labels[idx]}"
            result.append(text.encode())
    out = np.empty(len(result), dtype=np.object_)
    out[:] = result
    return out.reshape((rows.shape[0], k) if batched and arr.ndim > 0 else (k,))
