"""The pool's Serve request router on real Serve: two replicas of a small deployment
that report their room as pool replicas do (``record_routing_stats``); once one of them
reports a budget that is all pinned, no cold model goes to it.

The replicas here are not model replicas: what is under test is the router that
Serve builds in the caller's process from ``request_router_config``, and the rule it
applies (``app.residency.routing``) to what the replicas report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import serve

from app.builders import POOL_ROUTING_STATS_PERIOD_S
from tests.support.stack import run_deployment
from tests.support.waiting import wait_until

APP = "pool-router"


@pytest.fixture(scope="module")
def handle(pool_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    marks = tmp_path_factory.mktemp("pinned-full")

    class Reporter:
        """Reports all its budget pinned while a file named after it exists."""

        def __init__(self, marks: str) -> None:
            self.marks = Path(marks)
            self.name = serve.get_replica_context().replica_id.unique_id

        def record_routing_stats(self) -> dict[str, Any]:
            from app.residency.routing import routing_stats

            full = (self.marks / self.name).exists()
            return routing_stats(0 if full else 1 << 30, {})

        async def who(self) -> str:
            return str(self.name)

    deployment = serve.deployment(
        Reporter,
        num_replicas=2,
        ray_actor_options={"num_cpus": 0.05},
        request_router_config={
            "request_router_class": "app.router.pool_router:PoolRequestRouter",
            "request_routing_stats_period_s": POOL_ROUTING_STATS_PERIOD_S,
        },
    )
    handle = run_deployment(deployment.bind(str(marks)), APP)
    try:
        yield handle, marks
    finally:
        serve.delete(APP, _blocking=True)


def _answers(handle: Any, count: int) -> list[str]:
    """Who answered calls for ``count`` different cold models."""
    calls = [handle.options(multiplexed_model_id=f"cold-{i}").who.remote() for i in range(count)]
    return [call.result(timeout_s=30) for call in calls]


def test_a_cold_model_never_goes_to_a_replica_whose_budget_is_all_pinned(
    handle: tuple[Any, Path],
) -> None:
    deployment, marks = handle
    seen: set[str] = set()

    def both_answer() -> bool:
        seen.update(_answers(deployment, 20))
        return len(seen) == 2

    wait_until(both_answer, 30, "calls reach both replicas")
    full, other = sorted(seen)
    (marks / full).touch()
    # The mark reaches the caller with the replica's next report.
    wait_until(lambda: set(_answers(deployment, 10)) == {other}, 30, "the full replica skipped")
    time.sleep(2 * POOL_ROUTING_STATS_PERIOD_S)
    assert set(_answers(deployment, 40)) == {other}
    (marks / full).unlink()
    wait_until(lambda: full in _answers(deployment, 20), 30, "the replica back in use")
