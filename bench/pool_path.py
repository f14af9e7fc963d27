"""What a warm hit on a pool model costs beyond a plain model's, measured on the code
itself, in one process, without Ray or Triton.

``python -m bench.pool_path`` times, call by call (``time.perf_counter_ns``), the two
things a request to a resident pool model runs that a plain model's does not:

- in the replica, ``Residency.acquire`` and ``release`` around the call (the model is
  resident: a lock, a dict lookup, the in-flight count; the plain path is an empty
  context), on a real ``Residency`` whose one model is marked resident;
- in the router, the pool rule (``app.residency.routing.rank_replicas``) that Serve's
  request router runs per call, over 2 and 8 replicas, where a plain deployment runs
  Serve's power of two choices.

It prints p50, p99 and max in microseconds per call. ``bench.longtail`` measures a warm
hit through the whole stack, where the shared machine's noise is milliseconds; this
isolates the part the pool adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from app.config import ModelDeploymentConfig
from app.replica.residency import Residency
from app.residency.routing import ReplicaView, rank_replicas
from bench.common.measure import percentile

__all__ = ["main"]

MiB = 1 << 20


def _percentiles(samples_ns: Sequence[int]) -> tuple[float, float, float]:
    ordered = sorted(samples_ns)
    return statistics.median(ordered) / 1000, percentile(ordered, 0.99) / 1000, ordered[-1] / 1000


def _resident_pool() -> Residency:
    """A replica's pool with one model resident, as after its load (no Triton needed:
    a resident model's hit never reaches model control)."""
    deployment = ModelDeploymentConfig.model_validate(
        {"name": "pool", "models": ["pool-01"], "residency": {"memory_budget_gb": 1}}
    )
    assert deployment.residency is not None
    control: Any = None  # used only by loads and evictions, which a hit does not make
    pool = Residency(deployment, deployment.residency, "/nonexistent", control, 1.0, {})
    pool.policy.loaded("pool-01", 50 * MiB, "rss")
    return pool


async def _time_hits(use: Callable[[], Any], calls: int) -> list[int]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        async with use():
            pass
        samples.append(time.perf_counter_ns() - started)
    return samples


def _time_rule(replicas: list[ReplicaView], calls: int) -> list[int]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        rank_replicas("pool-01", replicas, 4)
        samples.append(time.perf_counter_ns() - started)
    return samples


def _replicas(count: int) -> list[ReplicaView]:
    rng = random.Random(1)
    sizes = {f"pool-{i:02d}": (4 + i) * MiB for i in range(40)}
    return [
        ReplicaView(
            id=i,
            holds=frozenset(rng.sample(sorted(sizes), 8)) | ({"pool-01"} if i == 0 else set()),
            room_bytes=512 * MiB,
            queue_len=rng.randrange(4),
            sizes=sizes,
        )
        for i in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="timed calls per cell")
    args = parser.parse_args(argv)
    pool = _resident_pool()

    @contextlib.asynccontextmanager
    async def plain() -> Any:
        yield

    rows = [
        ("replica: plain model (empty context)", asyncio.run(_time_hits(plain, args.calls))),
        (
            "replica: resident pool model (acquire + release)",
            asyncio.run(_time_hits(lambda: pool.use("pool-01"), args.calls)),
        ),
        ("router: pool rule, 2 replicas", _time_rule(_replicas(2), args.calls)),
        ("router: pool rule, 8 replicas", _time_rule(_replicas(8), args.calls)),
    ]
    print(f"{args.calls} calls per cell, microseconds per call")
    print("| cell | p50 | p99 | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, samples in rows:
        p50, p99, most = _percentiles(samples)
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {most:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
