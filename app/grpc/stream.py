"""``ModelStreamInfer``: many requests on one bidirectional stream, their responses
interleaved as they come, as Triton's gRPC server does."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable

__all__ = ["StreamAbort", "multiplex"]

log = logging.getLogger(__name__)

_DONE = object()


class StreamAbort(Exception):
    """Raised by a request's responses to end the whole stream with ``error`` (the
    stream's status) once the responses before it are sent."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def multiplex(
    requests: AsyncIterator[object],
    responses_of: Callable[[object], AsyncIterator[bytes]],
    *,
    max_in_flight: int,
    buffer: int,
    context: contextvars.Context | None = None,
) -> AsyncIterator[bytes]:
    """Read ``requests`` while earlier ones still answer; yield every response of
    ``responses_of(request)`` as it arrives, in each request's own order.

    At most ``max_in_flight`` requests run at once and ``buffer`` responses wait to
    be sent: beyond either, reading pauses, so a slow client slows its own stream
    and nothing grows without bound. ``responses_of`` must report its errors as
    responses (Triton keeps a stream open after an error in one request). The
    stream ends when the client has sent its last request and every response is
    out; closing this generator (the client went away) cancels what still runs.
    A request that raises ``StreamAbort`` ends the stream: the responses queued
    before it are yielded, then its ``error`` is raised and the rest cancelled.
    ``context`` is the one the requests run in (the caller's API key).
    """
    # Unbounded queue, bounded by ``room``: the end marker must always fit.
    queue: asyncio.Queue[object] = asyncio.Queue()
    room = asyncio.Semaphore(buffer)
    slots = asyncio.Semaphore(max_in_flight)
    running: set[asyncio.Task[None]] = set()

    async def answer(request: object) -> None:
        try:
            async for response in responses_of(request):
                await room.acquire()
                queue.put_nowait(response)
        except StreamAbort as abort:
            queue.put_nowait(abort)
        except Exception:
            log.exception("a ModelStreamInfer request failed outside its own error handling")
        finally:
            slots.release()

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.wait(set(running))
        finally:
            queue.put_nowait(_DONE)

    reader = asyncio.create_task(read(), context=context)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, StreamAbort):
                raise item.error
            room.release()
            assert isinstance(item, bytes)
            yield item
        await reader  # re-raises a failure to read the client's requests
    finally:
        for task in (reader, *running):
            task.cancel()
