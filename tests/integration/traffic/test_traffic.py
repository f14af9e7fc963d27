"""Public model names on every protocol: the split, the target named on the answer
(header / trailing metadata), listings, the counters, the mirror leaving the
primary's answer alone, and new weights applied under load without a failure."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import openai
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.integration.traffic.conftest import TRAFFIC

HEADER = "X-Triton-Serve-Target"
X = [1.0, 2.0, 3.0]


def infer_body(values: list[float] = X) -> dict[str, Any]:
    return {
        "inputs": [{"name": "INPUT0", "shape": [len(values)], "datatype": "FP32", "data": values}]
    }


def version_of(output: list[float], values: list[float] = X) -> int:
    """``versioned`` multiplies by its version: the answer says who served it."""
    factors = {round(o / v) for o, v in zip(output, values, strict=True)}
    assert len(factors) == 1, output
    return factors.pop()


def infer(url: str, model: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/models/{model}/infer", json=infer_body(), headers=headers, timeout=60
    )


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- KServe over HTTP ----


def test_infer_reaches_both_targets_and_names_the_one_that_served(traffic_url: str) -> None:
    seen: Counter[str] = Counter()
    for _ in range(60):
        response = infer(traffic_url, "canary")
        assert response.status_code == 200, response.text
        target = response.headers[HEADER]
        body = response.json()
        assert body["model_name"] == "versioned"
        version = version_of(body["outputs"][0]["data"])
        assert target == f"versioned/{version}"  # the header names who answered
        seen[target] += 1
    assert set(seen) == {"versioned/1", "versioned/2"}, seen
    assert seen["versioned/1"] > seen["versioned/2"], seen  # 70/30


def test_plain_models_carry_no_target_header(traffic_url: str) -> None:
    response = infer(traffic_url, "versioned")
    assert response.status_code == 200 and HEADER not in response.headers


def test_generate_and_generate_stream_reach_the_split(traffic_url: str) -> None:
    seen: set[str] = set()
    for _ in range(30):
        response = httpx.post(
            f"{traffic_url}/v2/models/canary/generate", json={"INPUT0": X}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.headers[HEADER] == f"versioned/{version_of(response.json()['OUTPUT0'])}"
        seen.add(response.headers[HEADER])
    assert seen == {"versioned/1", "versioned/2"}
    with httpx.stream(
        "POST",
        f"{traffic_url}/v2/models/sticky/generate_stream",
        json={"INPUT0": X},
        headers={"X-Session-Id": "stream-user"},
        timeout=60,
    ) as stream:
        assert stream.status_code == 200
        target = stream.headers[HEADER]
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert events and all(f"versioned/{version_of(e['OUTPUT0'])}" == target for e in events)


def test_sticky_header_always_reaches_the_same_target(traffic_url: str) -> None:
    chosen: dict[str, set[str]] = {}
    for session in range(12):
        for _ in range(4):
            response = infer(traffic_url, "sticky", **{"X-Session-Id": f"user-{session}"})
            assert response.status_code == 200, response.text
            chosen.setdefault(f"user-{session}", set()).add(response.headers[HEADER])
    assert all(len(targets) == 1 for targets in chosen.values()), chosen
    assert {t for targets in chosen.values() for t in targets} == {"versioned/1", "versioned/2"}


def test_listings_metadata_and_errors_of_a_public_name(traffic_url: str) -> None:
    listing = httpx.get(f"{traffic_url}/v2/models", timeout=30).json()["models"]
    states = {m["name"]: m["state"] for m in listing}
    assert all(states.get(name) == "READY" for name in TRAFFIC), states
    metadata = httpx.get(f"{traffic_url}/v2/models/canary", timeout=30)
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "versioned"  # the first target answers
    assert [i["name"] for i in metadata.json()["inputs"]] == ["INPUT0"]
    config = httpx.get(f"{traffic_url}/v2/models/canary/config", timeout=30)
    assert config.status_code == 200 and config.json()["name"] == "versioned"
    assert httpx.get(f"{traffic_url}/v2/models/canary/ready", timeout=30).status_code == 200
    versioned = httpx.post(
        f"{traffic_url}/v2/models/canary/versions/1/infer", json=infer_body(), timeout=30
    )
    assert versioned.status_code == 404 and "no versions of its own" in versioned.json()["error"]
    entry = httpx.get(f"{traffic_url}/v2/repository/models/canary", timeout=30)
    assert entry.status_code == 404 and "public name" in entry.json()["error"]
    unload = httpx.post(f"{traffic_url}/v2/repository/models/canary/unload", timeout=30)
    assert unload.status_code == 404
    assert httpx.get(f"{traffic_url}/v2/models/versioned/ready", timeout=30).status_code == 200


def test_counters_count_routed_requests_per_target(traffic_url: str) -> None:
    before = metric(traffic_url, "triton_serve_traffic_requests_total", route="sticky")
    for _ in range(5):
        assert infer(traffic_url, "sticky", **{"X-Session-Id": "counted"}).status_code == 200
    target = infer(traffic_url, "sticky", **{"X-Session-Id": "counted"}).headers[HEADER]
    after = metric(traffic_url, "triton_serve_traffic_requests_total", route="sticky")
    assert after - before == 6
    assert (
        metric(traffic_url, "triton_serve_traffic_requests_total", route="sticky", target=target)
        >= 6
    )


# ---- the mirror ----


def test_mirror_gets_copies_and_never_changes_the_primary(traffic_url: str) -> None:
    ok_before = metric(
        traffic_url, "triton_serve_traffic_mirror_total", route="canary", result="ok"
    )
    for _ in range(10):
        response = infer(traffic_url, "canary")
        assert response.status_code == 200
        body = response.json()
        assert body["model_name"] == "versioned"  # the pipeline's answer is discarded
        assert response.headers[HEADER] == f"versioned/{version_of(body['outputs'][0]['data'])}"
    deadline = time.monotonic() + 60
    while (
        metric(traffic_url, "triton_serve_traffic_mirror_total", route="canary", result="ok")
        < ok_before + 10
    ):
        assert time.monotonic() < deadline, "the mirror copies were not all answered"
        time.sleep(0.5)


def test_mirror_errors_are_counted_never_returned(traffic_url: str) -> None:
    before = metric(
        traffic_url, "triton_serve_traffic_mirror_total", route="shadow-fails", result="error"
    )
    for _ in range(5):
        response = infer(traffic_url, "shadow-fails")
        assert response.status_code == 200, response.text
        assert version_of(response.json()["outputs"][0]["data"]) == 2
    deadline = time.monotonic() + 60
    while (
        metric(
            traffic_url, "triton_serve_traffic_mirror_total", route="shadow-fails", result="error"
        )
        < before + 5
    ):
        assert time.monotonic() < deadline, "mirror errors were not counted"
        time.sleep(0.5)


# ---- KServe over gRPC ----


def _request(model: str) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[len(X)])
    tensor.contents.fp32_contents.extend(X)
    return request


def _target(metadata: Any) -> str | None:
    return next((v for k, v in metadata or () if k == HEADER.lower()), None)


def test_grpc_model_infer_names_the_target_in_trailing_metadata(grpc_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        seen: set[str] = set()
        for _ in range(30):
            response, call = stub.ModelInfer.with_call(_request("canary"), timeout=60)
            target = _target(call.trailing_metadata())
            output = list(memoryview(response.raw_output_contents[0]).cast("f"))
            assert target == f"versioned/{version_of(output)}"
            seen.add(target)
        assert seen == {"versioned/1", "versioned/2"}
        metadata = (("x-session-id", "grpc-user"),)
        sticky = {
            _target(
                stub.ModelInfer.with_call(_request("sticky"), metadata=metadata, timeout=60)[
                    1
                ].trailing_metadata()
            )
            for _ in range(5)
        }
        assert len(sticky) == 1 and None not in sticky


def test_grpc_model_stream_infer_reaches_the_split(grpc_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("x-session-id", "stream-user-grpc"),)
        responses = stub.ModelStreamInfer(
            iter([_request("sticky") for _ in range(4)]), metadata=metadata, timeout=60
        )
        versions = set()
        for item in responses:
            assert not item.error_message, item.error_message
            versions.add(
                version_of(list(memoryview(item.infer_response.raw_output_contents[0]).cast("f")))
            )
        assert len(versions) == 1
        assert _target(responses.trailing_metadata()) == f"versioned/{versions.pop()}"


# ---- OpenAI ----


def test_openai_model_field_takes_the_public_name(traffic_url: str) -> None:
    with openai.OpenAI(base_url=f"{traffic_url}/v1", api_key="unused", max_retries=0) as client:
        assert "assistant" in {m.id for m in client.models.list().data}
        assert client.models.retrieve("assistant").id == "assistant"
        raw = client.completions.with_raw_response.create(
            model="assistant", prompt="hi", max_tokens=4
        )
        assert raw.headers[HEADER] == "tiny-llm"
        completion = raw.parse()
        assert completion.choices[0].text is not None
        assert completion.usage is not None and completion.usage.completion_tokens == 4
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="canary", prompt="hi", max_tokens=1)


# ---- new weights under load ----


def test_weight_change_under_load_fails_no_request(
    traffic_url: str, redeploy: Callable[[dict[str, Any]], None]
) -> None:
    """The router's user_config moves ``shift`` from version 1 to version 2 while
    clients keep sending: no request fails, the routers are not replaced (their
    counters keep counting), and then every request reaches version 2."""
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"{traffic_url}/v2/models/shift/infer", json=infer_body())
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    served.append(response.headers[HEADER])

    counted = metric(traffic_url, "triton_serve_traffic_requests_total", route="shift")
    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        moved = {
            **TRAFFIC,
            "shift": {
                "targets": [
                    {"model": "versioned", "version": "1", "weight": 0},
                    {"model": "versioned", "version": "2", "weight": 1},
                ]
            },
        }
        redeploy(moved)
        deadline = time.monotonic() + 120
        while not served or served[-1] != "versioned/2":
            assert time.monotonic() < deadline, "the new weights were not applied"
            time.sleep(0.5)
        mark = len(served)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert served[0] == "versioned/1"
    assert set(served[mark:]) == {"versioned/2"}
    total = metric(traffic_url, "triton_serve_traffic_requests_total", route="shift")
    assert total >= counted + len(served)  # the same routers counted them all
    redeploy(TRAFFIC)


def test_an_invalid_override_is_refused_and_the_routes_stay(
    traffic_url: str, redeploy: Callable[[dict[str, Any]], None]
) -> None:
    """A router user_config naming a model that is not served is refused by the
    routers, which keep serving with their routes (raising would make Serve stop
    them) and count it; the application stays up."""
    rejected = metric(traffic_url, "triton_serve_traffic_config_rejected_total")
    broken = {**TRAFFIC, "canary": {"targets": [{"model": "missing", "weight": 1}]}}
    redeploy(broken)
    deadline = time.monotonic() + 120
    while metric(traffic_url, "triton_serve_traffic_config_rejected_total") < rejected + 1:
        assert time.monotonic() < deadline, "the invalid config was not refused"
        time.sleep(0.5)
    for _ in range(5):
        response = infer(traffic_url, "canary")
        assert response.status_code == 200 and response.headers[HEADER].startswith("versioned/")
    redeploy(TRAFFIC)
