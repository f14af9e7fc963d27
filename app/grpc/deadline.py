"""The client's gRPC deadline, carried to the router as call metadata.

A gRPC deadline travels as the ``grpc-timeout`` header, which the gRPC runtime
consumes: the server learns it only from ``context.time_remaining()``, and it is
not among ``invocation_metadata()``. Serve's gRPC front (the proxy actor, or the
ingress replica itself with direct ingress) copies only the metadata into the
context it hands the router, so the deadline would be lost there. Serve builds
each RPC's handler with its server's ``service_handler_factory``; wrapping that
factory (``carry_deadlines``) gives every handler a context whose metadata also
holds the seconds left (``DEADLINE_METADATA``), read where the call arrives.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["DEADLINE_METADATA", "carry_deadlines"]

log = logging.getLogger(__name__)

# Seconds left until the client's deadline when the call reached Serve's gRPC server.
DEADLINE_METADATA = "x-triton-serve-deadline-s"
# A deadline already past still becomes a (tiny) positive timeout.
_MIN_REMAINING_S = 0.001
_WRAPPED = "_triton_serve_carries_deadlines"


class _DeadlineContext:
    """A servicer context whose metadata ends with the time left to the deadline;
    everything else is the wrapped context's."""

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def invocation_metadata(self) -> tuple[Any, ...]:
        metadata = tuple(self._context.invocation_metadata() or ())
        remaining = self._context.time_remaining()
        if remaining is None:
            return metadata
        seconds = max(float(remaining), _MIN_REMAINING_S)
        return (*metadata, (DEADLINE_METADATA, f"{seconds:.6f}"))


def _with_deadline(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` called with the deadline-carrying context; same shape (coroutine
    or async generator), as the gRPC server calls each differently."""
    if inspect.isasyncgenfunction(handler):

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            async for message in handler(request, _DeadlineContext(context)):
                yield message

        return streaming

    async def unary(request: Any, context: Any) -> Any:
        return await handler(request, _DeadlineContext(context))

    return unary


def carry_deadlines(server: Any) -> bool:
    """Make the handlers ``server`` builds from now on carry the client's deadline.
    False (and nothing changed) for a server without Serve's handler factory."""
    factory = getattr(server, "service_handler_factory", None)
    if not callable(factory):
        log.warning("gRPC deadlines not carried: %s builds no handlers", type(server).__name__)
        return False
    if getattr(factory, _WRAPPED, False):
        return True

    def factory_with_deadlines(service_method: str, streaming_type: Any) -> Callable[..., Any]:
        return _with_deadline(factory(service_method=service_method, streaming_type=streaming_type))

    setattr(factory_with_deadlines, _WRAPPED, True)
    server.service_handler_factory = factory_with_deadlines
    return True
