"""A cell's measurement: warm-up, then a window in which completed requests count,
and the latency figures of what completed inside it."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

WARMUP_ROUNDS = 2  # warm-up lasts at least until this many requests per worker completed...
WARMUP_LIMIT_S = 120.0  # ...and gives up after this long
WINDOW_LATENCIES = 20  # a stretched window lasts at least this many warm-up latencies...
MAX_WINDOW_FACTOR = 10.0  # ...but no longer than this many times its duration
MAX_WINDOW_S = 60.0  # ...nor than this


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ascending ``ordered`` (nearest rank below); NaN when empty."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Cell:
    """One measurement: ``concurrency`` workers sending back to back for ``seconds``."""

    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_latencies(
        cls, concurrency: int, latencies_s: Sequence[float], seconds: float, **fields: Any
    ) -> Self:
        """The cell of ``latencies_s`` (seconds, those that completed in the window);
        ``fields`` are a subclass's own."""
        ordered = sorted(latencies_s)
        return cls(
            concurrency=concurrency,
            requests=len(ordered),
            seconds=seconds,
            rps=len(ordered) / seconds,
            p50_ms=percentile(ordered, 0.50) * 1e3,
            p99_ms=percentile(ordered, 0.99) * 1e3,
            mean_ms=statistics.fmean(ordered) * 1e3 if ordered else math.nan,
            **fields,
        )


class Window:
    """Warm-up, then the measured window: a request counts if it completes inside it.

    Warm-up lasts ``warmup_s`` and at least until ``WARMUP_ROUNDS`` requests per worker
    completed, so connection setup and the first (slow) batches stay out of the window
    (the python backend grows its shared memory on the first large tensors). The window
    lasts ``duration_s``; with ``stretch``, longer when requests are slow (big batches):
    at least ``WINDOW_LATENCIES`` warm-up latencies (capped), so that a batch finishing
    just inside or just outside it moves requests/s by a few percent only.
    """

    def __init__(
        self, concurrency: int, warmup_s: float, duration_s: float, *, stretch: bool = True
    ) -> None:
        self.warmup_s = warmup_s
        self.needed = WARMUP_ROUNDS * concurrency
        self.duration_s = duration_s
        self.stretch = stretch
        self.warmup_latencies: list[float] = []
        self.start = math.inf
        self.end = math.inf
        self.restart()

    def restart(self) -> None:
        """Start the warm-up clock now (once every worker has its connection)."""
        self.opened = time.perf_counter()
        self.warmup_until = self.opened + self.warmup_s

    @property
    def seconds(self) -> float:
        """Length of the window (0 if it never opened)."""
        span = self.end - self.start
        return span if math.isfinite(span) and span > 0 else 0.0

    def stop(self) -> None:
        """End the window now (or before it opens): every worker stops."""
        now = time.perf_counter()
        self.end = min(self.end, now) if self.start <= now else -math.inf

    def record(self, t0: float, t1: float, out: list[float]) -> None:
        if self.start <= t1 <= self.end:
            out.append(t1 - t0)
        elif t1 < self.start:
            self.warmup_latencies.append(t1 - t0)

    def poll(self) -> bool:
        """Open the window once warm; ``True`` from the call that opened it only."""
        if self.start != math.inf:
            return False
        now = time.perf_counter()
        if now >= self.warmup_until and len(self.warmup_latencies) >= self.needed:
            length = self.duration_s
            if self.stretch:
                recent = self.warmup_latencies[-self.needed :]
                slow = min(
                    WINDOW_LATENCIES * statistics.median(recent),
                    MAX_WINDOW_FACTOR * self.duration_s,
                    MAX_WINDOW_S,
                )
                length = max(length, slow)
            self.start, self.end = now, now + length
            return True
        if now - self.opened > WARMUP_LIMIT_S:
            raise RuntimeError(f"warm-up did not finish within {WARMUP_LIMIT_S:.0f} s")
        return False
