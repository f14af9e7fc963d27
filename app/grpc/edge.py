"""The edge of a gRPC call: API keys, limits and the client's timeout (its deadline or
``x-request-timeout``) from the call's metadata, with the same ``Guard`` as HTTP, and
errors as gRPC statuses."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.errors import BadRequest, Internal, ServingError
from app.grpc.deadline import DEADLINE_METADATA, seconds_left
from app.grpc.status import grpc_code
from app.observability import RouterMetrics
from app.router.traffic import TARGET_HEADER, TrafficRequest, traffic_request
from app.security.context import current_key, request_timeout_s
from app.security.guard import TIMEOUT_HEADER, Guard, parse_request_timeout
from app.security.keys import ApiKey
from app.security.limits import Slot

__all__ = [
    "admit",
    "call_timeout",
    "identify",
    "metadata_value",
    "run_unary",
    "set_error",
    "set_target",
    "traffic_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The router gives up this long before the client's deadline, so that its own
# DEADLINE_EXCEEDED, with the reason, reaches the client and it cancels the work
# itself, rather than racing the gRPC runtime's cancellation of the expired call.
DEADLINE_LEAD_S = 0.05


def metadata_value(grpc_context: Any, name: str) -> str | None:
    """A metadata entry of the call (gRPC lower-cases metadata keys)."""
    if grpc_context is None:
        return None
    for key, value in grpc_context.invocation_metadata():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def set_error(grpc_context: Any, err: ServingError) -> None:
    """Put ``err`` on the call: Serve's proxy copies code and details to the client."""
    if grpc_context is not None:
        grpc_context.set_code(grpc_code(err))
        grpc_context.set_details(err.message)


def traffic_of(grpc_context: Any) -> TrafficRequest:
    """The call's metadata for sticky routing, and where its targets are recorded."""
    return TrafficRequest(lambda name: metadata_value(grpc_context, name))


def set_target(grpc_context: Any, request: TrafficRequest) -> None:
    """``x-triton-serve-target`` trailing metadata: the targets that served the call."""
    value = request.header_value()
    if grpc_context is not None and value is not None:
        grpc_context.set_trailing_metadata([(TARGET_HEADER.lower(), value)])


def call_timeout(grpc_context: Any) -> float | None:
    """The client's time limit for the call, in seconds from now: the shorter of its
    gRPC deadline (``DEADLINE_LEAD_S`` early) and ``x-request-timeout``."""
    if grpc_context is None:
        return None
    limits: list[float] = []
    for key, value in grpc_context.invocation_metadata():
        if key == TIMEOUT_HEADER:
            seconds = parse_request_timeout(value if isinstance(value, str) else None)
            if seconds is not None:
                limits.append(seconds)
        elif key == DEADLINE_METADATA:
            try:
                limits.append(seconds_left(str(value), DEADLINE_LEAD_S))
            except ValueError:
                raise BadRequest(f"metadata {DEADLINE_METADATA} must be a Unix time") from None
    return min(limits) if limits else None


async def admit(
    guard: Guard | None, path: str, grpc_context: Any
) -> tuple[ApiKey | None, Slot, float | None]:
    """Authenticate and admit a call as HTTP does for ``path`` (``/v2/health/...`` is
    open; ``/v2/repository/...`` needs a repository key): its key, its concurrency
    slot and the client's time limit (``call_timeout``). Raises 400, 401, 403 or 429."""
    key, timeout = await identify(guard, path, grpc_context)
    slot = guard.limit(key) if guard is not None else Slot(None)
    return key, slot, timeout


async def identify(
    guard: Guard | None, path: str, grpc_context: Any
) -> tuple[ApiKey | None, float | None]:
    """``admit`` without counting a request: a stream's key is checked when it opens
    and each of its requests is counted on its own (``Guard.limit``)."""
    timeout = call_timeout(grpc_context)
    if guard is None:
        return None, timeout
    key = await guard.identify(path, metadata_value(grpc_context, "authorization"))
    return key, timeout


async def run_unary(
    guard: Guard | None,
    metrics: RouterMetrics | None,
    grpc_context: Any,
    call: tuple[str, str, str],
    work: Callable[[], Awaitable[T]],
    empty: T,
) -> T:
    """Run a unary RPC's ``work`` under its key, limits and timeout; ``call`` is the
    (guard path, model, RPC name). A ``ServingError`` (any other error as INTERNAL)
    becomes the call's gRPC status and ``empty`` is returned: raising instead would
    make Serve log every client mistake as a server failure."""
    path, model, route = call
    started = time.perf_counter()
    error: ServingError | None = None
    slot: Slot | None = None
    result = empty
    try:
        key, slot, timeout = await admit(guard, path, grpc_context)
        key_token = current_key.set(key)
        timeout_token = request_timeout_s.set(timeout)
        traffic = traffic_of(grpc_context)
        traffic_token = traffic_request.set(traffic)
        try:
            result = await work()
        finally:
            traffic_request.reset(traffic_token)
            request_timeout_s.reset(timeout_token)
            current_key.reset(key_token)
            set_target(grpc_context, traffic)
    except ServingError as err:
        error = err
    except Exception as exc:
        log.exception("gRPC %s failed", route, exc_info=exc)
        error = Internal(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if slot is not None:
            slot.release()
    if error is not None:
        set_error(grpc_context, error)
        result = empty
    if metrics is not None:
        status = error.status_code if error is not None else 200
        metrics.observe(model, f"grpc/{route}", status, time.perf_counter() - started)
    return result
