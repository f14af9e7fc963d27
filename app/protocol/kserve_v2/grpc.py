"""Triton's gRPC messages (``inference.*`` of ``grpc_service.proto``) to and from what
the rest of the application speaks: ``DecodedInferRequest`` for inference, and the
JSON documents Triton reports for metadata, configuration and statistics.

Decoding applies the same checks as the HTTP path (datatypes, shapes, element
counts, byte sizes, BYTES framing, parameters), with the same error classes, so a
malformed ``ModelInferRequest`` is refused before Triton sees it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2, service_pb2

from app.errors import BadRequest, Internal, NotImplementedFeature
from app.protocol.kserve_v2.documents import LoadRequest, ParameterValue, format_validation_error
from app.protocol.kserve_v2.infer import DecodedInferRequest, OutputTensor, RequestedOutput
from app.protocol.kserve_v2.tensors import (
    DecodedInput,
    binary_to_array,
    check_parameter,
    checked_count,
    json_to_array,
    parse_datatype,
)
from app.triton.tensors import DataType, serialize_bytes_tensor

__all__ = [
    "EMPTY_FINAL_RESPONSE_PARAMETER",
    "FINAL_RESPONSE_PARAMETER",
    "decode_infer_request",
    "decode_load_request",
    "decode_unload_dependents",
    "encode_infer_response",
    "encode_model_config",
    "encode_model_metadata",
    "encode_repository_index",
    "encode_statistics",
    "parameter_value",
    "parse_infer_request",
    "stream_error",
    "stream_response",
]

EMPTY_FINAL_RESPONSE_PARAMETER = "triton_enable_empty_final_response"
FINAL_RESPONSE_PARAMETER = "triton_final_response"

_UINT64_MAX = (1 << 64) - 1

# The typed ``InferTensorContents`` field of each datatype (FP16 and BF16 have none:
# they travel only in ``raw_input_contents``, as in Triton).
_CONTENTS_FIELD: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


def parameter_value(param: Any) -> ParameterValue | None:
    """The value of an ``InferParameter`` (``None`` when no choice is set)."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        return None
    value: ParameterValue = getattr(param, choice)
    return value


def _set_parameter(param: Any, value: ParameterValue) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = value


def _reject_shared_memory(what: str, keys: Iterable[str]) -> None:
    if any(key.startswith("shared_memory_") for key in keys):
        raise NotImplementedFeature(
            f"{what}: shared-memory tensors are not supported by this server; "
            "send the data in raw_input_contents"
        )


def _uint(key: str, value: ParameterValue | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
        raise BadRequest(f"parameter {key!r} must be an unsigned integer, got {value!r}")
    return value


def _flag(key: str, value: ParameterValue | None) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be a bool_param, got {value!r}")
    return value


def _request_parameters(params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Reserved request parameters as typed fields, the custom ones, and whether the
    client asked for an empty final response (Triton's streaming flag)."""
    out: dict[str, Any] = {"parameters": {}}
    empty_final = False
    for key, param in params.items():
        value = parameter_value(param)
        if key == "sequence_id":
            out["sequence_id"] = value if isinstance(value, str) else _uint(key, value)
        elif key in ("sequence_start", "sequence_end"):
            out[key] = _flag(key, value)
        elif key == "priority":
            out["priority"] = _uint(key, value)
        elif key == "timeout":
            out["timeout_us"] = _uint(key, value)
        elif key == EMPTY_FINAL_RESPONSE_PARAMETER:
            empty_final = _flag(key, value)
        elif key.startswith("triton_"):
            raise BadRequest(
                "parameter keys starting with 'triton_' are reserved for Triton usage "
                f"and should not be specified (got {key!r})"
            )
        elif key in ("headers", "binary_data_output"):
            continue  # HTTP-only reserved parameters; Triton's gRPC server ignores them
        else:
            if value is None:
                raise BadRequest(f"request: parameter {key!r} has no value")
            out["parameters"][key] = check_parameter("request", key, value)
    return out, empty_final


def _requested_outputs(request: Any) -> tuple[RequestedOutput, ...] | None:
    if not request.outputs:
        return None
    seen: set[str] = set()
    outputs: list[RequestedOutput] = []
    for out in request.outputs:
        what = f"output '{out.name}'"
        if out.name in seen:
            raise BadRequest(f"{what} is requested more than once")
        seen.add(out.name)
        _reject_shared_memory(what, out.parameters.keys())
        if "classification" in out.parameters:
            raise NotImplementedFeature(
                f"{what}: the classification parameter is not supported on gRPC"
            )
        outputs.append(RequestedOutput(out.name, binary=True))
    return tuple(outputs)


def _from_contents(
    what: str, datatype: DataType, shape: tuple[int, ...], count: int, tensor: Any, limit: int
) -> npt.NDArray[Any]:
    """An input sent in the typed ``contents`` field instead of raw bytes."""
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{what}: {datatype.name} data must be sent in raw_input_contents")
    values = list(getattr(tensor.contents, field))
    if datatype is DataType.BYTES:
        if len(values) != count:
            raise BadRequest(
                f"{what}: contents hold {len(values)} elements, shape {list(shape)} needs {count}"
            )
        framed = serialize_bytes_tensor(values)
        return binary_to_array(
            what, datatype, shape, count, framed, 0, len(framed), max_bytes_element=limit
        )
    # Range checks for INT8/INT16/UINT8/UINT16 (carried in 32-bit fields) come with it.
    array = json_to_array(
        what, datatype, values, count, max_bytes_element=limit, shape_text=str(list(shape))
    )
    return array.reshape(shape)


def _decode_input(
    tensor: Any, raw: bytes | None, max_elements: int, max_bytes_element: int
) -> DecodedInput:
    what = f"input '{tensor.name}'"
    datatype = parse_datatype(what, tensor.datatype)
    shape = tuple(int(d) for d in tensor.shape)
    count = checked_count(what, shape, max_elements)
    _reject_shared_memory(what, tensor.parameters.keys())
    has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
    if raw is not None:
        if has_contents:
            raise BadRequest(f"{what} sets both contents and raw_input_contents")
        data = binary_to_array(
            what, datatype, shape, count, raw, 0, len(raw), max_bytes_element=max_bytes_element
        )
    else:
        data = _from_contents(what, datatype, shape, count, tensor, max_bytes_element)
    params: dict[str, ParameterValue] = {}
    for key, param in tensor.parameters.items():
        value = parameter_value(param)
        if key == "binary_data_size" or value is None:
            continue
        params[key] = check_parameter(what, key, value)
    return DecodedInput(tensor.name, datatype, shape, data, params)


def parse_infer_request(message: bytes) -> Any:
    """A serialized ``ModelInferRequest`` (as the router forwards it)."""
    try:
        return service_pb2.ModelInferRequest.FromString(message)
    except DecodeError as exc:
        raise BadRequest(f"malformed ModelInferRequest: {exc}") from None


def decode_infer_request(
    request: Any, *, max_elements: int, max_bytes_element: int
) -> tuple[DecodedInferRequest, bool]:
    """Validate a ``ModelInferRequest``: the decoded request, and whether the client
    asked for an empty final response (``triton_enable_empty_final_response``).

    ``raw_input_contents`` holds one entry per input, in input order, or none (then
    each input uses its typed ``contents``), as Triton requires. Numeric raw inputs
    are views of the message's bytes, not copies.
    """
    raw_contents: Sequence[bytes] = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise BadRequest(
            f"expected {len(request.inputs)} raw_input_contents (one per input), "
            f"got {len(raw_contents)}"
        )
    reserved, empty_final = _request_parameters(request.parameters)
    inputs: list[DecodedInput] = []
    seen: set[str] = set()
    for i, tensor in enumerate(request.inputs):
        if tensor.name in seen:
            raise BadRequest(f"input '{tensor.name}' appears more than once")
        seen.add(tensor.name)
        raw = raw_contents[i] if raw_contents else None
        inputs.append(_decode_input(tensor, raw, max_elements, max_bytes_element))
    decoded = DecodedInferRequest(
        id=request.id or None,
        inputs=tuple(inputs),
        outputs=_requested_outputs(request),
        **reserved,
    )
    return decoded, empty_final


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[OutputTensor],
    parameters: Mapping[str, ParameterValue] | None = None,
) -> Any:
    """A ``ModelInferResponse`` with every output in ``raw_output_contents``, as
    Triton's gRPC server sends them (BYTES length-prefixed, numbers little-endian)."""
    response = service_pb2.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for key, value in (parameters or {}).items():
        _set_parameter(response.parameters[key], value)
    for name, datatype, data in outputs:
        array = np.asarray(data)
        tensor = response.outputs.add(name=name, datatype=datatype.name)
        tensor.shape.extend(int(d) for d in array.shape)
        if datatype is DataType.BYTES:
            response.raw_output_contents.append(serialize_bytes_tensor(array))
        else:
            contiguous = np.ascontiguousarray(array, dtype=datatype.numpy_dtype)
            response.raw_output_contents.append(contiguous.tobytes())
    return response


def stream_response(infer_response: Any) -> Any:
    """One response of a ``ModelStreamInfer`` stream."""
    return service_pb2.ModelStreamInferResponse(infer_response=infer_response)


def stream_error(message: str) -> Any:
    """An error on a ``ModelStreamInfer`` stream: Triton reports it in the stream
    (``error_message``) and keeps the stream open for the client's next requests."""
    return service_pb2.ModelStreamInferResponse(error_message=message)


def encode_model_metadata(metadata: Mapping[str, Any]) -> Any:
    """Triton's model metadata document as a ``ModelMetadataResponse``."""
    response = service_pb2.ModelMetadataResponse(
        name=metadata.get("name", ""),
        versions=[str(v) for v in metadata.get("versions", [])],
        platform=metadata.get("platform", ""),
    )
    for key in ("inputs", "outputs"):
        for tensor in metadata.get(key, []):
            getattr(response, key).add(
                name=tensor["name"],
                datatype=tensor["datatype"],
                shape=[int(d) for d in tensor.get("shape", [])],
            )
    return response


def encode_model_config(config: Mapping[str, Any]) -> Any:
    """Triton's model configuration (JSON) as a ``ModelConfigResponse``.

    Fields this protobuf does not know (a newer Triton's) are left out rather
    than failing the call.
    """
    message = model_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(dict(config), message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise Internal(f"the model configuration does not fit Triton's schema: {exc}") from None
    return service_pb2.ModelConfigResponse(config=message)


def encode_statistics(stats: Iterable[Mapping[str, Any]]) -> Any:
    """Triton's statistics documents as a ``ModelStatisticsResponse``."""
    response = service_pb2.ModelStatisticsResponse()
    json_format.ParseDict({"model_stats": list(stats)}, response, ignore_unknown_fields=True)
    return response


def encode_repository_index(entries: Iterable[Mapping[str, Any]]) -> Any:
    """Index entries (``name``, ``version``, ``state``, ``reason``) as a
    ``RepositoryIndexResponse``."""
    response = service_pb2.RepositoryIndexResponse()
    for entry in entries:
        response.models.add(
            name=entry["name"],
            version=entry.get("version") or "",
            state=entry.get("state") or "",
            reason=entry.get("reason") or "",
        )
    return response


def decode_load_request(request: Any) -> LoadRequest:
    """A ``RepositoryModelLoadRequest``'s parameters as the HTTP ``LoadRequest``, so
    both protocols accept the same ``config`` and ``file:<path>`` overrides."""
    if request.repository_name:
        raise BadRequest("repository_name is not supported: this server has one repository")
    parameters: dict[str, str] = {}
    for key, param in request.parameters.items():
        choice = param.WhichOneof("parameter_choice")
        if key.startswith("file:"):
            if choice != "bytes_param":
                raise BadRequest(f"parameters: {key!r} must be a bytes_param")
            parameters[key] = base64.b64encode(param.bytes_param).decode("ascii")
        elif key == "config":
            if choice != "string_param":
                raise BadRequest("parameters: 'config' must be a string_param")
            parameters[key] = param.string_param
        else:
            raise BadRequest(f"parameters: unknown key {key!r}; expected 'config' or 'file:<path>'")
    try:
        return LoadRequest.model_validate({"parameters": parameters})
    except ValidationError as exc:
        raise BadRequest(format_validation_error(exc, {"parameters": parameters})) from None


def decode_unload_dependents(request: Any) -> bool:
    """``unload_dependents`` of a ``RepositoryModelUnloadRequest`` (default false)."""
    if request.repository_name:
        raise BadRequest("repository_name is not supported: this server has one repository")
    dependents = False
    for key, param in request.parameters.items():
        if key != "unload_dependents":
            raise BadRequest(f"parameters: unknown key {key!r}; expected 'unload_dependents'")
        if param.WhichOneof("parameter_choice") != "bool_param":
            raise BadRequest("parameters: 'unload_dependents' must be a bool_param")
        dependents = param.bool_param
    return dependents
