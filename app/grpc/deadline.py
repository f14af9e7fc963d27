"""The client's gRPC deadline, carried to the router as call metadata.

A gRPC deadline travels as the ``grpc-timeout`` header, which the gRPC runtime
consumes: the server learns it only from ``context.time_remaining()``, and it is
not among ``invocation_metadata()``. Serve's gRPC front (the proxy actor, or the
ingress replica itself with direct ingress) copies only the metadata into the
context it hands the router, so the deadline would be lost there. Serve builds
each RPC's handler with its server's ``service_handler_factory``; wrapping that
factory (``carry_deadlines``) gives every handler a context whose metadata also
holds the deadline (``DEADLINE_METADATA``: Unix time, so the time the call spends
between Serve's server and the router counts; the nodes' clocks are assumed to
agree, as NTP keeps them).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["DEADLINE_METADATA", "carry_deadlines", "seconds_left"]

log = logging.getLogger(__name__)

# The client's deadline as Unix time (seconds), from Serve's gRPC server's clock.
DEADLINE_METADATA = "x-triton-serve-deadline"
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
        return (*metadata, (DEADLINE_METADATA, f"{time.time() + float(remaining):.6f}"))


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


def seconds_left(deadline: str, lead_s: float) -> float:
    """Seconds from now until a little before ``deadline`` (a ``DEADLINE_METADATA``
    value): ``lead_s`` before it, or a tenth of the time left when that is shorter; at
    least a millisecond (a past deadline times out at once). ``ValueError`` if it is
    not a finite number."""
    value = float(deadline)
    if not math.isfinite(value):
        raise ValueError(f"not a finite time: {deadline!r}")
    left = value - time.time()
    return max(left - min(lead_s, left / 10), 0.001)
