"""The soak client: mixed traffic from async workers for a while, every answer checked.

    python -m tests.integration.soak.client http://127.0.0.1:8000 --seconds 1800

Prints the tally as JSON; exits 1 if any request was lost or corrupted. The service
needs ``echo``, ``streamer``, ``versioned``, ``tiny-llm`` (OpenAI generate) and
``minilm`` (OpenAI embed), as ``tests/integration/soak/conftest.py`` deploys them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx

from tests.integration.soak.traffic import MIX, Check, Corrupted, Tally, load_cycle

REQUEST_TIMEOUT_S = 120.0
LOAD_CYCLE_PERIOD_S = 5.0


async def _one(
    client: httpx.AsyncClient, rng: random.Random, kind: str, check: Check, tally: Tally
) -> None:
    tally.sent[kind] += 1
    try:
        await check(client, rng)
    except (httpx.TransportError, httpx.TimeoutException) as exc:
        tally.failed(kind, tally.lost, f"{type(exc).__name__}: {exc}")
    except (Corrupted, KeyError, ValueError, TypeError, IndexError) as exc:
        tally.failed(kind, tally.corrupted, f"{type(exc).__name__}: {exc}")


async def _worker(url: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    kinds = [(kind, check) for kind, check, _ in MIX]
    weights = [weight for *_, weight in MIX]
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            kind, check = rng.choices(kinds, weights)[0]
            await _one(client, rng, kind, check, tally)


async def _load_cycles(url: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            await _one(client, rng, "load_cycle", load_cycle, tally)
            await asyncio.sleep(LOAD_CYCLE_PERIOD_S)


async def run_soak(url: str, seconds: float, concurrency: int = 8, seed: int = 0) -> Tally:
    """Run the mix against ``url`` for ``seconds``; requests under way then finish."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    workers = [_worker(url, seed + i, deadline, tally) for i in range(concurrency)]
    await asyncio.gather(*workers, _load_cycles(url, seed - 1, deadline, tally))
    return tally


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "requests": sum(tally.sent.values()),
        "per_second": round(sum(tally.sent.values()) / seconds, 1),
        "sent": dict(tally.sent),
        "lost": dict(tally.lost),
        "corrupted": dict(tally.corrupted),
        "examples": tally.examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tally = asyncio.run(run_soak(args.url, args.seconds, args.concurrency, args.seed))
    print(json.dumps(summary(tally, args.seconds), indent=2))
    return 1 if tally.lost or tally.corrupted else 0


if __name__ == "__main__":
    sys.exit(main())
