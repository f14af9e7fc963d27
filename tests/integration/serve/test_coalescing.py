"""Coalescing across the router→replica hop (``app.router.coalesce``) on real Serve and
Triton: requests waiting at the router together share one replica call, and each
still gets its own answer, its own error and its own status."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc

from tests.integration.serve.conftest import APP_NAME
from tests.integration.serve.grpc_support import Metadata, echo_input

CONCURRENCY = 32


def _coalesced(url: str, deployment: str = "echo") -> tuple[float, float]:
    """(replica calls, requests they carried) for ``deployment``, from the router."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {}
    for part in ("count", "sum"):
        match = re.search(
            rf'^triton_serve_coalesced_requests_{part}\{{deployment="{deployment}"\}} (\S+)$',
            text,
            re.MULTILINE,
        )
        found[part] = float(match.group(1)) if match else 0.0
    return found["count"], found["sum"]


def _infer(url: str, value: float) -> httpx.Response:
    body = {"inputs": [{"name": "INPUT_FP32", "shape": [1, 2], "datatype": "FP32"}]}
    body["inputs"][0]["data"] = [value, -value]
    return httpx.post(f"{url}/v2/models/echo/infer", json=body, timeout=60)


def test_concurrent_requests_share_replica_calls_and_keep_their_own_answers(
    serve_url: str,
) -> None:
    calls_before, carried_before = _coalesced(serve_url)
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for _ in range(3):
            answers = list(pool.map(lambda v: _infer(serve_url, float(v)), range(CONCURRENCY)))
            assert [a.status_code for a in answers] == [200] * CONCURRENCY
            assert [a.json()["outputs"][0]["data"] for a in answers] == [
                [float(v), -float(v)] for v in range(CONCURRENCY)
            ]
    calls, carried = _coalesced(serve_url)
    assert carried - carried_before == 3 * CONCURRENCY
    # Some replica call carried more than one request.
    assert calls - calls_before < carried - carried_before


def test_a_bad_request_among_coalesced_ones_fails_alone(serve_url: str) -> None:
    def call(i: int) -> httpx.Response:
        if i % 4 == 0:  # a shape that does not match its data: Triton refuses it
            bad = {"name": "INPUT_FP32", "shape": [1, 3], "datatype": "FP32", "data": [1.0]}
            return httpx.post(
                f"{serve_url}/v2/models/echo/infer", json={"inputs": [bad]}, timeout=60
            )
        return _infer(serve_url, float(i))

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(call, range(CONCURRENCY)))
    for i, answer in enumerate(answers):
        if i % 4 == 0:
            assert answer.status_code == 400, answer.text
            assert "error" in answer.json()
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [float(i), -float(i)]


def test_grpc_infer_is_coalesced_too(serve_url: str, grpc_host: str) -> None:
    calls_before, carried_before = _coalesced(serve_url)

    def call(i: int) -> list[float]:
        with triton_grpc.InferenceServerClient(grpc_host) as client:
            client.register_plugin(Metadata(application=APP_NAME))
            data = np.array([[i, i + 0.5]], dtype=np.float32)
            result = client.infer("echo", [echo_input("INPUT_FP32", data, "FP32")])
            return [float(x) for x in result.as_numpy("OUTPUT_FP32").ravel()]

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for _ in range(3):
            answers = list(pool.map(call, range(CONCURRENCY)))
            assert answers == [[float(i), i + 0.5] for i in range(CONCURRENCY)]
    calls, carried = _coalesced(serve_url)
    assert carried - carried_before == 3 * CONCURRENCY
    assert calls - calls_before < carried - carried_before
