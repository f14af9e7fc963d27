"""gRPC against applications other than the package's: versioned models and the
CPU stand-in LLM (an application of their own, placed on CPU), and API keys (the
secured application of test_auth.py). Serve picks the application from the call's
``application`` metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.serve.conftest import ADMIN_KEY, LIMITED_KEY, OTHER_TEAM_KEY, SECURE_APP
from tests.integration.serve.grpc_support import (
    Collector,
    Metadata,
    echo_input,
    is_final,
    status_of,
)
from tests.support.stack import extra_application

EXTRA_APP = "triton-grpc-extra"


@pytest.fixture(scope="module")
def extra_app(serve_url: str, model_repository: Path, grpc_host: str) -> Iterator[str]:
    """``versioned`` and ``tiny-llm`` on CPU, in their own application."""
    cpu = {"num_gpus": 0, "num_cpus": 0.25}
    args = {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [
            {"name": "versioned", "models": ["versioned"], **cpu},
            {"name": "tiny-llm", "models": ["tiny-llm"], "max_ongoing_requests": 8, **cpu},
        ],
    }

    def ready() -> bool:
        with app_client(grpc_host, EXTRA_APP) as client:
            try:
                return all(client.is_model_ready(m) for m in ("versioned", "tiny-llm"))
            except InferenceServerException:
                return False

    with extra_application(args, EXTRA_APP, "/grpc-extra", ready, ready_timeout=240):
        yield EXTRA_APP


def app_client(grpc_host: str, app: str, **metadata: str) -> triton_grpc.InferenceServerClient:
    client = triton_grpc.InferenceServerClient(grpc_host)
    client.register_plugin(Metadata(application=app, **metadata))
    return client


def test_versions(extra_app: str, grpc_host: str) -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    with app_client(grpc_host, extra_app) as client:
        meta = client.get_model_metadata("versioned")
        assert sorted(meta.versions) == ["1", "2"]
        for version, factor in (("1", 1), ("2", 2), ("", 2)):
            result = client.infer(
                "versioned", [echo_input("INPUT0", x, "FP32")], model_version=version
            )
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x * factor)
            assert result.get_response().model_version == (version or "2")
        assert client.is_model_ready("versioned", "1")
        assert status_of(lambda: client.get_model_metadata("versioned", "3")) == (
            grpc.StatusCode.NOT_FOUND
        )
        assert status_of(lambda: client.get_model_metadata("versioned", "x")) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


def llm_inputs(prompt: str, stream: bool, **sampling: object) -> list[triton_grpc.InferInput]:
    return [
        echo_input("text_input", np.array([prompt.encode()], dtype=object), "BYTES"),
        echo_input("stream", np.array([stream]), "BOOL"),
        echo_input(
            "sampling_parameters", np.array([json.dumps(sampling).encode()], dtype=object), "BYTES"
        ),
        echo_input("exclude_input_in_output", np.array([True]), "BOOL"),
    ]


def test_llm_streams_tokens(extra_app: str, grpc_host: str) -> None:
    with app_client(grpc_host, extra_app) as client:
        collector = Collector()
        client.start_stream(callback=collector)
        try:
            client.async_stream_infer(
                "tiny-llm",
                llm_inputs("Once upon a time", False, temperature=0, max_tokens=6),
                request_id="whole",
            )
            ((whole, error),) = collector.take(1, timeout=120)
            assert error is None, error
            client.async_stream_infer(
                "tiny-llm",
                llm_inputs("Once upon a time", True, temperature=0, max_tokens=6),
                request_id="deltas",
                enable_empty_final_response=True,
            )
            deltas = []
            while True:
                result, error = collector.items.get(timeout=120)
                assert error is None, error
                deltas.append(result)
                if is_final(result):
                    break
        finally:
            client.stop_stream()
    text = [r.as_numpy("text_output")[0].decode() for r in deltas if r.get_response().outputs]
    assert len(text) > 1  # one response per delta, not one at the end
    assert "".join(text) == whole.as_numpy("text_output")[0].decode()  # greedy: same text


def test_llm_on_unary_infer_is_unimplemented(extra_app: str, grpc_host: str) -> None:
    with app_client(grpc_host, extra_app) as client:
        call = lambda: client.infer("tiny-llm", llm_inputs("Hi", False))  # noqa: E731
        assert status_of(call) == grpc.StatusCode.UNIMPLEMENTED


# ---- API keys (the secured application) ----


def test_keys_apply_to_grpc(secure_url: str, grpc_host: str) -> None:
    x = np.ones((1, 2), dtype=np.float32)

    def infer(client: triton_grpc.InferenceServerClient) -> None:
        client.infer("echo", [echo_input("INPUT_FP32", x, "FP32")])

    with app_client(grpc_host, SECURE_APP) as anonymous:
        assert anonymous.is_server_live()  # health stays open
        anonymous.is_server_ready()
        assert status_of(lambda: infer(anonymous)) == grpc.StatusCode.UNAUTHENTICATED
        assert status_of(lambda: anonymous.get_model_metadata("echo")) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    with app_client(grpc_host, SECURE_APP, authorization="Bearer wrong-key-0123456789") as wrong:
        assert status_of(lambda: infer(wrong)) == grpc.StatusCode.UNAUTHENTICATED
    other = app_client(grpc_host, SECURE_APP, authorization=f"Bearer {OTHER_TEAM_KEY}")
    with other:
        assert status_of(lambda: infer(other)) == grpc.StatusCode.PERMISSION_DENIED
        assert status_of(other.get_model_repository_index) == grpc.StatusCode.PERMISSION_DENIED
    with app_client(grpc_host, SECURE_APP, authorization=f"Bearer {ADMIN_KEY}") as admin:
        infer(admin)
        assert {m.name for m in admin.get_model_repository_index().models} == {"echo"}


def test_keys_apply_to_streams(secure_url: str, grpc_host: str) -> None:
    count = [echo_input("INPUT_FP32", np.ones((1, 1), dtype=np.float32), "FP32")]
    with app_client(grpc_host, SECURE_APP) as anonymous:
        collector = Collector()
        anonymous.start_stream(callback=collector)
        try:
            anonymous.async_stream_infer("echo", count)
            ((result, error),) = collector.take(1)
        finally:
            anonymous.stop_stream()
        assert result is None
        assert error.status() == str(grpc.StatusCode.UNAUTHENTICATED)
    other = app_client(grpc_host, SECURE_APP, authorization=f"Bearer {OTHER_TEAM_KEY}")
    with other:
        collector = Collector()
        other.start_stream(callback=collector)
        try:
            other.async_stream_infer("echo", count)
            ((result, error),) = collector.take(1)
        finally:
            other.stop_stream()
        assert result is None
        assert "not allowed to use model 'echo'" in error.message()


def test_each_stream_request_counts_against_the_rate_limit(secure_url: str, grpc_host: str) -> None:
    """The 'limited' key may send one request now (burst 1, then one per 5 s): on one
    stream, the first request is answered and the next two get the rate-limit error,
    in the stream; the stream itself stays open."""
    x = [echo_input("INPUT_FP32", np.ones((1, 1), dtype=np.float32), "FP32")]
    limited = app_client(grpc_host, SECURE_APP, authorization=f"Bearer {LIMITED_KEY}")
    with limited:
        collector = Collector()
        limited.start_stream(callback=collector)
        try:
            for i in range(3):
                limited.async_stream_infer("echo", x, request_id=str(i))
            answers = collector.take(3)
        finally:
            limited.stop_stream()
    answered = [result for result, error in answers if error is None]
    refused = [error for result, error in answers if error is not None]
    assert len(answered) == 1 and answered[0].get_response().id == "0"
    assert len(refused) == 2
    assert all("over its rate limit" in error.message() for error in refused)
