"""A real Ray cluster (one logical GPU) running the real application, for HTTP tests.

Layout, chosen so packing is visible: four deployments at 0.25 GPU fill GPU 0
(one of them hosts a model whose config Triton rejects), and a fifth that asks
for 0.5 GPU cannot be placed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from app.builders import build_app

APP_NAME = "triton"
BODY_LIMIT = 8 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_args(model_repository: Path) -> dict[str, Any]:
    quarter = {"num_gpus": 0.25, "num_cpus": 0.25}
    return {
        "model_repository": str(model_repository),
        "max_request_body_bytes": BODY_LIMIT,
        "triton": {"log_info": False},
        "deployments": [
            {"name": "echo", "models": ["echo"], **quarter},
            {
                "name": "streamer",
                "models": ["streamer"],
                "max_ongoing_requests": 2,
                "max_queued_requests": 2,
                **quarter,
            },
            {
                "name": "pipeline",
                "models": ["ensemble_pipeline", "ens_scale", "ens_offset"],
                **quarter,
            },
            {"name": "broken", "models": ["invalid_config"], **quarter},
            {"name": "big", "models": ["versioned"], "num_gpus": 0.5, "num_cpus": 0.25},
        ],
    }


# Serve's gRPC proxy serves Triton's gRPC protocol (test_grpc*.py) next to HTTP.
GRPC_SERVICER = "app.grpc.servicer.add_inference_service_to_server"


@pytest.fixture(scope="package")
def grpc_port() -> int:
    return _free_port()


@pytest.fixture(scope="package")
def serve_url(model_repository: Path, grpc_port: int) -> Iterator[str]:
    port = _free_port()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            grpc_options={"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]},
        )
        serve._run(build_app(app_args(model_repository)), _blocking=False, name=APP_NAME)
        url = f"http://127.0.0.1:{port}"
        _wait_for_models(url, ["echo", "streamer", "ensemble_pipeline"], timeout=180)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def _wait_for_models(url: str, models: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(models)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"models not ready after {timeout} s: {pending}")
        with contextlib.suppress(httpx.HTTPError):
            pending = [
                m
                for m in pending
                if httpx.get(f"{url}/v2/models/{m}/ready", timeout=10).status_code != 200
            ]
        if pending:
            time.sleep(1)


SECURE_APP = "triton-secure"
SECURE_PREFIX = "/secure"
# Keys of the secured application (test_auth.py): sha256 form for one, plain for the rest.
ADMIN_KEY = "admin-key-0123456789abcdef"
OTHER_TEAM_KEY = "other-team-key-0123456789"
LIMITED_KEY = "limited-key-0123456789abc"


@pytest.fixture(scope="module")
def secure_url(
    serve_url: str, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second application, under ``/secure``, with API keys on: its own router and
    an echo deployment on CPU. Module-scoped: it is deleted after its tests, as some
    tests (gRPC without application metadata) need the cluster's only application."""
    import hashlib

    import yaml

    keys = [
        {
            "name": "admin",
            "sha256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
            "models": "*",
            "repository": True,
        },
        {"name": "other-team", "key": OTHER_TEAM_KEY, "models": ["streamer"]},
        {"name": "limited", "key": LIMITED_KEY, "models": "*", "requests_per_s": 0.2, "burst": 1},
    ]
    key_file = tmp_path_factory.mktemp("secrets") / "api-keys.yaml"
    key_file.write_text(yaml.safe_dump({"keys": keys}))
    args = {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [{"name": "echo", "models": ["echo"], "num_gpus": 0, "num_cpus": 0.25}],
        "security": {"api_keys_file": str(key_file)},
    }
    serve._run(build_app(args), _blocking=False, name=SECURE_APP, route_prefix=SECURE_PREFIX)
    url = f"{serve_url}{SECURE_PREFIX}"
    deadline = time.monotonic() + 180
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/models/echo/ready", headers=headers).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise TimeoutError("the secured application did not become ready")
        time.sleep(1)
    try:
        yield url
    finally:
        serve.delete(SECURE_APP)


@pytest.fixture(scope="package")
def http_host(serve_url: str) -> str:
    """``host:port`` as tritonclient wants it."""
    return serve_url.removeprefix("http://")


@pytest.fixture(scope="package")
def grpc_host(serve_url: str, grpc_port: int) -> str:
    """``host:port`` of Serve's gRPC proxy, for ``tritonclient.grpc``."""
    return f"127.0.0.1:{grpc_port}"
