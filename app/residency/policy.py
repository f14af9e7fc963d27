"""Which models stay resident: least recently used eviction within a memory budget.

Pure bookkeeping (no Triton, no threads, an injectable clock) so the rules are
unit-tested on their own: a model with requests in flight, a pinned model, or one
loaded less than ``min_resident_s`` ago is never chosen; a model that cannot fit
even with every other unpinned model evicted is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Evict", "Resident", "ResidencyPolicy", "TooBig", "WaitForRoom", "gib"]


def gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB"


@dataclass
class Resident:
    """A loaded model. ``source`` says how ``size`` is known: "measured (rss)",
    "measured (gpu)", "declared" (the model config's fallback)."""

    model: str
    size: int
    source: str
    loaded_at: float
    last_used: float
    pinned: bool = False


@dataclass(frozen=True)
class Evict:
    """Room is made by unloading ``models`` (possibly none), least recently used first."""

    models: tuple[str, ...]


@dataclass(frozen=True)
class WaitForRoom:
    """Not enough can be evicted now: models in flight or too young stand in the way.
    ``seconds`` until the first of the young ones may go (None: only requests in
    flight block, so wait for one to finish)."""

    seconds: float | None
    why: str


class TooBig(Exception):
    """The model cannot fit even alone next to the pinned models."""


class ResidencyPolicy:
    """Residents of one replica within ``budget`` bytes."""

    def __init__(
        self,
        budget: int,
        min_resident_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.min_resident_s = min_resident_s
        self.clock = clock
        self.resident: dict[str, Resident] = {}
        self.in_flight: dict[str, int] = {}

    # ---- accounting ----

    def used(self) -> int:
        return sum(r.size for r in self.resident.values())

    def pinned_bytes(self, besides: str | None = None) -> int:
        return sum(r.size for r in self.resident.values() if r.pinned and r.model != besides)

    def begin(self, model: str) -> None:
        """A request starts on ``model`` (it is then never evicted until ``end``)."""
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        entry = self.resident.get(model)
        if entry is not None:
            entry.last_used = self.clock()

    def end(self, model: str) -> None:
        left = self.in_flight.get(model, 0) - 1
        if left > 0:
            self.in_flight[model] = left
        else:
            self.in_flight.pop(model, None)
        entry = self.resident.get(model)
        if entry is not None:
            entry.last_used = self.clock()

    def loaded(self, model: str, size: int, source: str, pinned: bool = False) -> None:
        now = self.clock()
        self.resident[model] = Resident(model, max(0, size), source, now, now, pinned)

    def unloaded(self, model: str) -> None:
        self.resident.pop(model, None)

    def pin(self, model: str, pinned: bool) -> None:
        entry = self.resident.get(model)
        if entry is not None:
            entry.pinned = pinned

    # ---- decisions ----

    def check_fits(self, model: str, size: int) -> None:
        """Raise ``TooBig`` unless ``model`` fits next to the pinned models."""
        room = self.budget - self.pinned_bytes(besides=model)
        if size > room:
            pinned = self.pinned_bytes(besides=model)
            raise TooBig(
                f"model '{model}' needs {gib(size)} but the replica's budget is "
                f"{gib(self.budget)}" + (f", {gib(pinned)} of it pinned" if pinned else "")
            )

    def plan(self, model: str, size: int) -> Evict | WaitForRoom:
        """What to evict so that ``model`` (``size`` bytes, not resident) fits."""
        self.check_fits(model, size)
        free = self.budget - self.used()
        if size <= free:
            return Evict(())
        now = self.clock()
        chosen: list[str] = []
        young: list[float] = []
        busy = 0
        for entry in sorted(self.resident.values(), key=lambda r: r.last_used):
            if entry.pinned or entry.model == model:
                continue
            if self.in_flight.get(entry.model):
                busy += 1
                continue
            age = now - entry.loaded_at
            if age < self.min_resident_s:
                young.append(self.min_resident_s - age)
                continue
            chosen.append(entry.model)
            free += entry.size
            if size <= free:
                return Evict(tuple(chosen))
        seconds = min(young) if young else None
        return WaitForRoom(
            seconds,
            f"model '{model}' needs {gib(size)}: {gib(free)} can be freed now, "
            f"{busy} resident models have requests in flight and {len(young)} were "
            f"loaded less than min_resident_s ({self.min_resident_s:g} s) ago",
        )

    def over_budget(self) -> Evict:
        """Evictable models (LRU first) that bring the total back within the budget
        after a load whose size was not known beforehand; may not be enough."""
        excess = self.used() - self.budget
        chosen: list[str] = []
        if excess <= 0:
            return Evict(())
        now = self.clock()
        for entry in sorted(self.resident.values(), key=lambda r: r.last_used):
            if (
                entry.pinned
                or self.in_flight.get(entry.model)
                or now - entry.loaded_at < self.min_resident_s
            ):
                continue
            chosen.append(entry.model)
            excess -= entry.size
            if excess <= 0:
                break
        return Evict(tuple(chosen))
