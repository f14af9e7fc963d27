"""The residency policy on its own: LRU order, pinned and busy models never chosen,
the min_resident_s thrash guard, the budget, and models too big to fit."""

from __future__ import annotations

import random

import pytest

from app.residency.policy import Evict, ResidencyPolicy, TooBig, WaitForRoom

MB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(budget_mb: int = 100, min_resident_s: float = 0.0) -> tuple[ResidencyPolicy, Clock]:
    clock = Clock()
    return ResidencyPolicy(budget_mb * MB, min_resident_s, clock), clock


def load(p: ResidencyPolicy, clock: Clock, model: str, mb: int, pinned: bool = False) -> None:
    decision = p.plan(model, mb * MB)
    assert isinstance(decision, Evict)
    for victim in decision.models:
        p.unloaded(victim)
    p.loaded(model, mb * MB, "measured (rss)", pinned)
    clock.now += 1


def test_room_left_evicts_nothing() -> None:
    p, clock = policy()
    load(p, clock, "a", 40)
    assert p.plan("b", 60 * MB) == Evict(())


def test_least_recently_used_goes_first() -> None:
    p, clock = policy()
    for name in "abc":
        load(p, clock, name, 30)
    p.begin("a")  # a is used after b and c were loaded
    p.end("a")
    clock.now += 1
    assert p.plan("d", 30 * MB) == Evict(("b",))
    assert p.plan("d", 60 * MB) == Evict(("b", "c"))


def test_pinned_is_never_evicted() -> None:
    p, clock = policy()
    load(p, clock, "pinned", 50, pinned=True)
    load(p, clock, "b", 40)
    decision = p.plan("c", 50 * MB)
    assert decision == Evict(("b",))
    assert "pinned" not in decision.models


def test_in_flight_is_never_evicted() -> None:
    p, clock = policy()
    load(p, clock, "busy", 50)
    load(p, clock, "idle", 40)
    p.begin("busy")
    assert p.plan("c", 50 * MB) == Evict(("idle",))
    decision = p.plan("c", 90 * MB)
    assert isinstance(decision, WaitForRoom)
    assert decision.seconds is None  # only a request in flight stands in the way
    p.end("busy")
    assert p.plan("c", 90 * MB) == Evict(("idle", "busy"))  # busy was used last


def test_young_models_wait_for_min_resident_s() -> None:
    p, clock = policy(min_resident_s=60)
    load(p, clock, "a", 60)
    load(p, clock, "b", 30)
    decision = p.plan("c", 50 * MB)
    assert isinstance(decision, WaitForRoom)
    assert decision.seconds == pytest.approx(58)  # a was loaded 2 s before "now"
    clock.now += 58
    assert p.plan("c", 50 * MB) == Evict(("a",))


def test_too_big_even_alone_is_refused() -> None:
    p, clock = policy()
    load(p, clock, "pinned", 30, pinned=True)
    with pytest.raises(TooBig, match=r"needs 0\.0781 GiB"):
        p.plan("huge", 80 * MB)
    p.plan("fits", 70 * MB)  # exactly the room the pinned model leaves


def test_over_budget_after_an_unexpected_size() -> None:
    p, clock = policy()
    load(p, clock, "a", 50)
    load(p, clock, "b", 30)
    p.loaded("c", 45 * MB, "measured (rss)")  # planned as smaller than it turned out
    assert p.over_budget() == Evict(("a",))


def test_budget_never_exceeded_under_random_traffic() -> None:
    """Random sizes, pins and requests in flight: every load the policy allows keeps
    the total within the budget; a refused one leaves it unchanged."""
    rng = random.Random(7)
    p, clock = policy(budget_mb=200, min_resident_s=5)
    sizes = {f"m{i}": rng.randint(5, 80) for i in range(40)}
    busy: list[str] = []
    for _ in range(3000):
        clock.now += rng.random()
        if busy and rng.random() < 0.5:
            p.end(busy.pop(rng.randrange(len(busy))))
            continue
        model = rng.choice(list(sizes))
        if model not in p.resident:
            try:
                decision = p.plan(model, sizes[model] * MB)
            except TooBig:
                continue
            if isinstance(decision, WaitForRoom):
                continue
            for victim in decision.models:
                assert not p.in_flight.get(victim)
                assert not p.resident[victim].pinned
                assert clock.now - p.resident[victim].loaded_at >= 5
                p.unloaded(victim)
            p.loaded(model, sizes[model] * MB, "measured (rss)", pinned=rng.random() < 0.02)
        assert p.used() <= p.budget
        p.begin(model)
        busy.append(model)
