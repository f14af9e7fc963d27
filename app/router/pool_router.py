"""Serve's request router for pool deployments (``residency``): Serve's own power of two
choices, except that a call naming a model (``multiplexed_model_id``) goes where
``app.residency.routing`` ranks it. Serve builds one per deployment handle, in the
caller's process (the routers), from ``request_router_config`` (``app.builders``).

Uses Serve's request-router API (alpha in Ray 2.60) and three of its internals: the
replicas' cached queue lengths, the routing stats each replica reports through
``record_routing_stats``, and the hand-over of a chosen replica to its request
(``_fulfill_next_pending_request``), where requests chosen but not yet sent are
counted (``ChosenNotSent``)."""

from __future__ import annotations

from typing import Any

from ray.serve._private.common import ReplicaID, RequestMetadata
from ray.serve._private.request_router.common import PendingRequest
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve._private.request_router.replica_wrapper import RunningReplica

from app.residency.config import DEFAULT_SPREAD_QUEUE_LEN
from app.residency.routing import ChosenNotSent, ReplicaView, rank_replicas

__all__ = ["PoolRequestRouter"]


class PoolRequestRouter(PowerOfTwoChoicesRequestRouter):
    """``initialize_state(spread_queue_len=...)`` comes from the deployment's
    ``request_router_kwargs``."""

    spread_queue_len = DEFAULT_SPREAD_QUEUE_LEN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._not_sent = ChosenNotSent()

    def initialize_state(self, **kwargs: Any) -> None:
        self.spread_queue_len = int(kwargs.get("spread_queue_len", DEFAULT_SPREAD_QUEUE_LEN))

    def _fulfill_next_pending_request(
        self,
        replica: RunningReplica,
        request_metadata: RequestMetadata | None = None,
    ) -> None:
        if self._get_pending_request_matching_internal_request_id(request_metadata):
            self._not_sent.chosen(replica.replica_id)
        super()._fulfill_next_pending_request(replica, request_metadata)

    def on_send_request(self, replica_id: ReplicaID) -> None:
        self._not_sent.sent(replica_id)
        super().on_send_request(replica_id)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        model = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if not model:
            chosen: list[list[RunningReplica]] = await super().choose_replicas(
                candidate_replicas, pending_request
            )
            return chosen
        by_id = {r.replica_id: r for r in candidate_replicas}
        views = [self._view(r) for r in candidate_replicas]
        ranks = rank_replicas(model, views, self.spread_queue_len)
        if pending_request is not None:
            # Serve backs off between rounds only when told to: every rank was tried.
            pending_request.routing_context.should_backoff = True
        return [[by_id[i] for i in rank if i in by_id] for rank in ranks]

    def _view(self, replica: RunningReplica) -> ReplicaView:
        stats = replica.routing_stats or {}
        room = stats.get("room_bytes")
        cached = self._replica_queue_len_cache.get(replica.replica_id)
        not_sent = self._not_sent.count(replica.replica_id)
        return ReplicaView(
            id=replica.replica_id,
            holds=frozenset(replica.multiplexed_model_ids),
            room_bytes=int(room) if isinstance(room, int) else None,
            queue_len=None if cached is None and not not_sent else (cached or 0) + not_sent,
            sizes=stats.get("sizes") or {},
        )
