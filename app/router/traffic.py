"""Routing decisions for public model names: weighted choice, sticky hashing, the
mirror's bounds and the traffic counters. Pure (no Ray, no I/O), so router replicas
agree without sharing state and tests need no cluster.

Sticky choices use weighted rendezvous hashing: every target scores
``-weight / ln(u)`` with ``u`` a stable hash of (key, target) in (0, 1) and the
highest score wins. A key keeps its target while weights are unchanged; a new
weight moves only the keys the change has to move; the share of keys a target gets
is its share of the weight.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from app.observability import render_registry
from app.residency.config import NOT_LOADED_REASON
from app.router.traffic_config import TrafficRouteConfig, target_label

__all__ = [
    "TARGET_HEADER",
    "Route",
    "Target",
    "TrafficMetrics",
    "TrafficRequest",
    "rendezvous",
    "route_state",
    "traffic_request",
]

# Response header (gRPC: trailing metadata, lower-cased) naming the target that served.
TARGET_HEADER = "X-Triton-Serve-Target"


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    version: str | None
    weight: float

    @property
    def label(self) -> str:
        return target_label(self.model, self.version)


@dataclass(slots=True)
class TrafficRequest:
    """What the transport knows of a request (its headers or gRPC metadata, by
    lower-case name) and where the data plane records the targets that served it."""

    lookup: Callable[[str], str | None]
    served: list[str] = field(default_factory=list)

    def note(self, label: str) -> None:
        if label not in self.served:
            self.served.append(label)

    def header_value(self) -> str | None:
        """The header's value: the targets that served, in order (a gRPC stream can
        reach several)."""
        return ",".join(self.served) if self.served else None


traffic_request: ContextVar[TrafficRequest | None] = ContextVar("traffic_request", default=None)


def _unit_hash(key: str, label: str) -> float:
    """A stable number in (0, 1) for (key, target), the same in every process."""
    digest = hashlib.blake2b(f"{key}\x00{label}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def rendezvous(key: str, targets: Sequence[Target]) -> Target:
    """The target of ``key`` among ``targets`` (positive weights), by weighted
    rendezvous hashing."""
    return max(targets, key=lambda t: -t.weight / math.log(_unit_hash(key, t.label)))


class Route:
    """One public name's targets, mirror and bounded mirror slots (per router replica)."""

    def __init__(self, name: str, cfg: TrafficRouteConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.targets = tuple(Target(t.model, t.version, t.weight) for t in cfg.targets)
        self.first = self.targets[0]
        self.mirror = (
            Target(cfg.mirror.model, cfg.mirror.version, 1.0) if cfg.mirror is not None else None
        )
        self._weighted = [t for t in self.targets if t.weight > 0]
        self._cumulative = list(accumulate(t.weight for t in self._weighted))
        self.mirror_in_flight = 0

    def pick(
        self, key: str | None, rng: random.Random, exclude: frozenset[str] = frozenset()
    ) -> Target | None:
        """The target for a request: by ``key`` when sticky, else at random by weight;
        ``exclude`` (labels) are targets that just refused it. None when none is left;
        targets of weight 0 are the last resort, in their order."""
        if not exclude:
            candidates = self._weighted
        else:
            candidates = [t for t in self._weighted if t.label not in exclude]
        if not candidates:
            rest = [t for t in self.targets if t.label not in exclude]
            return rest[0] if rest else None
        if key is not None:
            return rendezvous(key, candidates)
        if candidates is self._weighted:
            point = rng.random() * self._cumulative[-1]
            index = bisect_right(self._cumulative, point)
            return self._weighted[min(index, len(self._weighted) - 1)]
        return rng.choices(candidates, weights=[t.weight for t in candidates])[0]

    def mirror_sampled(self, rng: random.Random) -> bool:
        return self.cfg.mirror is not None and rng.random() * 100.0 < self.cfg.mirror.percent

    def mirror_slot(self) -> bool:
        """Take a place for one mirror copy, or False when the bound is reached."""
        assert self.cfg.mirror is not None
        if self.mirror_in_flight >= self.cfg.mirror.max_in_flight:
            return False
        self.mirror_in_flight += 1
        return True

    def mirror_done(self) -> None:
        self.mirror_in_flight -= 1


class TrafficMetrics:
    """Routed requests per (route, target) and mirror copies per (route, target,
    result)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._rejected = Counter(
            "triton_serve_traffic_config_rejected",
            "Traffic configs the router refused (it kept its routes); the log names the field.",
            registry=self.registry,
        )
        self._requests = Counter(
            "triton_serve_traffic_requests",
            "Requests to a public name, by target.",
            ("route", "target"),
            registry=self.registry,
        )
        self._mirrored = Counter(
            "triton_serve_traffic_mirror",
            "Mirror copies: ok, error or dropped.",
            ("route", "target", "result"),
            registry=self.registry,
        )

    def routed(self, route: str, target: str) -> None:
        self._requests.labels(route, target).inc()

    def mirror(self, route: str, target: str, result: str) -> None:
        self._mirrored.labels(route, target, result).inc()

    def config_rejected(self) -> None:
        self._rejected.inc()

    def render(self) -> str:
        return render_registry(self.registry)


def route_state(route: Route, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A public name's entry in model listings: READY when a target that takes
    traffic is (the others take over its share); like a pool model, "not loaded:
    loads on first request" when such targets are pool models not loaded yet; else
    why not."""
    serving = [t for t in route.targets if t.weight > 0 or route.cfg.on_unavailable == "failover"]
    ready = [t for t in serving if states.get(t.model, {}).get("state") == "READY"]
    cold = [t for t in serving if states.get(t.model, {}).get("reason") == NOT_LOADED_REASON]
    targets = ", ".join(f"{t.label} ({t.weight:g})" for t in route.targets)
    if ready:
        state, reason = "READY", f"routed to {targets}"
    elif cold:
        state, reason = "UNAVAILABLE", NOT_LOADED_REASON
    else:
        state, reason = "UNAVAILABLE", f"no target ready of {targets}"
    return {"state": state, "reason": reason, "version": "", "versions": []}
