"""Triton's generate extension against an LLM with the vLLM backend's interface, and
cancellation of generation when the client goes away."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import tritonclient.http as triton_http

from tests.support import procs

MODEL = "tiny-llm"


def test_generate_as_triton_users_call_it(llm_url: str) -> None:
    body = {"text_input": "Hello!", "max_tokens": 8, "stream": False}
    response = httpx.post(f"{llm_url}/v2/models/{MODEL}/generate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model_name"] == MODEL
    # The vLLM backend returns the prompt followed by the completion.
    assert out["text_output"].startswith("Hello!")
    assert len(out["text_output"]) > len("Hello!")


def test_generate_with_sampling_parameters_json(llm_url: str) -> None:
    params = {"temperature": 0, "max_tokens": 6}
    body = {
        "text_input": "Hi",
        "sampling_parameters": json.dumps(params),
        "exclude_input_in_output": True,
        "return_num_output_tokens": True,
        "return_finish_reason": True,
    }
    first = httpx.post(f"{llm_url}/v2/models/{MODEL}/generate", json=body, timeout=60).json()
    again = httpx.post(f"{llm_url}/v2/models/{MODEL}/generate", json=body, timeout=60).json()
    assert first["text_output"] == again["text_output"]  # temperature 0 is greedy
    assert first["num_output_tokens"] == 6
    assert first["finish_reason"] == "length"


def test_generate_stream_sends_one_event_per_delta(llm_url: str) -> None:
    body = {"text_input": "Go", "stream": True, "max_tokens": 5, "return_num_output_tokens": True}
    url = f"{llm_url}/v2/models/{MODEL}/generate_stream"
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.iter_lines() if line]
    assert sum(e["num_output_tokens"] for e in events) == 5
    assert all("text_output" in e for e in events)


def test_generate_errors_are_kserve_errors(llm_url: str) -> None:
    url = f"{llm_url}/v2/models/{MODEL}/generate"
    unknown = httpx.post(url, json={"text_input": "x", "bogus_knob": 1}, timeout=60)
    assert unknown.status_code == 400
    assert "bogus_knob" in unknown.json()["error"]
    bad_json = httpx.post(url, json={"text_input": "x", "sampling_parameters": "{"}, timeout=60)
    assert bad_json.status_code == 400
    assert "sampling_parameters" in bad_json.json()["error"]
    too_long = httpx.post(url, json={"text_input": "x", "max_tokens": 10**6}, timeout=60)
    assert too_long.status_code == 400


def test_tritonclient_sees_the_llm_as_decoupled(llm_url: str) -> None:
    client = triton_http.InferenceServerClient(llm_url.removeprefix("http://"))
    assert client.is_model_ready(MODEL)
    config = client.get_model_config(MODEL)
    assert config["model_transaction_policy"]["decoupled"] is True
    names = {i["name"] for i in client.get_model_metadata(MODEL)["inputs"]}
    assert {"text_input", "stream", "sampling_parameters", "exclude_input_in_output"} <= names


def _stub_cpu_seconds() -> float:
    """CPU time of the python-backend stub processes serving tiny-llm."""
    return sum(procs.cpu_seconds(pid) for pid, _ in procs.stubs_mentioning("tiny-llm"))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v2/models/tiny-llm/generate_stream"])
def test_client_disconnect_stops_generation(llm_url: str, path: str) -> None:
    """2000 tokens take at least 6 s of CPU; after the client hangs up, the stub's CPU
    use must stop growing well before that (the engine stopped working on it)."""
    if path.startswith("/v1"):
        body: dict[str, object] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Talk"}],
            "max_tokens": 2000,
            "stream": True,
        }
    else:
        body = {"text_input": "Talk", "stream": True, "max_tokens": 2000}
    assert _stub_cpu_seconds() > 0, "no tiny-llm stub process found"
    with httpx.stream("POST", f"{llm_url}{path}", json=body, timeout=60) as response:
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            seen += bool(line)
            if seen >= 5:
                break
    hung_up = time.monotonic()
    # Cancellation travels proxy -> router -> replica -> Triton -> stub; on a busy
    # machine that can take a moment. Generating burns about a core; idle, ~0.
    windows = []
    while time.monotonic() - hung_up < 4.0:
        before = _stub_cpu_seconds()
        time.sleep(0.5)
        windows.append(_stub_cpu_seconds() - before)
        if windows[-1] < 0.05:
            return
    pytest.fail(f"stub kept computing after the disconnect: CPU per 0.5 s window {windows}")
