"""The replica's side of a coalesced call (``ReplicaAPI.infer_batch``): every call of
the batch runs as its own task (Triton sees separate requests, and batches them
itself), each ends at its own deadline, and answers go back as they complete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.contract import CallBatch, GrpcInferCall, InferCall
from app.errors import Internal, RequestTimeout, ServingError

__all__ = ["run_batch"]

log = logging.getLogger(__name__)


async def run_batch(
    batch: CallBatch,
    run_one: Callable[[InferCall | GrpcInferCall], Awaitable[Any]],
) -> AsyncIterator[list[tuple[int, Any]]]:
    """Answers of ``batch`` by index, a list per wake-up. Closing the generator (the
    router cancelled the call) cancels every call still running, in Triton too."""
    tasks: dict[asyncio.Task[Any], int] = {
        asyncio.ensure_future(_one(call, timeout_s, run_one)): index
        for index, (call, timeout_s) in enumerate(zip(batch.calls, batch.timeouts_s, strict=True))
    }
    pending: set[asyncio.Task[Any]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            yield [(tasks[task], _answer(task, batch.calls[tasks[task]].model)) for task in done]
    finally:
        for task in pending:
            task.cancel()


async def _one(
    call: InferCall | GrpcInferCall,
    timeout_s: float,
    run_one: Callable[[InferCall | GrpcInferCall], Awaitable[Any]],
) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            return await run_one(call)
    except TimeoutError:
        raise RequestTimeout(f"model '{call.model}' did not answer in time") from None


def _answer(task: asyncio.Task[Any], model: str) -> Any:
    exc = task.exception()
    if exc is None:
        return task.result()
    if isinstance(exc, ServingError):
        return exc
    log.error("unexpected error calling model %s", model, exc_info=exc)
    return Internal(f"internal error calling model '{model}': {type(exc).__name__}")
