"""A traffic route whose targets are pool models: listed like a pool model before
either loads, then READY, and each request is served by the target it was sent to,
loaded on demand."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from app.residency.config import NOT_LOADED_REASON
from tests.integration.residency.conftest import infer

TARGETS = ("pool-03", "pool-04")


def _output(response: object) -> float:
    return float(response.json()["outputs"][0]["data"][0])  # type: ignore[attr-defined]


def _listed(url: str) -> dict[str, Any]:
    models = httpx.get(f"{url}/v2/models", timeout=30).json()["models"]
    return next(m for m in models if m["name"] == "pool-split")


def test_split_between_pool_models(pool_url: str) -> None:
    entry = _listed(pool_url)
    if entry["state"] != "READY":  # earlier tests may have loaded a target
        assert entry["reason"] == NOT_LOADED_REASON, entry
    expected = {}
    for model in TARGETS:
        direct = infer(pool_url, model)
        assert direct.status_code == 200, direct.text
        expected[model] = _output(direct)
    assert expected["pool-03"] != expected["pool-04"]  # each adds its own offset

    served: Counter[str] = Counter()
    for _ in range(16):
        response = infer(pool_url, "pool-split")
        assert response.status_code == 200, response.text
        target = response.headers["X-Triton-Serve-Target"]
        assert _output(response) == expected[target], (target, response.json())
        served[target] += 1
    assert set(served) == set(TARGETS), served
    assert _listed(pool_url)["state"] == "READY"
