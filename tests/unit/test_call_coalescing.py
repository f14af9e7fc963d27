"""Coalescing across the router→replica hop: the router's ``Coalescer`` against the
replica's ``run_batch`` in one event loop (the Serve call in between is a plain
async generator here; tests/integration/test_coalescing.py runs it through Serve)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.contract import CallBatch, InferCall, InferResult
from app.errors import BadRequest, RequestTimeout
from app.replica.batch import run_batch
from app.router.coalesce import CoalesceMetrics, Coalescer


def _call(name: str) -> InferCall:
    return InferCall(model="m", version=None, body=name.encode())


class _Replica:
    """Answers each call after the delay its body names (``slow`` 0.3 s, ``bad``
    fails, ``stuck`` never ends) and records what it saw."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.cancelled_in_replica: list[bytes] = []

    async def run_one(self, call: Any) -> InferResult:
        try:
            if call.body == b"bad":
                raise BadRequest("bad input")
            await asyncio.sleep({b"slow": 0.3, b"stuck": 3600.0}.get(call.body, 0.0))
            return InferResult(body=b"answer:" + call.body)
        except asyncio.CancelledError:
            self.cancelled_in_replica.append(call.body)
            raise

    def send(self, batch: CallBatch) -> _Response:
        self.batches.append([c.body for c in batch.calls])  # type: ignore[union-attr]
        return _Response(run_batch(batch, self.run_one))

    def send_one(self, call: Any) -> asyncio.Task[InferResult]:
        """A unary Serve call: awaited, or cancelled (in the replica too)."""
        self.batches.append([call.body])
        return asyncio.ensure_future(self.run_one(call))

    def coalescer(self, **options: Any) -> Coalescer:
        return Coalescer("dep", self.send, self.send_one, **options)


class _Response:
    """What Serve's streaming handle call gives the router: iterate, or cancel (which
    closes the replica's generator, as Serve cancels the replica's task)."""

    def __init__(self, answers: AsyncIterator[list[tuple[int, Any]]]) -> None:
        self._answers = answers
        self._next: asyncio.Future[list[tuple[int, Any]]] | None = None
        self.cancelled = False

    def __aiter__(self) -> _Response:
        return self

    async def __anext__(self) -> list[tuple[int, Any]]:
        if self.cancelled:
            raise RuntimeError("the call was cancelled")
        self._next = asyncio.ensure_future(self._answers.__anext__())
        try:
            return await self._next
        except asyncio.CancelledError:
            if self.cancelled:
                raise RuntimeError("the call was cancelled") from None
            raise

    def cancel(self) -> None:
        self.cancelled = True
        if self._next is not None:
            self._next.cancel()


def _deadline(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_calls_waiting_together_go_in_one_call_and_each_gets_its_answer() -> None:
    replica = _Replica()
    metrics = CoalesceMetrics()
    coalescer = replica.coalescer(metrics=metrics)
    names = [f"r{i}" for i in range(5)]
    answers = await asyncio.gather(*(coalescer.call(_call(n), _deadline()) for n in names))
    assert [a.body for a in answers] == [b"answer:" + n.encode() for n in names]
    assert replica.batches == [[n.encode() for n in names]]
    text = metrics.render()
    assert 'triton_serve_coalesced_requests_count{deployment="dep"} 1.0' in text
    assert 'triton_serve_coalesced_requests_sum{deployment="dep"} 5.0' in text


async def test_a_call_alone_goes_alone_and_later_calls_in_a_new_call() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    assert (await coalescer.call(_call("a"), _deadline())).body == b"answer:a"
    assert (await coalescer.call(_call("b"), _deadline())).body == b"answer:b"
    assert replica.batches == [[b"a"], [b"b"]]


async def test_a_call_alone_that_its_caller_leaves_is_cancelled_in_the_replica() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    leaving = asyncio.ensure_future(coalescer.call(_call("stuck"), _deadline()))
    await asyncio.sleep(0.05)
    leaving.cancel()
    await asyncio.sleep(0.05)
    assert replica.batches == [[b"stuck"]]
    assert replica.cancelled_in_replica == [b"stuck"]


async def test_a_slow_call_does_not_hold_up_the_others_of_its_call() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    finished: list[str] = []

    async def call(name: str) -> None:
        await coalescer.call(_call(name), _deadline())
        finished.append(name)

    await asyncio.gather(call("slow"), call("fast"))
    assert replica.batches == [[b"slow", b"fast"]]
    assert finished == ["fast", "slow"]


async def test_one_failing_call_fails_alone() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    results = await asyncio.gather(
        coalescer.call(_call("bad"), _deadline()),
        coalescer.call(_call("good"), _deadline()),
        return_exceptions=True,
    )
    assert isinstance(results[0], BadRequest) and results[0].message == "bad input"
    assert isinstance(results[1], InferResult) and results[1].body == b"answer:good"


async def test_each_call_ends_at_its_own_deadline_in_the_replica() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    results = await asyncio.gather(
        coalescer.call(_call("stuck"), _deadline(0.2)),
        coalescer.call(_call("quick"), _deadline(5)),
        return_exceptions=True,
    )
    assert isinstance(results[0], RequestTimeout)
    assert isinstance(results[1], InferResult)
    assert replica.cancelled_in_replica == [b"stuck"]


async def test_a_caller_that_leaves_while_others_wait_does_not_cancel_their_call() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    leaving = asyncio.ensure_future(coalescer.call(_call("stuck"), _deadline()))
    staying = asyncio.ensure_future(coalescer.call(_call("slow"), _deadline()))
    await asyncio.sleep(0.05)
    leaving.cancel()
    assert (await staying).body == b"answer:slow"
    assert leaving.cancelled()


async def test_a_call_every_caller_left_is_cancelled_in_the_replica() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    callers = [asyncio.ensure_future(coalescer.call(_call("stuck"), _deadline())) for _ in range(3)]
    await asyncio.sleep(0.05)
    for caller in callers:
        caller.cancel()
    await asyncio.sleep(0.05)
    assert replica.cancelled_in_replica == [b"stuck"] * 3


async def test_a_caller_that_leaves_before_the_call_goes_out_is_not_sent() -> None:
    replica = _Replica()
    coalescer = replica.coalescer()
    leaving = asyncio.ensure_future(coalescer.call(_call("gone"), _deadline()))
    staying = asyncio.ensure_future(coalescer.call(_call("here"), _deadline()))
    await asyncio.sleep(0)  # both queued, the flush not run yet
    leaving.cancel()
    assert (await staying).body == b"answer:here"
    assert replica.batches == [[b"here"]]


async def test_a_failed_replica_call_fails_every_caller_with_its_error() -> None:
    def send(batch: CallBatch) -> Any:
        raise ConnectionError("replica gone")

    coalescer = Coalescer("dep", send, _Replica().send_one)
    results = await asyncio.gather(
        *(coalescer.call(_call(n), _deadline()) for n in "ab"), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_call_carries_at_most_max_calls() -> None:
    replica = _Replica()
    coalescer = replica.coalescer(max_calls=2)
    await asyncio.gather(*(coalescer.call(_call(n), _deadline()) for n in "abcde"))
    assert replica.batches == [[b"a", b"b"], [b"c", b"d"], [b"e"]]


@pytest.mark.parametrize("close_early", [True, False])
async def test_closing_the_replica_side_cancels_what_still_runs(close_early: bool) -> None:
    replica = _Replica()
    batch = CallBatch(calls=(_call("quick"), _call("stuck")), timeouts_s=(5.0, 5.0))
    answers = run_batch(batch, replica.run_one)
    first = await answers.__anext__()
    assert [(i, a.body) for i, a in first] == [(0, b"answer:quick")]
    if close_early:
        await answers.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert replica.cancelled_in_replica == [b"stuck"]
    else:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(answers.__anext__(), 0.05)
        await asyncio.sleep(0.01)
        assert replica.cancelled_in_replica == [b"stuck"]
