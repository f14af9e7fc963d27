"""The client's gRPC deadline reaches the handler as metadata (``carry_deadlines``),
over a real gRPC server and channel, and becomes the call's timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from app.errors import BadRequest
from app.grpc.deadline import DEADLINE_METADATA, carry_deadlines, seconds_left
from app.grpc.edge import DEADLINE_LEAD_S, call_timeout


class Handlers:
    """Stands in for Serve's gRPC server: it builds one handler per RPC with its
    ``service_handler_factory``; each handler records the metadata it sees, as
    Serve copies it into the context it hands the router."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, str]]] = []

    def service_handler_factory(
        self, service_method: str, streaming_type: str
    ) -> Callable[..., Any]:
        if streaming_type == "unary":

            async def unary(request: bytes, context: Any) -> bytes:
                self.seen.append([(k, v) for k, v in context.invocation_metadata()])
                context.set_code(grpc.StatusCode.OK)
                return b"ok"

            return unary

        async def streaming(request: bytes, context: Any) -> AsyncIterator[bytes]:
            self.seen.append([(k, v) for k, v in context.invocation_metadata()])
            yield b"one"
            yield b"two"

        return streaming


async def _serve(handlers: Handlers) -> tuple[aio.Server, str]:
    assert carry_deadlines(handlers)
    assert carry_deadlines(handlers)  # idempotent: one entry, not two
    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            handlers.service_handler_factory(service_method="/t.S/Unary", streaming_type="unary")
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            handlers.service_handler_factory(service_method="/t.S/Stream", streaming_type="stream")
        ),
    }
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


class Context:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata


async def test_the_deadline_reaches_the_handler_as_metadata() -> None:
    handlers = Handlers()
    server, address = await _serve(handlers)
    started = time.time()
    try:
        async with aio.insecure_channel(address) as channel:
            unary = channel.unary_unary("/t.S/Unary")
            assert await unary(b"", timeout=7.0, metadata=(("x-request-timeout", "30"),)) == b"ok"
            assert await unary(b"") == b"ok"  # no deadline: nothing added
            stream = channel.unary_stream("/t.S/Stream")
            assert [m async for m in stream(b"", timeout=3.0)] == [b"one", b"two"]
    finally:
        await server.stop(None)
    with_deadline, without, streamed = (dict(seen) for seen in handlers.seen)
    # The deadline as Unix time, give or take the transport's rounding of it.
    assert 6.0 < float(with_deadline[DEADLINE_METADATA]) - started < 8.0
    assert with_deadline["x-request-timeout"] == "30"
    assert DEADLINE_METADATA not in without
    assert 2.0 < float(streamed[DEADLINE_METADATA]) - started < 4.0
    assert [k for k, _ in handlers.seen[0]].count(DEADLINE_METADATA) == 1


def test_the_call_timeout_is_the_shorter_of_deadline_and_header() -> None:
    in_10_s = f"{time.time() + 10:.6f}"
    assert call_timeout(None) is None
    assert call_timeout(Context([("user-agent", "x")])) is None
    alone = call_timeout(Context([(DEADLINE_METADATA, in_10_s)]))
    assert alone is not None and 9.0 < alone < 10.0 - DEADLINE_LEAD_S + 0.01
    both = Context([("x-request-timeout", "1"), (DEADLINE_METADATA, in_10_s)])
    assert call_timeout(both) == 1.0
    past = call_timeout(Context([(DEADLINE_METADATA, f"{time.time() - 5:.6f}")]))
    assert past == 0.001  # times out at once
    with pytest.raises(BadRequest, match="X-Request-Timeout"):
        call_timeout(Context([("x-request-timeout", "0")]))
    with pytest.raises(BadRequest, match=DEADLINE_METADATA):
        call_timeout(Context([(DEADLINE_METADATA, "soon")]))


def test_a_short_deadline_keeps_most_of_its_time() -> None:
    left = seconds_left(f"{time.time() + 0.1:.6f}", lead_s=DEADLINE_LEAD_S)
    assert 0.05 < left <= 0.09  # a tenth early, not the whole lead


def test_a_server_without_serves_factory_is_left_alone() -> None:
    assert carry_deadlines(object()) is False
