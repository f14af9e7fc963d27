"""The KServe v2 inference protocol as Triton serves it over HTTP: the one import point.

Implementation lives in ``kserve_v2_models`` (JSON documents), ``kserve_v2_tensors``
(tensor data), ``kserve_v2_infer`` (infer + binary extension) and
``kserve_v2_generate`` (generate extension).
"""

from __future__ import annotations

from app.protocol.kserve_v2_generate import (
    DecodedGenerateRequest,
    InputSpec,
    decode_generate_request,
    encode_generate_response,
    sse_error_event,
    sse_event,
)
from app.protocol.kserve_v2_infer import (
    HEADER_LENGTH_HEADER,
    DecodedInferRequest,
    OutputTensor,
    RequestedOutput,
    classify,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from app.protocol.kserve_v2_models import (
    ErrorResponse,
    InferInputTensor,
    InferOutputTensor,
    InferRequest,
    InferRequestedOutput,
    InferResponse,
    LoadRequest,
    MetadataTensor,
    ModelMetadata,
    Parameters,
    ParameterValue,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    ServerMetadata,
    UnloadParameters,
    UnloadRequest,
    format_validation_error,
    load_json,
    parse_body,
)
from app.protocol.kserve_v2_tensors import DecodedInput

__all__ = [
    "HEADER_LENGTH_HEADER",
    "DecodedGenerateRequest",
    "DecodedInferRequest",
    "DecodedInput",
    "ErrorResponse",
    "InferInputTensor",
    "InferOutputTensor",
    "InferRequest",
    "InferRequestedOutput",
    "InferResponse",
    "InputSpec",
    "LoadRequest",
    "MetadataTensor",
    "ModelMetadata",
    "OutputTensor",
    "ParameterValue",
    "Parameters",
    "RepositoryIndexEntry",
    "RepositoryIndexRequest",
    "RequestedOutput",
    "ServerMetadata",
    "UnloadParameters",
    "UnloadRequest",
    "classify",
    "decode_generate_request",
    "decode_infer_request",
    "encode_generate_response",
    "encode_infer_response",
    "format_validation_error",
    "load_json",
    "parse_body",
    "parse_header_length",
    "sse_error_event",
    "sse_event",
]
