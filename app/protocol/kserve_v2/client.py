"""The client's half of KServe v2 over HTTP: infer request bodies and the reading of
infer responses and ``generate_stream`` events.

The inverse of ``infer``, with the same binary tensor extension (a JSON
header of ``Inference-Header-Content-Length`` bytes, then the tensors' segments in
order), so tools that talk to a server without tritonclient (the benchmarks) send
and read exactly what the server decodes and encodes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from app.protocol.kserve_v2.documents import ParameterValue
from app.protocol.kserve_v2.infer import HEADER_LENGTH_HEADER, OutputTensor
from app.protocol.kserve_v2.tensors import array_to_binary, array_to_json
from app.triton.tensors import DataType, deserialize_bytes_tensor, element_count

__all__ = [
    "InputTensor",
    "decode_infer_response",
    "encode_infer_request",
    "generate_event_tokens",
    "request_headers",
]

InputTensor = OutputTensor  # (name, datatype, array): the same triple both ways


def encode_infer_request(
    inputs: Sequence[InputTensor],
    outputs: Sequence[str] | None = None,
    *,
    binary: bool = True,
    parameters: Mapping[str, ParameterValue] | None = None,
) -> tuple[bytes, int | None]:
    """An infer request body and its header length (``None`` for pure JSON).

    ``binary`` sends the inputs as binary segments and asks for the ``outputs`` in
    binary too; otherwise everything is JSON. ``outputs`` ``None`` asks for all.
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, datatype, value in inputs:
        array = np.asarray(value)
        entry: dict[str, Any] = {
            "name": name,
            "shape": [int(d) for d in array.shape],
            "datatype": datatype.name,
        }
        if binary:
            raw = array_to_binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            data = array_to_json(datatype, array)
            if data is None:
                raise ValueError(f"input {name!r}: BYTES that are not UTF-8 need binary=True")
            entry["data"] = data
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    if parameters:
        doc["parameters"] = dict(parameters)
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not binary:
        return header, None
    return b"".join([header, *blobs]), len(header)


def request_headers(header_length: int | None) -> dict[str, str]:
    """The HTTP headers that go with a body of ``encode_infer_request``."""
    if header_length is None:
        return {"Content-Type": "application/json"}
    return {"Content-Type": "application/octet-stream", HEADER_LENGTH_HEADER: str(header_length)}


def decode_infer_response(
    body: bytes, header_length: int | None
) -> dict[str, tuple[DataType, npt.NDArray[Any]]]:
    """Every output of an infer response by name: its datatype and its array (BYTES as
    an object array of ``bytes``). ``ValueError`` when the body does not add up."""
    header = body if header_length is None else body[:header_length]
    document = json.loads(header)
    offset = len(header)
    found: dict[str, tuple[DataType, npt.NDArray[Any]]] = {}
    for out in document.get("outputs", []):
        datatype = DataType.from_string(out["datatype"])
        shape = tuple(int(d) for d in out["shape"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = _from_json(datatype, out.get("data", []), shape)
        else:
            if offset + size > len(body):
                raise ValueError(f"output {out['name']!r}: binary segment runs past the body")
            segment = body[offset : offset + size]
            offset += size
            array = _from_binary(datatype, segment, shape)
        found[out["name"]] = (datatype, array)
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last output's segment")
    return found


def _from_json(datatype: DataType, data: list[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if datatype is DataType.BYTES:
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in data]
        array = np.empty(len(values), dtype=np.object_)
        array[:] = values
        return array.reshape(shape)
    return np.asarray(data, dtype=datatype.numpy_dtype).reshape(shape)


def _from_binary(datatype: DataType, segment: bytes, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if datatype is DataType.BYTES:
        return deserialize_bytes_tensor(segment, element_count(shape)).reshape(shape)
    return np.frombuffer(segment, dtype=datatype.numpy_dtype).reshape(shape)


def generate_event_tokens(event: Mapping[str, Any]) -> int:
    """Tokens one ``generate_stream`` event carries: the engine's ``num_output_tokens``
    when it returns one (vLLM), else one per event with text (the TensorRT-LLM
    ensemble returns no count; it streams one response per generated token)."""
    if "num_output_tokens" in event:
        return int(event["num_output_tokens"])
    return 1 if event.get("text_output") else 0
