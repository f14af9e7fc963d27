"""Where a request for a pool model may go: the replicas of its deployment in order of
preference, from what each replica reports (the models it holds, the room its pinned
models leave in its budget) and its queue as the caller last saw it.

- Replicas that hold the model (resident or loading) come first, so a warm model is
  served warm and a cold one loads once per replica.
- When every holder has ``spread_queue_len`` requests or more queued, replicas with
  room come first (the holders after them): a hot model spreads to another replica by
  its queue, not by its holders' refusals.
- A replica whose budget is all pinned (less room than the model's measured size, or
  none at all) never gets a model it does not hold: it could only refuse it.

Pure; ``app.router.pool_router`` applies it inside Serve's request router.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChosenNotSent", "ReplicaView", "rank_replicas", "routing_stats"]

#: A choice older than this without its send is dropped (its caller was cancelled).
CHOSEN_HORIZON_S = 1.0


@dataclass(frozen=True)
class ReplicaView:
    """One replica as a caller sees it: ``room_bytes`` is None until it reported,
    ``queue_len`` None when the caller has no recent figure."""

    id: Any
    holds: frozenset[str]
    room_bytes: int | None = None
    queue_len: int | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)


def routing_stats(room_bytes: int, sizes: Mapping[str, int]) -> dict[str, Any]:
    """What a pool replica reports for the callers' routing (``ReplicaView``)."""
    return {"room_bytes": int(room_bytes), "sizes": {m: int(s) for m, s in sizes.items()}}


def rank_replicas(
    model: str,
    replicas: Sequence[ReplicaView],
    spread_queue_len: int,
    *,
    per_rank: int = 2,
    rng: random.Random | None = None,
) -> list[list[Any]]:
    """Ids of ``replicas`` to try for ``model``, best rank first; within a rank the
    caller takes the shortest queue. At most ``per_rank`` of each kind (holders,
    replicas with room) per rank, drawn at random (power of two choices)."""
    draw = rng or random
    size = max((r.sizes.get(model, 0) for r in replicas), default=0)
    holders = [r for r in replicas if model in r.holds]
    takers = [r for r in replicas if model not in r.holds and _has_room(r, size)]
    if not holders:
        if takers:
            return [_ids(takers, per_rank, draw)]
        # Every replica's budget is pinned: one of them answers why it cannot load.
        return [_ids(replicas, per_rank, draw)]
    if takers and all(_busy(r, spread_queue_len) for r in holders):
        # Spread: a replica with room first (it loads the model), the holders if none
        # of those accepts. Not one choice between them: a replica the caller has not
        # sent to yet has no cached queue, and Serve would pick the known holder.
        return [_ids(takers, per_rank, draw), _ids(holders, per_rank, draw)]
    ranks = [_ids(holders, per_rank, draw)]
    if takers:
        ranks.append(_ids(takers, per_rank, draw))
    return ranks


def _has_room(replica: ReplicaView, size: int) -> bool:
    room = replica.room_bytes
    return room is None or (room > 0 and room >= size)


def _busy(replica: ReplicaView, spread_queue_len: int) -> bool:
    return replica.queue_len is not None and replica.queue_len >= spread_queue_len


def _ids(replicas: Sequence[ReplicaView], k: int, draw: Any) -> list[Any]:
    chosen = list(replicas) if len(replicas) <= k else draw.sample(list(replicas), k)
    return [r.id for r in chosen]


class ChosenNotSent:
    """Requests a caller has routed to a replica but not yet sent. Serve counts a
    request in a replica's cached queue only when it is sent, after the routing task
    has handed the replica over: a burst routed in one pass of the event loop would
    all see the same queue and never reach ``spread_queue_len``. Added to the cached
    queue, these make the burst's later requests see the earlier ones."""

    def __init__(
        self,
        horizon_s: float = CHOSEN_HORIZON_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._horizon_s = horizon_s
        self._clock = clock
        self._chosen: dict[Hashable, deque[float]] = {}

    def chosen(self, replica: Hashable) -> None:
        self._chosen.setdefault(replica, deque()).append(self._clock())

    def sent(self, replica: Hashable) -> None:
        times = self._chosen.get(replica)
        if times:
            times.popleft()
            if not times:
                del self._chosen[replica]

    def count(self, replica: Hashable) -> int:
        times = self._chosen.get(replica)
        if not times:
            return 0
        horizon = self._clock() - self._horizon_s
        while times and times[0] < horizon:
            times.popleft()
        if not times:
            del self._chosen[replica]
            return 0
        return len(times)
