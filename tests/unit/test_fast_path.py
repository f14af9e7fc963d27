"""The inference routes' ASGI path (``app.http.fast_path``) in the router app, with the
replicas' handles faked (the same harness as test_security.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.http.app import create_http_app
from app.http.fast_path import match
from app.observability import RouterMetrics
from tests.unit.test_security import ECHO_KEY, bearer, key_file, make_app


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/echo/infer", ("echo", None, "infer")),
        ("/v2/models/echo/versions/2/generate", ("echo", "2", "generate")),
        ("/v2/models/m/generate_stream", ("m", None, "generate_stream")),
        ("/v2/models/echo/ready", None),
        ("/v2/models//infer", None),
        ("/v2/models/echo/versions//infer", None),
        ("/v2/models/echo/infer/", None),
        ("/v2/models/echo/other/2/infer", None),
        ("/v1/models/echo/infer", None),
        ("/v2/models/stats", None),
    ],
)
def test_match(path: str, expected: object) -> None:
    assert match(path) == expected


async def test_answers_and_counts_like_the_fastapi_routes(tmp_path: Path) -> None:
    app = make_app({"api_keys_file": str(key_file(tmp_path))})
    app.state.router_metrics = RouterMetrics()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.post("/v2/models/echo/versions/1/infer", json={}, headers=bearer(ECHO_KEY))
        assert ok.status_code == 200 and ok.json() == {"outputs": []}
        assert ok.headers["content-type"] == "application/json"
        generated = await c.post("/v2/models/echo/generate", json={}, headers=bearer(ECHO_KEY))
        assert generated.status_code == 200 and generated.json() == {"name": "echo"}
        wrong_method = await c.get("/v2/models/echo/infer", headers=bearer(ECHO_KEY))
        assert wrong_method.status_code == 405
        assert wrong_method.json() == {"error": "Method Not Allowed"}
        assert wrong_method.headers["allow"] == "POST"
        unknown = await c.post("/v2/models/nope/infer", json={}, headers=bearer(ECHO_KEY))
        assert unknown.status_code == 403  # outside the key's scope, before existence
        bad_timeout = await c.post(
            "/v2/models/echo/infer", json={}, headers={**bearer(ECHO_KEY), "X-Request-Timeout": "x"}
        )
        assert bad_timeout.status_code == 400 and "X-Request-Timeout" in bad_timeout.json()["error"]
        gzip = await c.post(
            "/v2/models/echo/infer",
            content=b"{}",
            headers={**bearer(ECHO_KEY), "Content-Encoding": "gzip"},
        )
        assert gzip.status_code == 400 and "compressed" in gzip.json()["error"]
        bad_length = await c.post(
            "/v2/models/echo/infer",
            content=b"{}",
            headers={**bearer(ECHO_KEY), "Inference-Header-Content-Length": "abc"},
        )
        assert bad_length.status_code == 400, bad_length.text
    text = app.state.router_metrics.render()
    for status, count in ((200, 1), (405, 1), (403, 1), (400, 3)):
        line = f'triton_serve_requests_total{{model="echo",route="infer",status="{status}"}}'
        if status == 403:
            line = line.replace('"echo"', '"nope"')
        assert f"{line} {count}.0" in text, text
    assert 'model="echo",route="generate",status="200"} 1.0' in text


async def test_body_limit_is_413_declared_or_streamed() -> None:
    app = make_app({})
    plane = app.state.dataplane
    limit = 1024
    plane.cfg = plane.cfg.model_copy(update={"max_request_body_bytes": limit})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        declared = await c.post("/v2/models/echo/infer", content=b"x" * (limit + 1))
        assert declared.status_code == 413 and "exceeds the limit" in declared.json()["error"]

        async def chunks() -> object:
            for _ in range(3):
                yield b"x" * (limit // 2 + 1)

        streamed = await c.post("/v2/models/echo/infer", content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413


def test_openapi_still_describes_the_inference_routes() -> None:
    paths = create_http_app().openapi()["paths"]
    for kind in ("infer", "generate", "generate_stream"):
        for path in (
            f"/v2/models/{{model}}/{kind}",
            f"/v2/models/{{model}}/versions/{{version}}/{kind}",
        ):
            operation = paths[path]["post"]
            assert "requestBody" in operation and "503" in operation["responses"]
            names = [p["name"] for p in operation["parameters"]]
            assert names == (["model", "version"] if "versions" in path else ["model"])
    assert "get" in paths["/v2/models/{model}"]  # FastAPI's own routes are still there
