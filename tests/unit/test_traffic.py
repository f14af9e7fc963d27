"""The traffic section and its routing decisions: validation naming the field,
split accuracy, sticky consistency, failover order, the mirror's bound, counters."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import AppConfig
from app.residency.config import NOT_LOADED_REASON
from app.router.traffic import Route, TrafficMetrics, TrafficRequest, rendezvous, route_state
from app.router.traffic_config import TrafficRouteConfig, parse_traffic

DEPLOYMENTS: list[dict[str, Any]] = [
    {"name": "a", "models": ["versioned", "echo"]},
    {"name": "llm", "models": ["tiny-llm"], "openai": {"tiny-llm": {"task": "generate"}}},
    {"name": "emb", "models": ["minilm"], "openai": {"minilm": {"task": "embed"}}},
]


def app_config(traffic: dict[str, Any]) -> AppConfig:
    return AppConfig.model_validate(
        {"model_repository": "/models", "deployments": DEPLOYMENTS, "traffic": traffic}
    )


def _one(model: str) -> dict[str, Any]:
    return {"model": model, "weight": 1}


def split(*weights: float) -> dict[str, Any]:
    return {
        "targets": [
            {"model": "versioned", "version": str(i + 1), "weight": w}
            for i, w in enumerate(weights)
        ]
    }


def test_valid_section_round_trips() -> None:
    section = {
        "canary": {
            **split(90, 10),
            "mirror": {"model": "echo", "percent": 5},
            "sticky": {"header": "X-Session-Id"},
        },
        "assistant": {"targets": [{"model": "tiny-llm", "weight": 1}]},
    }
    cfg = app_config(section)
    route = cfg.traffic["canary"]
    assert [t.version for t in route.targets] == ["1", "2"]
    assert route.sticky is not None and route.sticky.header == "x-session-id"
    assert route.on_unavailable == "failover"
    again = AppConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg


def test_numeric_versions_from_yaml_become_text() -> None:
    route = TrafficRouteConfig.model_validate(
        {"targets": [{"model": "versioned", "version": 2, "weight": 1}]}
    )
    assert route.targets[0].version == "2"


@pytest.mark.parametrize(
    ("traffic", "field", "why"),
    [
        (
            {"ab": {"targets": [{"model": "nope", "weight": 1}]}},
            "traffic.ab.targets[0].model",
            "not a model",
        ),
        (
            {"ab": {**split(1), "mirror": {"model": "nope", "percent": 5}}},
            "traffic.ab.mirror.model",
            "not a model",
        ),
        ({"echo": split(1)}, "traffic.echo", "already a model"),
        (
            {"x": {"targets": [{"model": "y", "weight": 1}]}, "y": split(1)},
            "traffic.x.targets[0].model",
            "routes do not nest",
        ),
        (
            {"x": {"targets": [{"model": "x", "weight": 1}]}},
            "traffic.x.targets[0].model",
            "routes do not nest",
        ),
        (
            {
                "mixed": {
                    "targets": [{"model": "tiny-llm", "weight": 1}, {"model": "echo", "weight": 1}]
                }
            },
            "traffic.mixed.targets[1].model",
            "same API",
        ),
        (
            {
                "mixed": {
                    "targets": [
                        {"model": "tiny-llm", "weight": 1},
                        {"model": "minilm", "weight": 1},
                    ]
                }
            },
            "traffic.mixed.targets[1].model",
            "same API",
        ),
        (
            {"v1": {"targets": [{"model": "tiny-llm", "version": "1", "weight": 1}]}},
            "traffic.v1.targets[0].version",
            "/v1 has no versions",
        ),
        ({"a/b": split(1)}, "traffic.a/b", "not usable"),
    ],
)
def test_cross_checks_name_the_field(traffic: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        app_config(traffic)
    assert field in str(info.value) and why in str(info.value)


@pytest.mark.parametrize(
    ("route", "loc", "why"),
    [
        (split(0, 0), ("ab", "targets"), "total weight"),
        (split(-1, 2), ("ab", "targets", 0, "weight"), "greater than or equal"),
        ({"targets": []}, ("ab", "targets"), "at least 1"),
        (
            {"targets": [{"model": "echo", "weight": 1}, {"model": "echo", "weight": 2}]},
            ("ab", "targets"),
            "also targets[0]",
        ),
        (
            {"targets": [{"model": "versioned", "version": "0", "weight": 1}]},
            ("ab", "targets", 0, "version"),
            "positive whole number",
        ),
        (
            {**split(1), "mirror": {"model": "echo", "percent": 0}},
            ("ab", "mirror", "percent"),
            "greater than",
        ),
        (
            {**split(1), "mirror": {"model": "echo", "percent": 101}},
            ("ab", "mirror", "percent"),
            "less than or equal",
        ),
        ({**split(1), "sticky": {}}, ("ab", "sticky"), "set header"),
        ({**split(1), "sticky": {"header": "bad header"}}, ("ab", "sticky", "header"), "letters"),
        ({**split(1), "on_unavailable": "retry"}, ("ab", "on_unavailable"), "failover"),
        ({**split(1), "extra": 1}, ("ab", "extra"), "not permitted"),
    ],
)
def test_field_errors_name_the_field(route: dict[str, Any], loc: tuple[Any, ...], why: str) -> None:
    with pytest.raises(ValidationError) as info:
        app_config({"ab": route})
    errors = info.value.errors()
    assert any(e["loc"] == ("traffic", *loc) and why in e["msg"] for e in errors), errors


def test_user_config_is_parsed_and_errors_name_the_field() -> None:
    routes = parse_traffic({"traffic": {"ab": split(1, 3)}})
    assert routes["ab"].targets[1].weight == 3
    assert parse_traffic({"traffic": None}) == {} and parse_traffic({}) == {}
    with pytest.raises(ValueError, match=r"user_config\.traffic") as info:
        parse_traffic({"traffic": {"ab": split(0)}})
    assert "ab.targets" in str(info.value)
    with pytest.raises(ValueError, match="only the key 'traffic'"):
        parse_traffic({"weights": {}})


def _route(*weights: float, **extra: Any) -> Route:
    return Route("ab", TrafficRouteConfig.model_validate({**split(*weights), **extra}))


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (70, 20, 10), (1, 0, 3)])
def test_random_split_within_two_percent_over_10000(weights: tuple[float, ...]) -> None:
    route = _route(*weights)
    rng = random.Random(7)
    n = 10_000
    counts = Counter(route.pick(None, rng).label for _ in range(n))  # type: ignore[union-attr]
    total = sum(weights)
    for i, weight in enumerate(weights):
        share = counts[f"versioned/{i + 1}"] / n
        assert abs(share - weight / total) <= 0.02, (counts, weights)


def test_sticky_keys_split_by_weight_within_two_percent() -> None:
    route = _route(90, 10)
    n = 10_000
    rng = random.Random(0)
    counts = Counter(route.pick(f"session-{i}", rng).label for i in range(n))  # type: ignore[union-attr]
    assert abs(counts["versioned/1"] / n - 0.9) <= 0.02, counts


def test_sticky_keys_are_consistent_across_replicas() -> None:
    """Two routers (two Route objects, different RNGs) pick the same target for every
    key, every time."""
    one, two = _route(60, 30, 10), _route(60, 30, 10)
    keys = [f"user-{i}" for i in range(5_000)]
    first = [one.pick(k, random.Random(1)) for k in keys]
    assert all(one.pick(k, random.Random(2)) == t for k, t in zip(keys, first, strict=True))
    assert all(two.pick(k, random.Random(3)) == t for k, t in zip(keys, first, strict=True))
    assert len({t.label for t in first if t is not None}) == 3


def test_a_weight_change_moves_only_keys_it_must() -> None:
    """Raising target 2's weight moves keys only onto target 2."""
    before, after = _route(90, 10), _route(80, 20)
    rng = random.Random(0)
    for i in range(5_000):
        old, new = before.pick(f"k{i}", rng), after.pick(f"k{i}", rng)
        assert old is not None and new is not None
        assert old.label == new.label or new.version == "2"


def test_failover_excludes_refused_targets_then_uses_weight_zero() -> None:
    route = _route(3, 1, 0)
    rng = random.Random(0)
    for key in (None, "abc"):
        nxt = route.pick(key, rng, frozenset({"versioned/1"}))
        assert nxt is not None and nxt.label == "versioned/2"
        last = route.pick(key, rng, frozenset({"versioned/1", "versioned/2"}))
        assert last is not None and last.label == "versioned/3"
        assert (
            route.pick(key, rng, frozenset({"versioned/1", "versioned/2", "versioned/3"})) is None
        )


def test_sticky_choice_among_remaining_is_rendezvous() -> None:
    route = _route(1, 1, 1)
    for i in range(200):
        key = f"k{i}"
        left = [t for t in route.targets if t.label != "versioned/1"]
        assert route.pick(key, random.Random(), frozenset({"versioned/1"})) == rendezvous(key, left)


def test_mirror_sampling_and_bound() -> None:
    route = _route(1, mirror={"model": "echo", "percent": 25, "max_in_flight": 2})
    rng = random.Random(3)
    sampled = sum(route.mirror_sampled(rng) for _ in range(10_000))
    assert abs(sampled / 10_000 - 0.25) <= 0.02
    assert route.mirror_slot() and route.mirror_slot()
    assert not route.mirror_slot()  # the third copy is dropped
    route.mirror_done()
    assert route.mirror_slot()
    assert not _route(1).mirror_sampled(rng)


def test_route_state_ready_when_a_target_is() -> None:
    route = _route(90, 10)
    ready = {"versioned": {"state": "READY", "reason": ""}}
    assert route_state(route, ready)["state"] == "READY"
    down = {"versioned": {"state": "UNAVAILABLE", "reason": "x"}}
    state = route_state(route, down)
    assert state["state"] == "UNAVAILABLE" and "versioned/1 (90)" in state["reason"]


def test_request_records_targets_in_order() -> None:
    request = TrafficRequest(lambda name: None)
    assert request.header_value() is None
    request.note("versioned/1")
    request.note("versioned/2")
    request.note("versioned/1")
    assert request.header_value() == "versioned/1,versioned/2"


def test_metrics_render_counters() -> None:
    metrics = TrafficMetrics()
    metrics.routed("ab", "versioned/1")
    metrics.routed("ab", "versioned/1")
    metrics.mirror("ab", "echo", "dropped")
    assert "triton_serve_traffic_config_rejected_total 0.0" in metrics.render()
    metrics.config_rejected()
    text = metrics.render()
    assert "triton_serve_traffic_config_rejected_total 1.0" in text
    assert 'triton_serve_traffic_requests_total{route="ab",target="versioned/1"} 2.0' in text
    assert (
        'triton_serve_traffic_mirror_total{result="dropped",route="ab",target="echo"} 1.0' in text
    )
    assert "_created" not in text


def test_a_route_to_pool_models_not_loaded_yet_loads_on_first_request() -> None:

    cfg = TrafficRouteConfig.model_validate(
        {"targets": [{"model": "pool-a", "weight": 1}, {"model": "pool-b", "weight": 1}]}
    )
    route = Route("canary", cfg)
    cold = {"state": "UNAVAILABLE", "reason": NOT_LOADED_REASON}
    failed = {"state": "UNAVAILABLE", "reason": "model 'pool-a' failed to load: no weights"}
    ready = {"state": "READY", "reason": ""}
    assert route_state(route, {"pool-a": cold, "pool-b": ready})["state"] == "READY"
    assert route_state(route, {"pool-a": cold, "pool-b": failed})["reason"] == NOT_LOADED_REASON
    assert route_state(route, {"pool-a": failed, "pool-b": failed})["reason"].startswith(
        "no target ready"
    )
