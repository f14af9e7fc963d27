"""``TrafficClient`` without Ray: the call each target receives, failover on 503,
the recorded target, sticky keys from headers and API keys, and the mirror's
fire-and-forget copy, its errors and its bound. The replica hop is replaced by a
recorder of the calls that would be sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from app.config import AppConfig
from app.contract import InferCall, OpenAICall
from app.errors import NotFound, Unavailable
from app.router.traffic import TrafficRequest, traffic_request
from app.router.traffic_client import TrafficClient
from app.security.config import KeyLimits
from app.security.context import current_key
from app.security.keys import ApiKey


def counts(client: TrafficClient, family: str) -> dict[tuple[str, ...], float]:
    """The samples of one counter family, keyed by their label values."""
    registry = client.traffic_metrics.registry
    return {
        tuple(sample.labels.values()): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == f"triton_serve_traffic_{family}_total"
    }


def client_for(traffic: dict[str, Any]) -> TrafficClient:
    cfg = AppConfig.model_validate(
        {
            "model_repository": "/m",
            "deployments": [
                {"name": "a", "models": ["versioned", "echo"]},
                {
                    "name": "llm",
                    "models": ["tiny-llm"],
                    "openai": {"tiny-llm": {"task": "generate"}},
                },
            ],
            "traffic": traffic,
        }
    )
    return TrafficClient(cfg, {})


class Recorder:
    """Stands in for the replica hop: records (model, version) per call, and
    answers 503 for the labels in ``refuse``, fails for those in ``fail`` and holds
    those in ``hold`` until ``release``."""

    def __init__(
        self,
        refuse: frozenset[str] | set[str] = frozenset(),
        fail: frozenset[str] | set[str] = frozenset(),
        hold: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.calls: list[tuple[str, str | None, str]] = []
        self.refuse, self.fail, self.hold = refuse, fail, hold
        self.release = asyncio.Event()

    async def __call__(self, method: Callable[..., Any], model: str, arg: Any, **kw: Any) -> Any:
        version = getattr(arg, "version", None)
        label = f"{model}/{version}" if version else model
        self.calls.append((model, version, method.__name__))
        if label in self.hold:
            await self.release.wait()
        if label in self.refuse:
            raise Unavailable(f"{label} is full")
        if label in self.fail:
            raise RuntimeError("boom")
        return label


def split(*weights: float, **extra: Any) -> dict[str, Any]:
    targets = [
        {"model": "versioned", "version": str(i + 1), "weight": w} for i, w in enumerate(weights)
    ]
    return {"ab": {"targets": targets, **extra}}


async def _infer(
    client: TrafficClient, model: str = "ab", **headers: str
) -> tuple[Any, TrafficRequest]:
    request = TrafficRequest(lambda name: headers.get(name))
    token = traffic_request.set(request)
    try:
        return await client.infer(InferCall(model, None, b"{}")), request
    finally:
        traffic_request.reset(token)


def test_call_is_rewritten_to_the_target_and_recorded() -> None:
    client = client_for(split(0, 1))
    client._unary = Recorder()  # type: ignore[method-assign]
    result, request = asyncio.run(_infer(client))
    assert result == "versioned/2" and request.header_value() == "versioned/2"
    assert counts(client, "requests")[("ab", "versioned/2")] == 1
    assert client.deployment_of("ab") == "a"


def test_plain_models_pass_through_untouched() -> None:
    client = client_for(split(1))
    client._unary = Recorder()  # type: ignore[method-assign]
    result, request = asyncio.run(_infer(client, "echo"))
    assert result == "echo" and request.header_value() is None


def test_a_503_fails_over_to_the_other_target() -> None:
    client = client_for(split(1, 0))
    recorder = Recorder(refuse={"versioned/1"})
    client._unary = recorder  # type: ignore[method-assign]
    result, request = asyncio.run(_infer(client))
    assert result == "versioned/2" and request.header_value() == "versioned/2"
    assert [c[1] for c in recorder.calls] == ["1", "2"]


def test_on_unavailable_fail_returns_the_503() -> None:
    client = client_for(split(1, 1, on_unavailable="fail"))
    client._unary = Recorder(refuse={"versioned/1", "versioned/2"})  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        asyncio.run(_infer(client))


def test_every_target_refusing_returns_the_last_503() -> None:
    client = client_for(split(1, 1))
    recorder = Recorder(refuse={"versioned/1", "versioned/2"})
    client._unary = recorder  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        asyncio.run(_infer(client))
    assert len(recorder.calls) == 2


def test_versions_of_a_public_name_are_404() -> None:
    client = client_for(split(1))
    with pytest.raises(NotFound, match="no versions of its own"):
        asyncio.run(client.infer(InferCall("ab", "1", b"{}")))


def test_sticky_key_from_header_then_api_key() -> None:
    client = client_for(split(1, 1, 1, sticky={"header": "X-Session-Id", "api_key": True}))
    route = client.routes["ab"]
    request = TrafficRequest(lambda name: "s1" if name == "x-session-id" else None)
    token = traffic_request.set(request)
    try:
        assert client._sticky_key(route) == "s1"
    finally:
        traffic_request.reset(token)
    key = ApiKey(name="team", models=None, repository=False, limits=KeyLimits())
    token2 = current_key.set(key)
    try:
        assert client._sticky_key(route) == "key:team"
    finally:
        current_key.reset(token2)
    assert client._sticky_key(route) is None


def test_mirror_copy_is_not_awaited_and_its_error_is_counted() -> None:
    client = client_for(split(1, mirror={"model": "echo", "percent": 100}))
    recorder = Recorder(fail={"echo"})
    client._unary = recorder  # type: ignore[method-assign]

    async def run() -> Any:
        result, _ = await _infer(client)
        assert counts(client, "mirror") == {}  # the copy has not run yet
        await asyncio.gather(*client._mirrors)
        return result

    assert asyncio.run(run()) == "versioned/1"
    assert [c[0] for c in recorder.calls] == ["versioned", "echo"]
    assert counts(client, "mirror")[("ab", "echo", "error")] == 1


def test_mirror_copies_beyond_the_bound_are_dropped() -> None:
    client = client_for(split(1, mirror={"model": "echo", "percent": 100, "max_in_flight": 1}))
    recorder = Recorder(hold={"echo"})
    client._unary = recorder  # type: ignore[method-assign]

    async def run() -> None:
        await _infer(client)
        await asyncio.sleep(0)  # the first copy starts, and waits
        await _infer(client)  # the bound is reached: this copy is dropped
        assert counts(client, "mirror") == {("ab", "echo", "dropped"): 1}
        recorder.release.set()
        await asyncio.gather(*client._mirrors)

    asyncio.run(run())
    assert counts(client, "mirror")[("ab", "echo", "ok")] == 1
    assert client.routes["ab"].mirror_in_flight == 0


def test_openai_body_names_the_target() -> None:
    client = client_for({"assistant": {"targets": [{"model": "tiny-llm", "weight": 1}]}})
    seen: list[Any] = []

    async def unary(method: Callable[..., Any], model: str, arg: Any, **kw: Any) -> Any:
        seen.append(arg)
        return {"model": model}

    client._unary = unary  # type: ignore[method-assign]
    call = OpenAICall("completions", {"model": "assistant", "prompt": "hi"})
    assert asyncio.run(client.openai_call(call)) == {"model": "tiny-llm"}
    assert seen[0].body == {"model": "tiny-llm", "prompt": "hi"}
