"""The KServe v2 surface through Serve, with the unchanged tritonclient and httpx."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.echo_dtypes import NUMERIC


@pytest.fixture(scope="module")
def client(http_host: str) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(http_host, network_timeout=60)


def test_health_and_metadata(client: triton_http.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_model_ready("echo")
    meta = client.get_server_metadata()
    assert meta["version"].startswith("2.")
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("echo")
    assert model["platform"] == "python"
    assert {"INPUT_FP32", "INPUT_BYTES"} <= {i["name"] for i in model["inputs"]}
    assert client.get_model_config("echo")["max_batch_size"] == 64


@pytest.mark.parametrize("binary", [True, False])
def test_every_dtype(client: triton_http.InferenceServerClient, binary: bool) -> None:
    inputs, expected = [], {}
    for name, dtype in NUMERIC:
        if name == "BF16" and not binary:
            continue  # tritonclient cannot put BF16 in JSON
        data = (np.arange(6).reshape(2, 3) % 5).astype(dtype)
        tensor = triton_http.InferInput(f"INPUT_{name}", list(data.shape), name)
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
        expected[f"OUTPUT_{name}"] = data
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in expected]
    result = client.infer("echo", inputs, outputs=outputs)
    for name, data in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == data.dtype, name
        np.testing.assert_array_equal(got, data)


def test_bytes_and_large_tensor(client: triton_http.InferenceServerClient) -> None:
    strings = np.array([["héllo", ""], ["x" * 5000, "z"]], dtype=object)
    big = np.random.default_rng(1).random((2, 1 << 19), dtype=np.float32)  # 4 MiB
    text = triton_http.InferInput("INPUT_BYTES", [2, 2], "BYTES")
    text.set_data_from_numpy(strings)
    tensor = triton_http.InferInput("INPUT_FP32", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    result = client.infer("echo", [text, tensor])
    assert result.as_numpy("OUTPUT_BYTES")[0, 0] == "héllo".encode()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT_FP32"), big)


def test_ensemble(client: triton_http.InferenceServerClient) -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    tensor = triton_http.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("ensemble_pipeline", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x * 2 + 1)


def test_generate_and_stream(serve_url: str) -> None:
    response = httpx.post(
        f"{serve_url}/v2/models/ensemble_pipeline/generate", json={"INPUT0": [1.0, 3.0]}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["OUTPUT0"] == [3.0, 7.0]

    with httpx.stream(
        "POST", f"{serve_url}/v2/models/streamer/generate_stream", json={"COUNT": 3}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert [e["TEXT"] for e in events] == ["token-0", "token-1", "token-2"]
    assert [e["INDEX"] for e in events] == [0, 1, 2]


def test_stream_error_after_start_is_an_event(serve_url: str) -> None:
    with httpx.stream(
        "POST", f"{serve_url}/v2/models/streamer/generate_stream", json={"COUNT": -1}, timeout=30
    ) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert stream.status_code == 200
    assert "COUNT" in json.loads(lines[-1][6:])["error"]


def test_repository_index_and_statistics(client: triton_http.InferenceServerClient) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index["echo"]["state"] == "READY"
    assert "no_such_model" not in index
    stats = client.get_inference_statistics("echo")["model_stats"]
    assert stats[0]["name"] == "echo"
    assert stats[0]["inference_count"] >= 1


def test_unload_and_load(client: triton_http.InferenceServerClient) -> None:
    client.unload_model("streamer")
    assert not client.is_model_ready("streamer")
    client.load_model("streamer")
    assert client.is_model_ready("streamer")


def test_load_with_config_override(client: triton_http.InferenceServerClient) -> None:
    config = client.get_model_config("ens_scale")
    config["parameters"] = {"note": {"string_value": "overridden"}}
    client.load_model("ens_scale", config=json.dumps(config))
    assert (
        client.get_model_config("ens_scale")["parameters"]["note"]["string_value"] == "overridden"
    )


def test_failed_model_is_reported_while_others_serve(
    client: triton_http.InferenceServerClient, serve_url: str
) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index["invalid_config"]["state"] == "UNAVAILABLE"
    assert "dimension must be integer" in index["invalid_config"]["reason"]
    response = httpx.get(f"{serve_url}/v2/health/ready", timeout=30)
    assert response.status_code == 503
    assert "invalid_config" in response.json()["error"]
    assert client.is_model_ready("echo")


def test_pending_deployment_says_why(serve_url: str) -> None:
    """Four 0.25-GPU deployments fill the only GPU; the 0.5-GPU one cannot be placed."""
    import ray

    assert ray.available_resources().get("GPU", 0) == pytest.approx(0)
    response = httpx.get(f"{serve_url}/v2/models/versioned/ready", timeout=30)
    assert response.status_code == 503
    assert "big" in response.json()["error"]
    assert response.headers["retry-after"] == "5"


def test_metrics_merge_triton_and_router(
    serve_url: str, client: triton_http.InferenceServerClient
) -> None:
    tensor = triton_http.InferInput("INPUT_INT32", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.ones((1, 1), np.int32))
    client.infer("echo", [tensor])
    import time

    time.sleep(2.5)  # replicas report their Triton metrics every 2 s
    text = httpx.get(f"{serve_url}/metrics", timeout=30).text
    triton_lines = [line for line in text.splitlines() if line.startswith("nv_inference_count{")]
    assert any('model="echo"' in line and 'replica="' in line for line in triton_lines)
    assert 'triton_serve_requests_total{model="echo",route="infer",status="200"}' in text


def test_request_id_on_responses(serve_url: str) -> None:
    response = httpx.get(f"{serve_url}/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
