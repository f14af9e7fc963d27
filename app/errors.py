"""The errors every HTTP-facing layer raises, each carrying its HTTP status.

One tree for the router and the model deployments, so an error raised deep in a
replica reaches the client with the right status after crossing a Ray boundary
(hence plain attributes and ``__reduce__``). ``from_triton`` is the single place
where engine error codes become HTTP statuses.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from app.triton.errors import (
    AlreadyExistsError,
    CancelledError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TritonError,
    TritonNotFoundError,
    UnavailableError,
    UnknownError,
    UnsupportedError,
)

__all__ = [
    "BadRequest",
    "ClientClosedRequest",
    "Conflict",
    "Forbidden",
    "Internal",
    "NotFound",
    "NotImplementedFeature",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServingError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "from_triton",
    "is_stub_death",
    "kserve_body",
    "openai_body",
    "to_serving_error",
]


def _restore(
    cls: type[ServingError],
    message: str,
    retry_after: float | None,
    param: str | None,
    code: str | None,
) -> ServingError:
    return cls(message, retry_after=retry_after, param=param, code=code)


class ServingError(Exception):
    """Base of every error that becomes an HTTP error response.

    ``status_code`` and ``openai_type`` belong to the class; ``message``,
    ``retry_after`` (seconds, sent as ``Retry-After``), ``param`` (the request
    field at fault) and ``code`` (a machine-readable reason) to the instance.
    """

    status_code: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init_subclass__(
        cls,
        *,
        status_code: int | None = None,
        openai_type: str | None = None,
        default_code: str | None = None,
    ) -> None:
        """Each error class is one line: its status, OpenAI type and default code;
        a subclass that names none keeps its parent's."""
        super().__init_subclass__()
        if status_code is not None:
            cls.status_code = status_code
        if openai_type is not None:
            cls.openai_type = openai_type
        if default_code is not None:
            cls.default_code = default_code

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.param = param
        self.code = code if code is not None else self.default_code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.message, self.retry_after, self.param, self.code))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def headers(self) -> dict[str, str]:
        """Response headers the error calls for (``Retry-After`` in whole seconds)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after))}


class BadRequest(ServingError, status_code=400, openai_type="invalid_request_error"): ...


class Unauthorized(
    ServingError,
    status_code=401,
    openai_type="authentication_error",
    default_code="invalid_api_key",
): ...


class Forbidden(ServingError, status_code=403, openai_type="permission_error"): ...


class NotFound(ServingError, status_code=404, openai_type="not_found_error"): ...


class RequestTimeout(ServingError, status_code=408, openai_type="timeout_error"): ...


class Conflict(
    ServingError, status_code=409, openai_type="invalid_request_error", default_code="conflict"
): ...


class PayloadTooLarge(
    ServingError,
    status_code=413,
    openai_type="invalid_request_error",
    default_code="request_too_large",
): ...


class TooManyRequests(
    ServingError,
    status_code=429,
    openai_type="rate_limit_error",
    default_code="rate_limit_exceeded",
): ...


class ClientClosedRequest(
    ServingError, status_code=499, openai_type="cancelled_error", default_code="cancelled"
):
    """The request was cancelled, nearly always because its client went away.

    499 is nginx's "client closed request": not a standard status, but one that
    keeps cancellations apart from real client errors (400) and server faults.
    """


class Internal(ServingError, status_code=500, openai_type="server_error"): ...


class NotImplementedFeature(
    ServingError, status_code=501, openai_type="invalid_request_error", default_code="unsupported"
): ...


class Unavailable(
    ServingError, status_code=503, openai_type="server_error", default_code="service_unavailable"
): ...


# Engine error -> HTTP error. Triton's own HTTP server sends 400 for ALREADY_EXISTS,
# CANCELLED and UNKNOWN; we send 409, 499 and 500, which say what happened.
# TritonNotFoundError means libtritonserver is missing: a deployment fault, not a 404.
_FROM_TRITON: dict[type[TritonError], type[ServingError]] = {
    TritonNotFoundError: Internal,
    NotFoundError: NotFound,
    InvalidArgumentError: BadRequest,
    UnavailableError: Unavailable,
    UnsupportedError: NotImplementedFeature,
    AlreadyExistsError: Conflict,
    CancelledError: ClientClosedRequest,
    InternalError: Internal,
    UnknownError: Internal,
    TritonError: Internal,
}


# The python backend reports a dead stub process as INTERNAL; it is the model's
# process that failed, not the request, and the replica recovers or is replaced
# (``ModelReplica``), so the client should retry: 503.
_STUB_DIED = re.compile(r"Stub process '[^']*' is not healthy")


def is_stub_death(message: str) -> bool:
    """Triton's words for a request whose python-backend stub process died."""
    return _STUB_DIED.search(message) is not None


def from_triton(exc: TritonError, *, retry_after: float | None = None) -> ServingError:
    """The HTTP error for an engine error; ``retry_after`` applies only to 503."""
    target: type[ServingError] = Internal
    for cls in type(exc).__mro__:
        if cls in _FROM_TRITON:
            target = _FROM_TRITON[cls]
            break
    if is_stub_death(exc.message):
        target = Unavailable
    return target(exc.message, retry_after=retry_after if target is Unavailable else None)


def to_serving_error(exc: BaseException) -> ServingError:
    """Any exception as a ``ServingError``; unknown ones become 500 naming their type."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, TritonError):
        return from_triton(exc)
    return Internal(f"internal error: {type(exc).__name__}: {exc}")


def kserve_body(err: ServingError) -> dict[str, str]:
    """KServe v2 / Triton error body: ``{"error": message}``."""
    return {"error": err.message}


def openai_body(err: ServingError) -> dict[str, dict[str, str | None]]:
    """OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": err.message,
            "type": err.openai_type,
            "param": err.param,
            "code": err.code,
        }
    }
