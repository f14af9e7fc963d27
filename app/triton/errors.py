"""Exceptions raised by the engine, one class per ``TRITONSERVER_Error_Code``.

They carry only plain strings so they pickle across Ray actor boundaries.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CancelledError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "TritonError",
    "TritonNotFoundError",
    "UnavailableError",
    "UnknownError",
    "UnsupportedError",
    "error_from_code",
]


class TritonError(Exception):
    """Base of every error the engine raises; ``message`` is Triton's text."""

    code: int = 0
    code_name: str = "UNKNOWN"

    def __init_subclass__(cls, *, code: int | None = None, code_name: str | None = None) -> None:
        """Each error class is one line with its code; a subclass naming none keeps its parent's."""
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if code_name is not None:
            cls.code_name = code_name

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[TritonError], tuple[str]]:
        return (type(self), (self.message,))


class UnknownError(TritonError, code=0, code_name="UNKNOWN"): ...


class InternalError(TritonError, code=1, code_name="INTERNAL"): ...


class NotFoundError(TritonError, code=2, code_name="NOT_FOUND"): ...


class InvalidArgumentError(TritonError, code=3, code_name="INVALID_ARG"): ...


class UnavailableError(TritonError, code=4, code_name="UNAVAILABLE"): ...


class UnsupportedError(TritonError, code=5, code_name="UNSUPPORTED"): ...


class AlreadyExistsError(TritonError, code=6, code_name="ALREADY_EXISTS"): ...


class CancelledError(TritonError, code=7, code_name="CANCELLED"): ...


class TritonNotFoundError(TritonError, code=2, code_name="NOT_FOUND"):
    """No usable ``libtritonserver`` was found; the message lists where we looked."""


_BY_CODE: dict[int, type[TritonError]] = {
    cls.code: cls
    for cls in (
        UnknownError,
        InternalError,
        NotFoundError,
        InvalidArgumentError,
        UnavailableError,
        UnsupportedError,
        AlreadyExistsError,
        CancelledError,
    )
}


def error_from_code(code: int, message: str) -> TritonError:
    """Build the exception for a ``TRITONSERVER_Error_Code``."""
    return _BY_CODE.get(code, UnknownError)(message)
