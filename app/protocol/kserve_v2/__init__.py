"""The KServe v2 inference protocol as Triton serves it: import from here.

The submodules hold the parts: ``documents`` (pydantic models of the JSON
documents), ``tensors`` (tensor data, JSON and binary), ``infer`` (the infer
route with the binary extension), ``generate`` (the generate extension) and
``client`` (the client's half, for tools that talk to a server). The gRPC
messages mirror the HTTP names, so they stay a namespace of their own:
``from app.protocol.kserve_v2 import grpc``.
"""

from __future__ import annotations

from app.protocol.kserve_v2.client import (
    decode_infer_response,
    encode_infer_request,
    generate_event_tokens,
    request_headers,
)
from app.protocol.kserve_v2.documents import (
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
from app.protocol.kserve_v2.generate import (
    DecodedGenerateRequest,
    InputSpec,
    decode_generate_request,
    encode_generate_response,
    sse_error_event,
    sse_event,
)
from app.protocol.kserve_v2.infer import (
    HEADER_LENGTH_HEADER,
    DecodedInferRequest,
    OutputTensor,
    RequestedOutput,
    classify,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    split_scheduling,
)
from app.protocol.kserve_v2.tensors import DecodedInput

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
    "decode_infer_response",
    "encode_generate_response",
    "encode_infer_request",
    "encode_infer_response",
    "format_validation_error",
    "generate_event_tokens",
    "load_json",
    "parse_body",
    "parse_header_length",
    "request_headers",
    "split_scheduling",
    "sse_error_event",
    "sse_event",
]
