"""The long-tail benchmark's pure parts: the Zipf trace and the two simulated policies."""

from __future__ import annotations

from collections import Counter

from tests.support.longtail_traffic import (
    bytes_lru_hits,
    count_lru_hits,
    count_lru_peak_bytes,
    zipf_trace,
)


def test_zipf_trace_is_skewed_and_reproducible() -> None:
    trace = zipf_trace(40, 5000, 1.1, seed=3)
    assert trace == zipf_trace(40, 5000, 1.1, seed=3)
    counts = Counter(trace).most_common()
    assert counts[0][1] > 10 * counts[-1][1]
    assert set(trace) <= set(range(40))


def test_count_lru_keeps_the_most_recent() -> None:
    # capacity 2 with model 0 pinned: one slot left for the others
    assert count_lru_hits([1, 1, 2, 1, 0, 0], 2, frozenset({0})) == 3


def test_bytes_lru_fits_many_small_models_where_count_lru_cannot() -> None:
    sizes = {0: 10, 1: 10, 2: 10, 3: 10, 4: 10, 5: 70}
    trace = [0, 1, 2, 3, 4] * 2
    # the mean size (20) turns a budget of 80 into 4 models: a cycle of 5 never hits
    assert bytes_lru_hits(trace, sizes, 80, frozenset()) == 5
    assert count_lru_hits(trace, 4, frozenset()) == 0


def test_bytes_lru_never_admits_what_cannot_fit() -> None:
    assert bytes_lru_hits([5, 5, 5], {5: 100}, 50, frozenset()) == 0


def test_count_lru_overruns_a_budget_its_count_came_from() -> None:
    sizes = {0: 10, 1: 10, 2: 70, 3: 70}
    # mean 40 turns a budget of 80 into 2 models; the two big ones hold 140
    assert count_lru_peak_bytes([0, 1, 2, 3], 2, frozenset(), sizes) == 140
