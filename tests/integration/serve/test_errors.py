"""Every client mistake gets Triton's error shape with the right status; never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.serve.conftest import BODY_LIMIT


def _infer(url: str, model: str, body: bytes | str, **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(
        f"{url}/v2/models/{model}/infer", content=content, headers=headers, timeout=30
    )


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    assert message
    return message


FP32_INPUT = {"name": "INPUT_FP32", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        (json.dumps({"inputs": [{**FP32_INPUT, "shape": [1, 3]}]}), "INPUT_FP32"),
        (json.dumps({"inputs": [{**FP32_INPUT, "datatype": "FP99"}]}), "FP99"),
        (json.dumps({"inputs": [{**FP32_INPUT, "shape": [-1, 2]}]}), "INPUT_FP32"),
        (json.dumps({"inputs": [{**FP32_INPUT, "shape": [2**40, 2**40]}]}), "INPUT_FP32"),
        (json.dumps({"inputs": [{**FP32_INPUT, "data": ["a", "b"]}]}), "INPUT_FP32"),
        (json.dumps({"inputs": [{**FP32_INPUT, "datatype": "INT32"}]}), "INPUT_FP32"),
        (json.dumps({"inputs": [{**FP32_INPUT, "name": "NOPE"}]}), "NOPE"),
    ],
)
def test_malformed_infer_is_400(serve_url: str, body: str, fragment: str) -> None:
    assert fragment in _error(_infer(serve_url, "echo", body), 400)


def test_binary_size_mismatch_is_400(serve_url: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT_FP32",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    response = _infer(
        serve_url,
        "echo",
        header + b"\x00" * 8,
        **{"Inference-Header-Content-Length": str(len(header))},
    )
    _error(response, 400)
    response = _infer(serve_url, "echo", header, **{"Inference-Header-Content-Length": "99999"})
    _error(response, 400)


def test_unknown_model_and_version_are_404(serve_url: str) -> None:
    body = json.dumps({"inputs": [FP32_INPUT]})
    assert "no_such_model" in _error(_infer(serve_url, "no_such_model", body), 404)
    assert "no_such_model" in _error(httpx.get(f"{serve_url}/v2/models/no_such_model"), 404)
    response = httpx.post(f"{serve_url}/v2/models/echo/versions/7/infer", content=body, timeout=30)
    assert response.status_code in (400, 404), response.text
    _error(response, response.status_code)
    _error(httpx.get(f"{serve_url}/v2/models/echo/versions/abc"), 400)


def test_body_over_limit_is_413(serve_url: str) -> None:
    response = _infer(serve_url, "echo", b"x" * (BODY_LIMIT + 1))
    assert "limit" in _error(response, 413)


def test_decoupled_model_refuses_plain_infer(serve_url: str) -> None:
    body = json.dumps(
        {"inputs": [{"name": "COUNT", "shape": [1], "datatype": "INT32", "data": [1]}]}
    )
    assert "decoupled" in _error(_infer(serve_url, "streamer", body), 400)


def test_unready_model_is_503_with_retry_after(serve_url: str) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]}]}
    )
    response = _infer(serve_url, "invalid_config", body)
    assert "dimension must be integer" in _error(response, 503)
    assert response.headers["retry-after"] == "5"
    ready = httpx.get(f"{serve_url}/v2/models/invalid_config/ready", timeout=30)
    _error(ready, 503)
    assert ready.headers["retry-after"]


def test_file_overrides_are_refused_by_default(serve_url: str) -> None:
    body = {"parameters": {"file:1/model.py": "cHJpbnQoMSk="}}
    response = httpx.post(f"{serve_url}/v2/repository/models/echo/load", json=body, timeout=30)
    assert "file:" in _error(response, 403)


def test_rejected_config_override_is_400_and_the_model_keeps_serving(serve_url: str) -> None:
    # Triton rejects this config while polling: preferred batch size over the maximum.
    config = '{"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [4]}}'
    body = {"parameters": {"config": config}}
    response = httpx.post(f"{serve_url}/v2/repository/models/echo/load", json=body, timeout=60)
    assert "rejected the config override" in _error(response, 400)
    data = '{"inputs":[{"name":"INPUT_FP32","shape":[1,1],"datatype":"FP32","data":[2]}]}'
    assert _infer(serve_url, "echo", data).status_code == 200


def test_load_of_unconfigured_model_is_404(serve_url: str) -> None:
    response = httpx.post(f"{serve_url}/v2/repository/models/../etc/load", timeout=30)
    assert response.status_code == 404
    response = httpx.post(f"{serve_url}/v2/repository/models/not_configured/load", timeout=30)
    assert "not_configured" in _error(response, 404)


def test_repository_entry_of_one_model(serve_url: str) -> None:
    """``GET /v2/repository/models/<m>``: state, versions and reason, as in the index."""
    echo = httpx.get(f"{serve_url}/v2/repository/models/echo", timeout=30)
    assert echo.status_code == 200, echo.text
    assert echo.json()["name"] == "echo" and echo.json()["state"] == "READY"
    assert echo.json()["versions"], echo.json()
    broken = httpx.get(f"{serve_url}/v2/repository/models/invalid_config", timeout=30).json()
    assert broken["state"] == "UNAVAILABLE" and "dimension must be integer" in broken["reason"]
    unknown = httpx.get(f"{serve_url}/v2/repository/models/not_configured", timeout=30)
    assert "not_configured" in _error(unknown, 404)


def test_generate_errors(serve_url: str) -> None:
    url = f"{serve_url}/v2/models/streamer/generate_stream"
    assert "COUNT" in _error(httpx.post(url, json={}, timeout=30), 400)
    _error(httpx.post(url, content=b"{", timeout=30), 400)


def test_unknown_route_and_method(serve_url: str) -> None:
    _error(httpx.get(f"{serve_url}/v2/nowhere"), 404)
    _error(httpx.get(f"{serve_url}/v2/models/echo/infer"), 405)


def test_bad_requests_do_not_disturb_others(serve_url: str) -> None:
    for _ in range(20):
        _infer(serve_url, "echo", "{broken")
    ok = _infer(serve_url, "echo", json.dumps({"inputs": [FP32_INPUT]}))
    assert ok.status_code == 200
    assert ok.json()["outputs"][0]["data"] == [1.0, 2.0]


async def test_full_queue_is_503_with_retry_after(serve_url: str) -> None:
    """streamer takes 2 requests at a time and queues 2 more; the rest are shed."""
    import asyncio

    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> httpx.Response:
            return await client.post(
                f"{serve_url}/v2/models/streamer/generate_stream",
                json={"COUNT": 3, "DELAY_MS": 500},
            )

        responses = await asyncio.gather(*(one() for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2
    shed = [r for r in responses if r.status_code == 503]
    assert shed, statuses
    assert set(statuses) <= {200, 503}
    for response in shed:
        assert response.headers["retry-after"] == "1"
        assert "queue is full" in response.json()["error"]
