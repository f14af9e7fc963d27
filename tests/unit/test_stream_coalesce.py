"""``coalesce``: the first event alone, waiting events joined, errors and closing kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from app.replica.streaming import coalesce


async def _burst(
    events: list[bytes], closed: list[bool], fail_at: int | None = None
) -> AsyncGenerator[bytes, None]:
    try:
        for i, event in enumerate(events):
            if i == fail_at:
                raise ValueError("engine failed")
            yield event
    finally:
        closed.append(True)


async def _collect(gen: AsyncGenerator[bytes, None]) -> list[bytes]:
    return [chunk async for chunk in coalesce(gen)]


async def test_first_event_alone_then_waiting_events_joined() -> None:
    closed: list[bool] = []
    chunks = await _collect(_burst([b""] + [b"e%d;" % i for i in range(50)], closed))
    # The source never waits, so the whole burst is queued before the consumer wakes.
    assert chunks == [b"", b"".join(b"e%d;" % i for i in range(50))]
    assert closed == [True]


async def test_a_burst_is_capped_at_max_bytes() -> None:
    events = [b""] + [b"x" * 10] * 10
    chunks = [chunk async for chunk in coalesce(_burst(events, []), max_bytes=30)]
    assert chunks == [b"", b"x" * 30, b"x" * 30, b"x" * 30, b"x" * 10]


async def test_an_event_arriving_alone_is_delivered_alone() -> None:
    """Each event is released only after the previous chunk reached the consumer, so
    a coalescer that held events back to join them would never deliver (and time out)."""
    delivered = asyncio.Event()

    async def paced() -> AsyncGenerator[bytes, None]:
        yield b""
        for i in range(3):
            await delivered.wait()
            delivered.clear()
            yield b"%d" % i

    chunks: list[bytes] = []
    stream = coalesce(paced())
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=30)
        except StopAsyncIteration:
            break
        chunks.append(chunk)
        delivered.set()
    assert chunks == [b"", b"0", b"1", b"2"]


async def test_errors_arrive_after_the_events_before_them() -> None:
    closed: list[bool] = []
    seen: list[bytes] = []
    with pytest.raises(ValueError, match="engine failed"):
        async for chunk in coalesce(_burst([b"", b"a", b"b", b"c"], closed, fail_at=3)):
            seen.append(chunk)
    assert b"".join(seen) == b"ab"


async def test_error_before_the_first_event_raises_at_once() -> None:
    with pytest.raises(ValueError):
        await _collect(_burst([b"x"], [], fail_at=0))


async def test_closing_the_consumer_closes_the_source() -> None:
    closed: list[bool] = []

    async def endless() -> AsyncGenerator[bytes, None]:
        try:
            yield b""
            while True:
                await asyncio.sleep(0)
                yield b"tick"
        finally:
            closed.append(True)

    stream = coalesce(endless())
    assert await stream.__anext__() == b""
    assert b"tick" in await stream.__anext__()
    await stream.aclose()
    assert closed == [True]
