"""One table from HTTP status (``ServingError.status_code``) to gRPC status code, so
both protocols answer an error alike."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]

from app.errors import ServingError

__all__ = ["grpc_code"]

# 413 is RESOURCE_EXHAUSTED, what gRPC itself answers for a message over its size
# limit; 409 (a model already loading) is ALREADY_EXISTS, Triton's own code for it.
_BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(err: ServingError) -> grpc.StatusCode:
    """The gRPC status of ``err``; statuses outside the table are INTERNAL."""
    return _BY_HTTP_STATUS.get(err.status_code, grpc.StatusCode.INTERNAL)
