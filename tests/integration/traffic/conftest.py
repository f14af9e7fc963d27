"""A real Ray cluster running the application with a ``traffic`` section, deployed
as ``serve deploy`` does (a declarative config applied by Serve's controller), so a
new router ``user_config`` reaches running routers the way it does on a cluster.

``versioned`` answers ``OUTPUT0 = INPUT0 * version``, so an answer tells which
version served it; ``ensemble_pipeline`` takes the same input (the mirror);
``tiny-llm`` is on ``/v1``.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

APP_NAME = "triton"
GRPC_SERVICER = "app.grpc.servicer.add_inference_service_to_server"
CPU = {"num_gpus": 0, "num_cpus": 0.25}

TRAFFIC: dict[str, Any] = {
    # A canary: 70/30 between the two versions, every request copied to the pipeline.
    "canary": {
        "targets": [
            {"model": "versioned", "version": "1", "weight": 70},
            {"model": "versioned", "version": "2", "weight": 30},
        ],
        "mirror": {"model": "ensemble_pipeline", "percent": 100},
    },
    "sticky": {
        "targets": [
            {"model": "versioned", "version": "1", "weight": 50},
            {"model": "versioned", "version": "2", "weight": 50},
        ],
        "sticky": {"header": "X-Session-Id"},
    },
    # A mirror that always fails (tiny-llm has none of versioned's inputs).
    "shadow-fails": {
        "targets": [{"model": "versioned", "version": "2", "weight": 1}],
        "mirror": {"model": "tiny-llm", "percent": 100},
    },
    # Weights moved under load by test_weight_change_under_load.
    "shift": {
        "targets": [
            {"model": "versioned", "version": "1", "weight": 1},
            {"model": "versioned", "version": "2", "weight": 0},
        ]
    },
    "assistant": {"targets": [{"model": "tiny-llm", "weight": 1}]},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def traffic_config(
    model_repository: Path, router_traffic: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Serve config; ``router_traffic`` overrides the router's user_config, as an
    operator changing weights with ``serve deploy`` does."""
    app: dict[str, Any] = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "app.builders:build_app",
        "args": {
            "model_repository": str(model_repository),
            "triton": {"log_info": False},
            "router": {"num_cpus": 0.25},
            "deployments": [
                {"name": "versioned", "models": ["versioned"], **CPU},
                {
                    "name": "pipeline",
                    "models": ["ensemble_pipeline", "ens_scale", "ens_offset"],
                    **CPU,
                },
                {
                    "name": "tiny-llm",
                    "models": ["tiny-llm"],
                    "openai": {"tiny-llm": {"task": "generate"}},
                    **CPU,
                },
            ],
            "traffic": TRAFFIC,
        },
    }
    if router_traffic is not None:
        app["deployments"] = [{"name": "router", "user_config": {"traffic": router_traffic}}]
    return {"applications": [app]}


def deploy(config: dict[str, Any]) -> None:
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def wait_running(timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and str(app.status) in ("RUNNING", "ApplicationStatus.RUNNING"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"application not running: {app}")
        time.sleep(1)


@pytest.fixture(scope="package")
def grpc_port() -> int:
    return _free_port()


@pytest.fixture(scope="package")
def traffic_url(model_repository: Path, grpc_port: int) -> Iterator[str]:
    port = _free_port()
    ray.init(address="local", num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            grpc_options={"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]},
        )
        deploy(traffic_config(model_repository))
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, ["versioned", "ensemble_pipeline", "tiny-llm"], timeout=300)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME, _blocking=True)
        serve.shutdown()
        ray.shutdown()


def _wait_ready(url: str, models: list[str], timeout: float) -> None:
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


@pytest.fixture(scope="package")
def redeploy(model_repository: Path) -> Callable[[dict[str, Any]], None]:
    """Apply a new traffic section to the running routers (``serve deploy``)."""

    def apply(traffic: dict[str, Any]) -> None:
        deploy(traffic_config(model_repository, copy.deepcopy(traffic)))

    return apply
