"""API keys, scopes and limits: the key file, the limiter, and the router app with them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from ray.serve.exceptions import BackPressureError

from app.config import AppConfig
from app.contract import InferResult
from app.http.app import create_http_app
from app.router.client import gate_limits
from app.router.dataplane import DataPlane
from app.router.repository import RepositoryExtension
from app.router.traffic_client import TrafficClient
from app.security.config import KeyLimits, SecurityConfig
from app.security.guard import Guard
from app.security.keys import digest_of, load_key_file
from app.security.limits import DeploymentGate, KeyLimiter, TokenBucket
from app.state_store import ReplicaReport

ADMIN_KEY = "admin-key-0123456789abcdef"
ECHO_KEY = "echo-only-key-0123456789"
SLOW_KEY = "rate-limited-key-0123456789"
MODELS = ["echo", "streamer", "secret"]


def key_file(tmp_path: Path, **extra: Any) -> Path:
    keys = [
        {"name": "admin", "sha256": digest_of(ADMIN_KEY), "models": "*", "repository": True},
        {"name": "echo-team", "key": ECHO_KEY, "models": ["echo", "streamer"]},
        {"name": "slow", "key": SLOW_KEY, "models": "*", "requests_per_s": 1, "burst": 2},
    ]
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": keys, **extra}))
    return path


# ---- the key file ----


def test_key_file_keeps_digests_only(tmp_path: Path) -> None:
    ring = load_key_file(str(key_file(tmp_path)), KeyLimits())
    assert len(ring) == 3
    assert ring.lookup(ADMIN_KEY) is not None and ring.lookup(ADMIN_KEY).repository  # type: ignore[union-attr]
    echo = ring.lookup(ECHO_KEY)
    assert echo is not None and echo.may_use("echo") and not echo.may_use("secret")
    assert ring.lookup("not-a-key-0123456789") is None
    assert ECHO_KEY not in repr(vars(ring))


def test_json_key_file_and_default_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"name": "a", "key": ECHO_KEY, "models": "*"}]}))
    ring = load_key_file(str(path), KeyLimits(max_concurrent=3))
    key = ring.lookup(ECHO_KEY)
    assert key is not None and key.models is None and key.limits.max_concurrent == 3


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ([{"name": "a", "models": "*"}], "exactly one of 'key' and 'sha256'"),
        ([{"name": "a", "key": ECHO_KEY, "sha256": "0" * 64}], "exactly one"),
        ([{"name": "a", "key": "short"}], "keys.0.key"),
        ([{"name": "a", "sha256": "xyz"}], "64 hexadecimal"),
        ([{"name": "a", "key": ECHO_KEY, "models": ["../etc"]}], "models[0]"),
        (
            [{"name": "a", "key": ECHO_KEY}, {"name": "a", "key": ADMIN_KEY}],
            "'a' is used twice",
        ),
        (
            [{"name": "a", "key": ECHO_KEY}, {"name": "b", "sha256": digest_of(ECHO_KEY)}],
            "listed twice",
        ),
        ([{"name": "a", "key": ECHO_KEY, "scopes": ["x"]}], "scopes"),
    ],
)
def test_bad_key_files_name_the_field(tmp_path: Path, keys: Any, fragment: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": keys}))
    with pytest.raises(ValueError, match=r"security\.api_keys_file") as info:
        load_key_file(str(path), KeyLimits())
    assert fragment in str(info.value)


def test_unreadable_or_unparsable_key_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        load_key_file(str(tmp_path / "missing.yaml"), KeyLimits())
    bad = tmp_path / "keys.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_key_file(str(bad), KeyLimits())


def test_security_config_is_one_strict_field() -> None:
    base = {"model_repository": "m", "deployments": [{"name": "d", "models": ["echo"]}]}
    assert AppConfig.model_validate(base).security.api_keys_file is None
    cfg = AppConfig.model_validate(
        {**base, "security": {"api_keys_file": "/k.yaml", "default_limits": {"burst": 3}}}
    )
    assert cfg.security.default_limits.burst == 3
    with pytest.raises(ValidationError, match=r"security\.api_key_file"):
        AppConfig.model_validate({**base, "security": {"api_key_file": "/k.yaml"}})
    with pytest.raises(ValidationError, match=r"security\.default_limits\.requests_per_s"):
        AppConfig.model_validate({**base, "security": {"default_limits": {"requests_per_s": 0}}})


# ---- limits ----


def test_token_bucket_refills_and_says_when() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, updated=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token back after 0.5 s
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_limiter_divides_among_router_replicas() -> None:
    limiter = KeyLimiter("k", KeyLimits(requests_per_s=10, burst=10, max_concurrent=8), share=2)
    assert limiter.bucket is not None and limiter.bucket.rate == 5 and limiter.bucket.capacity == 5
    assert limiter.max_concurrent == 4
    slots = [limiter.admit() for _ in range(4)]
    with pytest.raises(Exception, match="4 requests in flight"):
        limiter.admit()
    slots[0].release()
    slots[0].release()  # idempotent
    assert limiter.in_flight == 3


# ---- the router app ----


class FakeResponse:
    def __init__(self, work: Callable[[], Any]) -> None:
        self.task = asyncio.ensure_future(work())
        self.cancelled = False

    def __await__(self) -> Any:
        return self.task.__await__()

    def cancel(self) -> None:
        self.cancelled = True
        self.task.cancel()


class ShedGenerator:
    """What Serve's handle gives for a stream shed for backpressure: ``cancel()``
    raises the same error again."""

    def __anext__(self) -> Any:
        raise BackPressureError(num_queued_requests=2, max_queued_requests=2)

    def cancel(self) -> None:
        raise BackPressureError(num_queued_requests=2, max_queued_requests=2)


class FakeHandle:
    def __init__(self, calls: list[FakeResponse], gate: asyncio.Event) -> None:
        self.calls = calls
        self.gate = gate
        self.method = ""

    def options(self, method_name: str, stream: bool = False) -> FakeHandle:
        handle = FakeHandle(self.calls, self.gate)
        handle.method = method_name
        return handle

    def remote(self, call: Any) -> Any:
        if self.method == "generate_stream":
            return ShedGenerator()

        async def work() -> Any:
            if self.method == "infer":
                body = json.loads(call.body or b"{}")
                if body.get("wait"):
                    await self.gate.wait()
                return InferResult(b'{"outputs":[]}')
            if self.method == "model_statistics":
                return {"model_stats": [{"name": m} for m in MODELS]}
            return {"name": call.model}

        response = FakeResponse(work)
        self.calls.append(response)
        return response


class FakeStore:
    class _Reports:
        async def remote(self) -> list[ReplicaReport]:
            models = {m: {"state": "READY", "reason": "", "version": "1"} for m in MODELS}
            return [ReplicaReport("r", "all", models, "", "2.51")]

    reports = _Reports()


def make_app(security: dict[str, Any], request_timeout_s: float = 30, **deployment: Any) -> Any:
    cfg = AppConfig.model_validate(
        {
            "model_repository": "m",
            "router": {"request_timeout_s": request_timeout_s},
            "deployments": [{"name": "all", "models": MODELS, **deployment}],
            "security": security,
        }
    )
    plane = DataPlane.__new__(DataPlane)
    plane.cfg, plane.app_name, plane.owner = cfg, "t", {m: "all" for m in MODELS}
    plane.calls, plane.gate = [], asyncio.Event()  # type: ignore[attr-defined]
    plane.replicas = TrafficClient(cfg, {"all": FakeHandle(plane.calls, plane.gate)})  # type: ignore[attr-defined]
    plane.store = FakeStore()
    plane.repository = RepositoryExtension(plane)
    plane._reports, plane._reports_at, plane._reports_lock = [], 0.0, asyncio.Lock()
    app = create_http_app()
    app.state.dataplane = plane
    app.state.guard = Guard(cfg.security)
    return app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app({"api_keys_file": str(key_file(tmp_path))})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


INFER = "/v2/models/echo/infer"


async def test_health_is_open_and_the_rest_needs_a_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    for path in ("/v2", "/v2/models", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status_code == 401, path
    missing = await client.post(INFER, content=b"{}")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]
    invalid = await client.post(INFER, content=b"{}", headers=bearer("wrong-key-0123456789"))
    assert invalid.status_code == 401 and invalid.json() == {"error": "invalid API key"}
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]
    basic = await client.post(INFER, content=b"{}", headers={"Authorization": f"Basic {ECHO_KEY}"})
    assert basic.status_code == 401
    ok = await client.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))
    assert ok.status_code == 200, ok.text


async def test_openai_paths_get_openai_error_objects(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={"model": "echo"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_model_scope(client: httpx.AsyncClient) -> None:
    denied = await client.post("/v2/models/secret/infer", content=b"{}", headers=bearer(ECHO_KEY))
    assert denied.status_code == 403 and "secret" in denied.json()["error"]
    meta = await client.get("/v2/models/secret", headers=bearer(ECHO_KEY))
    assert meta.status_code == 403
    # Out-of-scope names are refused before the unknown-model check: no existence leak.
    unknown = await client.get("/v2/models/nope", headers=bearer(ECHO_KEY))
    assert unknown.status_code == 403
    assert (await client.get("/v2/models/nope", headers=bearer(ADMIN_KEY))).status_code == 404
    listing = (await client.get("/v2/models", headers=bearer(ECHO_KEY))).json()["models"]
    assert [m["name"] for m in listing] == ["echo", "streamer"]
    stats = (await client.get("/v2/models/stats", headers=bearer(ECHO_KEY))).json()
    assert [s["name"] for s in stats["model_stats"]] == ["echo", "streamer"]


async def test_repository_scope(client: httpx.AsyncClient) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/echo/unload"):
        refused = await client.post(path, headers=bearer(ECHO_KEY))
        assert refused.status_code == 403, path
        assert "repository" in refused.json()["error"]
    index = await client.post("/v2/repository/index", headers=bearer(ADMIN_KEY))
    assert index.status_code == 200 and len(index.json()) == 3
    entry = await client.get("/v2/repository/models/echo", headers=bearer(ADMIN_KEY))
    assert entry.json() == {"name": "echo", "state": "READY", "versions": ["1"], "reason": ""}
    refused = await client.get("/v2/repository/models/echo", headers=bearer(ECHO_KEY))
    assert refused.status_code == 403
    unknown = await client.get("/v2/repository/models/nope", headers=bearer(ADMIN_KEY))
    assert unknown.status_code == 404


async def test_rate_limit_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.post(INFER, content=b"{}", headers=bearer(SLOW_KEY))) for _ in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["retry-after"] == "1"
    assert "rate limit" in statuses[2].json()["error"]
    # Other keys are not affected.
    assert (await client.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))).status_code == 200


async def test_concurrency_limit_holds_until_the_request_ends(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump(
            {"keys": [{"name": "one", "key": ECHO_KEY, "models": "*", "max_concurrent": 1}]}
        )
    )
    app = make_app({"api_keys_file": str(path)})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first = asyncio.create_task(c.post(INFER, json={"wait": True}, headers=bearer(ECHO_KEY)))
        for _ in range(500):  # until the first request holds the key's only slot
            if app.state.dataplane.calls:
                break
            await asyncio.sleep(0.01)
        second = await c.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        app.state.dataplane.gate.set()
        assert (await first).status_code == 200
        assert (await c.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))).status_code == 200


async def test_key_file_reload(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    app = make_app({"api_keys_file": str(path), "reload_interval_s": 0.01})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))).status_code == 200
        new_key = "rotated-key-0123456789ab"
        path.write_text(yaml.safe_dump({"keys": [{"name": "n", "key": new_key, "models": "*"}]}))
        os.utime(path, (1e9, 1e9))
        await asyncio.sleep(0.05)
        assert (await c.post(INFER, content=b"{}", headers=bearer(ECHO_KEY))).status_code == 401
        assert (await c.post(INFER, content=b"{}", headers=bearer(new_key))).status_code == 200
        path.write_text("keys: [")  # broken: the previous keys stay
        os.utime(path, (2e9, 2e9))
        await asyncio.sleep(0.05)
        assert (await c.post(INFER, content=b"{}", headers=bearer(new_key))).status_code == 200


async def test_auth_off_by_default_and_metrics_can_be_open(tmp_path: Path) -> None:
    app = make_app({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post(INFER, content=b"{}")).status_code == 200
        assert (await c.post("/v2/repository/index")).status_code == 200
    guard = Guard(SecurityConfig(api_keys_file=str(key_file(tmp_path)), metrics_require_key=False))
    key, _ = await guard.admit("/metrics", None)
    assert key is None


async def test_request_timeout_header_is_408_and_cancels(tmp_path: Path) -> None:
    app = make_app({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(INFER, json={"wait": True}, headers={"X-Request-Timeout": "0.1"})
        assert response.status_code == 408, response.text
        assert app.state.dataplane.calls[-1].cancelled
        bad = await c.post(INFER, content=b"{}", headers={"X-Request-Timeout": "soon"})
        assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]
        assert (
            await c.post(INFER, content=b"{}", headers={"X-Request-Timeout": "-1"})
        ).status_code == 400


async def test_shed_stream_is_json_503_with_retry_after() -> None:
    """Serve's generator re-raises BackPressureError from cancel(); that must not
    escape to Serve's plain-text handler."""
    app = make_app({})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/v2/models/streamer/generate_stream", json={})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "queue is full" in response.json()["error"]


def test_openapi_describes_v2_bodies() -> None:
    spec = create_http_app().openapi()
    infer = spec["paths"]["/v2/models/{model}/infer"]["post"]
    body = infer["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["inputs"]["items"]["required"] == [
        "name",
        "shape",
        "datatype",
    ]
    assert "application/octet-stream" in body
    assert "429" in infer["responses"] and "503" in infer["responses"]
    assert "$defs" not in json.dumps(spec)


async def test_paths_are_matched_under_a_route_prefix(tmp_path: Path) -> None:
    app = make_app({"api_keys_file": str(key_file(tmp_path))})
    transport = httpx.ASGITransport(app=app, root_path="/secure")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/secure/v2/health/live")).status_code == 200
        response = await c.post("/secure/v1/embeddings", json={})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_gate_limits_are_what_serve_would_accept() -> None:
    cfg = AppConfig.model_validate(
        {
            "model_repository": "m",
            "deployments": [
                {"name": "a", "models": ["a"], "max_ongoing_requests": 4, "max_queued_requests": 8},
                {"name": "b", "models": ["b"], "num_replicas": 3, "max_ongoing_requests": 4},
                {
                    "name": "c",
                    "models": ["c"],
                    "max_ongoing_requests": 5,
                    "autoscaling": {
                        "min_replicas": 0,
                        "max_replicas": 2,
                        "target_ongoing_requests": 2,
                    },
                },
            ],
        }
    )
    a, b, c = cfg.deployments
    assert gate_limits(a, 1) == (4, 8)
    assert gate_limits(b, 1) == (12, 256) and gate_limits(b, 2) == (6, 256)
    assert gate_limits(c, 1) == (None, 10 + 256)


async def test_gate_holds_a_line_and_hands_places_over() -> None:
    gate = DeploymentGate(running=1, queued=2)
    await gate.enter("m")
    second = asyncio.create_task(gate.enter("m"))
    third = asyncio.create_task(gate.enter("m"))
    await asyncio.sleep(0)
    with pytest.raises(Exception, match="queue is full"):
        await gate.enter("m")
    third.cancel()  # a caller that gives up leaves the line
    await asyncio.sleep(0)
    assert len(gate.waiters) == 1
    gate.leave()
    await second  # the place went to the next in line
    assert gate.running == 1 and not gate.waiters
    gate.leave()
    assert gate.running == 0
    autoscaled = DeploymentGate(running=None, queued=1)
    await autoscaled.enter("m")
    with pytest.raises(Exception, match="queue is full"):
        await autoscaled.enter("m")


async def test_router_sheds_beyond_the_line() -> None:
    """One replica taking 1 and queueing 1: the first infer runs, the second waits in
    the router's line, the third is shed at once; metadata calls are never held."""
    app = make_app({}, max_ongoing_requests=1, max_queued_requests=1)
    plane = app.state.dataplane
    gate = plane.replicas.gates["all"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        held = [asyncio.create_task(c.post(INFER, json={"wait": True})) for _ in range(2)]
        for _ in range(500):
            if gate.in_flight == 2:
                break
            await asyncio.sleep(0.01)
        assert len(plane.calls) == 1  # the second has not reached Serve
        shed = await c.post(INFER, content=b"{}")
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert "queue is full" in shed.json()["error"]
        assert (await c.get("/v2/models/echo")).status_code == 200
        plane.gate.set()
        assert [(await t).status_code for t in held] == [200, 200]
        assert gate.in_flight == 0
        assert (await c.post(INFER, content=b"{}")).status_code == 200
        # A stream that fails before its first chunk gives its place back too.
        assert (await c.post("/v2/models/streamer/generate_stream", json={})).status_code == 503
        assert gate.in_flight == 0


async def test_waiting_in_line_counts_toward_the_timeout() -> None:
    app = make_app({}, max_ongoing_requests=1, max_queued_requests=4)
    gate = app.state.dataplane.replicas.gates["all"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first = asyncio.create_task(c.post(INFER, json={"wait": True}))
        for _ in range(500):
            if gate.running == 1:
                break
            await asyncio.sleep(0.01)
        waited = await c.post(INFER, content=b"{}", headers={"X-Request-Timeout": "0.2"})
        assert waited.status_code == 408
        assert not gate.waiters
        app.state.dataplane.gate.set()
        assert (await first).status_code == 200
        assert gate.in_flight == 0


async def test_refused_requests_are_counted_under_their_route(tmp_path: Path) -> None:
    from app.observability import RouterMetrics

    app = make_app({"api_keys_file": str(key_file(tmp_path))})
    app.state.router_metrics = RouterMetrics()
    transport = httpx.ASGITransport(app=app, root_path="/secure")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.post(f"/secure{INFER}", content=b"{}")).status_code == 401
    text = app.state.router_metrics.render()
    assert 'triton_serve_requests_total{model="echo",route="infer",status="401"} 1.0' in text
