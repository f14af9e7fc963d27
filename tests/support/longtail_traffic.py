"""Long-tail traffic: a Zipf request trace over a pool's models, and the hit rates two
cache policies would get on it (LRU by bytes within a budget, the pool's; LRU by count,
Serve's model multiplexing), for bench/longtail.py and the residency tests."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["bytes_lru_hits", "count_lru_hits", "count_lru_peak_bytes", "zipf_trace"]


def zipf_trace(models: int, requests: int, s: float, seed: int) -> list[int]:
    """Model indices of ``requests`` requests, Zipf(s) over a shuffled popularity order."""
    rng = random.Random(seed)
    order = list(range(models))
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) ** s for rank in range(models)]
    return [order[r] for r in rng.choices(range(models), weights=weights, k=requests)]


def count_lru_hits(trace: Sequence[int], capacity: int, pinned: frozenset[int]) -> int:
    """Hits of an LRU cache holding ``capacity`` models (pinned ones count, never leave)."""
    cache: OrderedDict[int, None] = OrderedDict((p, None) for p in pinned)
    hits = 0
    for model in trace:
        if model in cache:
            hits += 1
            cache.move_to_end(model)
            continue
        cache[model] = None
        while len(cache) > max(capacity, len(pinned) + 1):
            victim = next(m for m in cache if m not in pinned)
            del cache[victim]
    return hits


def count_lru_peak_bytes(
    trace: Sequence[int], capacity: int, pinned: frozenset[int], sizes: dict[int, int]
) -> int:
    """The most bytes the count-bounded cache holds at once (it does not look at sizes)."""
    cache: OrderedDict[int, None] = OrderedDict((p, None) for p in pinned)
    peak = 0
    for model in trace:
        cache[model] = None
        cache.move_to_end(model)
        while len(cache) > max(capacity, len(pinned) + 1):
            del cache[next(m for m in cache if m not in pinned)]
        peak = max(peak, sum(sizes[m] for m in cache))
    return peak


def bytes_lru_hits(
    trace: Sequence[int], sizes: dict[int, int], budget: int, pinned: frozenset[int]
) -> int:
    """Hits of an LRU cache bounded by the models' bytes (pinned ones never leave)."""
    cache: OrderedDict[int, None] = OrderedDict((p, None) for p in pinned)
    hits = 0
    for model in trace:
        if model in cache:
            hits += 1
            cache.move_to_end(model)
            continue
        if sizes[model] + sum(sizes[p] for p in pinned) > budget:
            continue  # refused: never fits
        cache[model] = None
        while sum(sizes[m] for m in cache) > budget:
            victim = next(m for m in cache if m not in pinned)
            del cache[victim]
    return hits
