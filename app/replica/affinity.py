"""Tells Serve's request routers which pool models a replica holds, as Serve's own
model multiplexing does, so that a router calling with ``multiplexed_model_id``
prefers a replica that already has the model (and spreads it to the replica with
the fewest models when those are busy). Uses Serve's internal controller call
(``record_request_routing_info``); outside Serve it does nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["serve_publisher"]

log = logging.getLogger(__name__)


def serve_publisher() -> Callable[[list[str]], None] | None:
    """A function that publishes this replica's model ids, or None outside Serve."""
    try:
        from ray.serve import get_replica_context
        from ray.serve._private.common import RequestRoutingInfo
        from ray.serve.context import _get_global_client

        replica_id = get_replica_context().replica_id
    except Exception:
        return None

    def publish(models: list[str]) -> None:
        try:
            client = _get_global_client()
            if client is not None:
                client.record_request_routing_info(
                    RequestRoutingInfo(replica_id=replica_id, multiplexed_model_ids=models)
                )
        except Exception as exc:  # routing falls back to any replica meanwhile
            log.warning("publishing the resident models to Serve failed: %s", exc)

    return publish
