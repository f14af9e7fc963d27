"""Streaming out of a replica: fewer, larger chunks when the engine outpaces the path.

Every chunk a replica yields costs a Serve streaming hop to the router and another
through the proxy, about a millisecond of CPU each; an LLM at high concurrency makes
thousands of tokens per second. ``coalesce`` joins the events that are already
waiting (SSE events concatenate into a valid stream) so a busy path sends one chunk
per turn instead of one per token, while an idle one still sends each event at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

__all__ = ["coalesce"]

_DONE = object()


async def coalesce(
    events: AsyncGenerator[bytes, None], max_pending: int = 256, max_bytes: int = 1 << 20
) -> AsyncGenerator[bytes, None]:
    """Yield ``events``' first item alone (the "accepted" marker), then the rest with
    everything already queued joined into one chunk (at most ``max_bytes`` of it).

    Errors of ``events`` are raised to the consumer where they occurred; closing the
    result closes ``events`` (which cancels the engine request). The queue is bounded:
    a slow client slows the engine's producer rather than growing memory.
    """
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        return
    yield first
    queue: asyncio.Queue[object] = asyncio.Queue(max_pending)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, raised in order
            await queue.put(exc)
            return
        await queue.put(_DONE)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            chunk: list[bytes] = []
            size = 0
            while True:
                if item is _DONE or isinstance(item, Exception):
                    if chunk:
                        yield b"".join(chunk)
                    if isinstance(item, Exception):
                        raise item
                    return
                assert isinstance(item, bytes)
                chunk.append(item)
                size += len(item)
                if size >= max_bytes or queue.empty():
                    break
                item = queue.get_nowait()
            yield b"".join(chunk)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await events.aclose()
