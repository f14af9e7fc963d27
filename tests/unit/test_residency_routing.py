"""Where a pool model's requests go (``app.residency.routing``)."""

from __future__ import annotations

import random

from ray import serve

from app.builders import deployment_options
from app.config import ModelDeploymentConfig
from app.residency.routing import ChosenNotSent, ReplicaView, rank_replicas, routing_stats

MB = 1 << 20


def _rank(model: str, replicas: list[ReplicaView], spread: int = 4) -> list[list[str]]:
    return rank_replicas(model, replicas, spread, rng=random.Random(7))


def test_holders_first_then_replicas_with_room() -> None:
    replicas = [
        ReplicaView("a", frozenset({"m"}), queue_len=1),
        ReplicaView("b", frozenset(), room_bytes=100 * MB),
    ]
    assert _rank("m", replicas) == [["a"], ["b"]]


def test_a_hot_model_spreads_when_every_holder_has_a_queue() -> None:
    replicas = [
        ReplicaView("a", frozenset({"m"}), queue_len=4),
        ReplicaView("b", frozenset(), room_bytes=100 * MB, queue_len=0),
    ]
    assert _rank("m", replicas) == [["b"], ["a"]]  # the holder if b refuses
    # One holder with a short queue keeps it where it is.
    shorter = [*replicas, ReplicaView("c", frozenset({"m"}), queue_len=3)]
    ranks = _rank("m", shorter)
    assert sorted(ranks[0]) == ["a", "c"] and ranks[1:] == [["b"]]
    # A queue the caller has not seen yet is not a reason to spread.
    unknown = [ReplicaView("a", frozenset({"m"})), replicas[1]]
    assert _rank("m", unknown) == [["a"], ["b"]]


def test_a_cold_model_never_goes_to_a_replica_whose_budget_is_all_pinned() -> None:
    replicas = [
        ReplicaView("pinned-full", frozenset({"p"}), room_bytes=0, queue_len=0),
        ReplicaView("too-small", frozenset(), room_bytes=10 * MB, sizes={"m": 50 * MB}),
        ReplicaView("free", frozenset(), room_bytes=200 * MB, queue_len=9),
        ReplicaView("unreported", frozenset()),
    ]
    assert sorted(_rank("m", replicas)[0]) == ["free", "unreported"]
    assert len(_rank("m", replicas)) == 1
    # A model of unknown size needs some room, not none.
    assert sorted(_rank("x", replicas[:3])[0]) == ["free", "too-small"]


def test_a_busy_holder_does_not_spread_to_a_replica_without_room() -> None:
    replicas = [
        ReplicaView("a", frozenset({"m"}), queue_len=50),
        ReplicaView("full", frozenset(), room_bytes=0, queue_len=0),
    ]
    assert _rank("m", replicas) == [["a"]]


def test_when_no_replica_has_room_one_of_them_answers_why() -> None:
    replicas = [
        ReplicaView("a", frozenset({"p"}), room_bytes=0),
        ReplicaView("b", frozenset({"q"}), room_bytes=0),
    ]
    assert sorted(_rank("m", replicas)[0]) == ["a", "b"]


def test_ranks_draw_two_of_many() -> None:
    holders = [ReplicaView(f"h{i}", frozenset({"m"}), queue_len=0) for i in range(6)]
    ranks = _rank("m", holders)
    assert len(ranks) == 1 and len(ranks[0]) == 2 and len(set(ranks[0])) == 2


def test_routing_stats_are_plain_ints() -> None:
    assert routing_stats(5 * MB, {"m": 3 * MB}) == {"room_bytes": 5 * MB, "sizes": {"m": 3 * MB}}


def test_pool_deployments_use_the_pool_router_and_serve_accepts_it() -> None:
    pool = ModelDeploymentConfig.model_validate(
        {
            "name": "pool",
            "models": ["pool-00"],
            "residency": {"memory_budget_gb": 1, "spread_queue_len": 6},
        }
    )
    options = deployment_options(pool)
    config = options["request_router_config"]
    assert config["request_router_class"] == "app.router.pool_router:PoolRequestRouter"
    assert config["request_router_kwargs"] == {"spread_queue_len": 6}

    class Replica:
        pass

    # Serve imports the class and pickles it where the config is made.
    deployment = serve.deployment(Replica).options(**options)
    router_config = deployment._deployment_config.request_router_config
    assert router_config.get_serialized_request_router_cls()
    plain = ModelDeploymentConfig.model_validate({"name": "d", "models": ["m"]})
    assert "request_router_config" not in deployment_options(plain)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_chosen_requests_count_until_sent() -> None:
    clock = _Clock()
    pending = ChosenNotSent(horizon_s=1.0, clock=clock)
    for _ in range(3):
        pending.chosen("a")
    pending.chosen("b")
    assert (pending.count("a"), pending.count("b"), pending.count("c")) == (3, 1, 0)
    pending.sent("a")
    pending.sent("c")  # a send this caller did not choose (Serve's broadcast) is no error
    assert (pending.count("a"), pending.count("c")) == (2, 0)


def test_a_choice_never_sent_expires() -> None:
    """A caller cancelled between choice and send must not leave its replica busy."""
    clock = _Clock()
    pending = ChosenNotSent(horizon_s=1.0, clock=clock)
    pending.chosen("a")
    clock.now += 0.6
    pending.chosen("a")
    assert pending.count("a") == 2
    clock.now += 0.6
    assert pending.count("a") == 1
    clock.now += 0.6
    assert pending.count("a") == 0
