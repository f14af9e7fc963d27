"""API keys on a real stack: the secured application under /secure (see conftest)."""

from __future__ import annotations

import httpx

from tests.integration.serve.conftest import ADMIN_KEY, LIMITED_KEY, OTHER_TEAM_KEY

BODY = {"inputs": [{"name": "INPUT_FP32", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_is_open(secure_url: str) -> None:
    assert httpx.get(f"{secure_url}/v2/health/live").status_code == 200
    assert httpx.get(f"{secure_url}/v2/health/ready", timeout=30).status_code == 200


def test_missing_or_invalid_key_is_401(secure_url: str) -> None:
    for headers in ({}, bearer("not-a-valid-key-0123456789"), {"Authorization": "Basic eDp5"}):
        response = httpx.post(
            f"{secure_url}/v2/models/echo/infer", json=BODY, headers=headers, timeout=30
        )
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert set(response.json()) == {"error"}
    listing = httpx.get(f"{secure_url}/v2/models")
    assert listing.status_code == 401


def test_openai_paths_answer_with_openai_errors(secure_url: str) -> None:
    response = httpx.post(
        f"{secure_url}/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"


def test_key_with_scope_infers(secure_url: str) -> None:
    response = httpx.post(
        f"{secure_url}/v2/models/echo/infer", json=BODY, headers=bearer(ADMIN_KEY), timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0]


def test_model_outside_the_key_scope_is_403(secure_url: str) -> None:
    url = f"{secure_url}/v2/models/echo"
    infer = httpx.post(f"{url}/infer", json=BODY, headers=bearer(OTHER_TEAM_KEY), timeout=30)
    assert infer.status_code == 403
    assert "other-team" in infer.json()["error"]
    assert httpx.get(url, headers=bearer(OTHER_TEAM_KEY), timeout=30).status_code == 403
    listing = httpx.get(f"{secure_url}/v2/models", headers=bearer(OTHER_TEAM_KEY), timeout=30)
    assert listing.status_code == 200 and listing.json()["models"] == []


def test_repository_api_needs_its_scope(secure_url: str) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/echo/unload"):
        response = httpx.post(f"{secure_url}{path}", headers=bearer(OTHER_TEAM_KEY), timeout=30)
        assert response.status_code == 403, path
    index = httpx.post(f"{secure_url}/v2/repository/index", headers=bearer(ADMIN_KEY), timeout=30)
    assert index.status_code == 200
    assert [m["name"] for m in index.json()] == ["echo"]
    entry = f"{secure_url}/v2/repository/models/echo"
    assert httpx.get(entry, headers=bearer(OTHER_TEAM_KEY), timeout=30).status_code == 403
    assert httpx.get(entry, headers=bearer(ADMIN_KEY), timeout=30).json()["state"] == "READY"


def test_rate_limit_is_429_with_retry_after(secure_url: str) -> None:
    url = f"{secure_url}/v2/models/echo/infer"
    first = httpx.post(url, json=BODY, headers=bearer(LIMITED_KEY), timeout=30)
    second = httpx.post(url, json=BODY, headers=bearer(LIMITED_KEY), timeout=30)
    assert first.status_code == 200, first.text
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert "rate limit" in second.json()["error"]
