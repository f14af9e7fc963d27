"""Coalescing across the router→replica hop: infer calls for one deployment that are
waiting at the router in the same turn of its event loop travel to a replica in one
Serve call (``ReplicaAPI.infer_batch``) and come back as each one completes.

Serve's per-call work (the handle call, its routing, the replica's request handling)
is most of the router's and the replica's CPU per request; under concurrency several
requests are ready at once, and one call carries them all. The replica still submits
each to Triton on its own (Triton's dynamic batching works as before), and answers
each as it completes, so a slow request never holds up the others.

What stays per request: the router's admission (its gate, limits, keys), its deadline
(also sent along: the replica ends that one request at it, cancelling it in Triton),
and the client's disconnect (a call whose every request was abandoned is cancelled in
the replica; one abandoned request of a call still waited on runs to its end or its
deadline). Only deployments with a fixed replica count and no pool take part: Serve's
autoscaling counts ongoing calls, and a pool call names its model to Serve's router.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from app.contract import CallBatch, GrpcInferCall, InferCall
from app.errors import Internal, ServingError
from app.observability import render_registry

__all__ = ["MAX_BATCH_CALLS", "CoalesceMetrics", "Coalescer", "cancel_quietly"]

#: The most requests one call carries; more waiting go in the next call, at once.
MAX_BATCH_CALLS = 64

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class CoalesceMetrics:
    """Requests per replica call, per deployment: how much coalescing happens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._sizes = Histogram(
            "triton_serve_coalesced_requests",
            "Requests carried by one router-to-replica call (coalescing across the hop).",
            ("deployment",),
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[str, Any] = {}

    def call_sent(self, deployment: str, requests: int) -> None:
        child = self._children.get(deployment)
        if child is None:
            child = self._children[deployment] = self._sizes.labels(deployment)
        child.observe(requests)

    def render(self) -> str:
        return render_registry(self.registry)


class _Waiting:
    __slots__ = ("call", "deadline", "future", "sent")

    def __init__(self, call: InferCall | GrpcInferCall, deadline: float, future: Any) -> None:
        self.call = call
        self.deadline = deadline  # loop time
        self.future: asyncio.Future[Any] = future
        self.sent: _Sent | None = None


class _Sent:
    """One replica call in flight and the requests it carries."""

    __slots__ = ("response", "waiting")

    def __init__(self, waiting: list[_Waiting]) -> None:
        self.waiting = waiting
        self.response: Any = None

    def abandoned(self) -> bool:
        return all(w.future.done() for w in self.waiting)


class Coalescer:
    """One per deployment in each router. ``send(batch)`` makes the coalesced Serve call
    and returns its response generator (items: lists of ``(index, result or error)``);
    ``send_one(call)`` the plain call a request alone takes (a streamed call costs more
    than a unary one for a single answer)."""

    def __init__(
        self,
        deployment: str,
        send: Callable[[CallBatch], Any],
        send_one: Callable[[InferCall | GrpcInferCall], Any],
        metrics: CoalesceMetrics | None = None,
        max_calls: int = MAX_BATCH_CALLS,
    ) -> None:
        self.deployment = deployment
        self._send = send
        self._send_one = send_one
        self._metrics = metrics
        self._max_calls = max_calls
        self._waiting: list[_Waiting] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, call: InferCall | GrpcInferCall, deadline: float) -> Any:
        """The replica's answer to ``call``, or its error raised (a ``ServingError``,
        or what the Serve call raised, for the caller's ``call_error``). ``deadline``
        is the loop time the caller stops waiting at; it cancels this coroutine."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(call, deadline, loop.create_future())
        self._waiting.append(waiting)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        try:
            return await waiting.future
        except asyncio.CancelledError:
            waiting.future.cancel()
            sent = waiting.sent
            if sent is None:  # not flushed yet
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiting)
            elif sent.abandoned():
                cancel_quietly(sent.response)
            raise

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._waiting:
            batch = [w for w in self._waiting[: self._max_calls] if not w.future.done()]
            del self._waiting[: self._max_calls]
            if batch:
                sent = _Sent(batch)
                for w in batch:
                    w.sent = sent
                task = asyncio.get_running_loop().create_task(self._run(sent))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, sent: _Sent) -> None:
        if sent.abandoned():  # every caller left before the call went out
            return
        if self._metrics is not None:
            self._metrics.call_sent(self.deployment, len(sent.waiting))
        try:
            if len(sent.waiting) == 1:
                (alone,) = sent.waiting
                sent.response = self._send_one(alone.call)
                answer = await sent.response
                if not alone.future.done():
                    alone.future.set_result(answer)
                return
            now = asyncio.get_running_loop().time()
            batch = CallBatch(
                calls=tuple(w.call for w in sent.waiting),
                timeouts_s=tuple(max(0.0, w.deadline - now) for w in sent.waiting),
            )
            sent.response = self._send(batch)
            async for answers in sent.response:
                for index, answer in answers:
                    future = sent.waiting[index].future
                    if future.done():
                        continue
                    if isinstance(answer, ServingError):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        except asyncio.CancelledError:
            _fail(sent, Internal("the router stopped"))
            raise
        except Exception as exc:  # the call itself failed: each request gets its error
            _fail(sent, exc)
            return
        _fail(sent, Internal("the replica ended a coalesced call without every answer"))


def _fail(sent: _Sent, exc: BaseException) -> None:
    for w in sent.waiting:
        if not w.future.done():
            w.future.set_exception(exc)


def cancel_quietly(response: Any) -> None:
    """Cancel a handle call (None: not made yet). Serve's ``cancel()`` re-raises the
    call's own error (a request shed for backpressure raises ``BackPressureError``
    again), which would escape to Serve's plain-text 503 handler instead of ours."""
    if response is not None:
        with contextlib.suppress(Exception):
            response.cancel()
