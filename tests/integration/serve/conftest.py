"""A real Ray cluster (one logical GPU) running the real application, for HTTP tests.

Layout, chosen so packing is visible: four deployments at 0.25 GPU fill GPU 0
(one of them hosts a model whose config Triton rejects), and a fifth that asks
for 0.5 GPU cannot be placed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import LocalStack, extra_application, local_stack

APP_NAME = "triton"
BODY_LIMIT = 8 * 1024 * 1024


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


@pytest.fixture(scope="package")
def serve_stack(model_repository: Path) -> Iterator[LocalStack]:
    ready = ["echo", "streamer", "ensemble_pipeline"]
    with local_stack(
        app_args(model_repository), name=APP_NAME, num_gpus=1, ready_models=ready
    ) as stack:
        yield stack


@pytest.fixture(scope="package")
def serve_url(serve_stack: LocalStack) -> str:
    return serve_stack.url


@pytest.fixture(scope="package")
def grpc_port(serve_stack: LocalStack) -> int:
    return serve_stack.grpc_port


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
    url = f"{serve_url}{SECURE_PREFIX}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/v2/models/echo/ready", headers=headers).status_code == 200
        return False

    with extra_application(args, SECURE_APP, SECURE_PREFIX, ready):
        yield url


@pytest.fixture(scope="package")
def http_host(serve_url: str) -> str:
    """``host:port`` as tritonclient wants it."""
    return serve_url.removeprefix("http://")


@pytest.fixture(scope="package")
def grpc_host(serve_stack: LocalStack) -> str:
    """``host:port`` of Serve's gRPC proxy, for ``tritonclient.grpc``."""
    return serve_stack.grpc_host
