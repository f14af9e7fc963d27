"""Admission in the router: per key (a token bucket for the rate, a concurrency
counter) and per model deployment (``DeploymentGate``, a bounded line).

All live in one router replica and are only touched from its event loop, so they
need no locks. ``share`` divides a key's limits among router replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass, field

from app.errors import TooManyRequests, Unavailable
from app.security.config import KeyLimits

__all__ = ["DeploymentGate", "KeyLimiter", "Slot", "TokenBucket"]


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; one token per request."""

    rate: float
    capacity: float
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def take(self, now: float | None = None) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class Slot:
    """A request's hold on its key's concurrency; ``release`` is idempotent."""

    limiter: KeyLimiter | None
    released: bool = False

    def release(self) -> None:
        if not self.released and self.limiter is not None:
            self.limiter.in_flight -= 1
        self.released = True


class KeyLimiter:
    """One key's limits in this router replica."""

    def __init__(self, name: str, limits: KeyLimits, share: int = 1) -> None:
        self.name = name
        self.limits = limits
        self.bucket: TokenBucket | None = None
        if limits.requests_per_s is not None:
            rate = limits.requests_per_s / share
            burst = limits.burst if limits.burst is not None else math.ceil(limits.requests_per_s)
            self.bucket = TokenBucket(rate=rate, capacity=max(1.0, burst / share))
        self.max_concurrent = (
            None if limits.max_concurrent is None else max(1, limits.max_concurrent // share)
        )
        self.in_flight = 0

    def admit(self) -> Slot:
        """A slot for one request, or ``TooManyRequests`` with ``Retry-After``."""
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            raise TooManyRequests(
                f"API key '{self.name}' has {self.in_flight} requests in flight, its limit",
                retry_after=1,
            )
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                raise TooManyRequests(
                    f"API key '{self.name}' is over its rate limit of "
                    f"{self.limits.requests_per_s:g} requests/s",
                    retry_after=wait,
                )
        if self.max_concurrent is None:
            return Slot(None)
        self.in_flight += 1
        return Slot(self)


class DeploymentGate:
    """Admission of calls to one model deployment, in this router replica.

    ``running`` calls may be with Serve at once (the replicas' ``max_ongoing_requests``
    share of this router); up to ``queued`` more wait here, first come first served,
    and the rest get 503 with ``Retry-After`` at once. Waiting here rather than in
    Serve's handle matters under overload: a handle whose replicas are all busy
    retries with growing backoff, so a replica can sit idle while requests queue,
    whereas a call released here is sent the moment a place frees up.

    ``running=None`` (autoscaling deployments) holds nothing back: Serve's autoscaler
    must see the queue to scale up, so only the total is bounded (``queued``).
    """

    def __init__(self, running: int | None, queued: int) -> None:
        self.running_limit = running
        self.queued_limit = queued
        self.running = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        return self.running + len(self.waiters)

    async def enter(self, model: str) -> None:
        """Take a place (after waiting in line), or raise ``Unavailable``."""
        if self.running_limit is None:
            if self.running >= self.queued_limit:
                raise self._full(model)
            self.running += 1
            return
        if self.running < self.running_limit and not self.waiters:
            self.running += 1
            return
        if len(self.waiters) >= self.queued_limit:
            raise self._full(model)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # ``leave`` hands its place over: ``running`` stays as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a place while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def leave(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    def _full(self, model: str) -> Unavailable:
        return Unavailable(
            f"model '{model}' is overloaded: its queue is full "
            f"({self.in_flight} requests in flight)",
            retry_after=1,
        )
