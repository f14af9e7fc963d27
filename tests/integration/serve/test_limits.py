"""Timeouts cancel work in the engine; aggregate endpoints do not wait on unplaced models."""

from __future__ import annotations

import time

import httpx

X = {"name": "INPUT_FP32", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}


def _echo_compute_s(url: str) -> float:
    response = httpx.get(f"{url}/v2/models/echo/stats", timeout=30)
    stats = response.json()["model_stats"][0]["inference_stats"]
    return float(stats["compute_infer"]["ns"]) / 1e9


def test_request_timeout_is_408_and_stops_the_engine(serve_url: str) -> None:
    """echo holds its one instance for ``delay_ms`` unless the request is cancelled:
    after the 408, the next request runs at once and the timed-out one has used
    about 0.5 s of compute, not 4 s."""
    before = _echo_compute_s(serve_url)
    started = time.monotonic()
    response = httpx.post(
        f"{serve_url}/v2/models/echo/infer",
        json={"inputs": [X], "parameters": {"delay_ms": 4000}},
        headers={"X-Request-Timeout": "0.5"},
        timeout=30,
    )
    assert response.status_code == 408, response.text
    assert "did not answer in time" in response.json()["error"]
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    follow_up = httpx.post(f"{serve_url}/v2/models/echo/infer", json={"inputs": [X]}, timeout=30)
    assert follow_up.status_code == 200
    assert time.monotonic() - started < 2.0, "echo was still busy with the timed-out request"
    time.sleep(0.5)
    assert _echo_compute_s(serve_url) - before < 2.5


def test_invalid_timeout_header_is_400(serve_url: str) -> None:
    response = httpx.post(
        f"{serve_url}/v2/models/echo/infer",
        json={"inputs": [X]},
        headers={"X-Request-Timeout": "0"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "X-Request-Timeout" in response.json()["error"]


def test_statistics_skip_deployments_without_replicas(serve_url: str) -> None:
    """The 'big' deployment cannot be placed; /v2/models/stats answers without it."""
    started = time.monotonic()
    response = httpx.get(f"{serve_url}/v2/models/stats", timeout=60)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 15
    names = {s["name"] for s in response.json()["model_stats"]}
    assert {"echo", "streamer"} <= names and "versioned" not in names
