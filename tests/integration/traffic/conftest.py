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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from tests.support.stack import LocalStack, local_stack

APP_NAME = "triton"
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
def traffic_stack(model_repository: Path) -> Iterator[LocalStack]:
    ready = ["versioned", "ensemble_pipeline", "tiny-llm"]
    with local_stack(
        None,
        deploy_app=lambda: deploy(traffic_config(model_repository)),
        ready_models=ready,
        ready_timeout=300,
    ) as stack:
        try:
            yield stack
        finally:
            with contextlib.suppress(Exception):
                serve.delete(APP_NAME, _blocking=True)


@pytest.fixture(scope="package")
def traffic_url(traffic_stack: LocalStack) -> str:
    return traffic_stack.url


@pytest.fixture(scope="package")
def grpc_port(traffic_stack: LocalStack) -> int:
    return traffic_stack.grpc_port


@pytest.fixture(scope="package")
def redeploy(model_repository: Path) -> Callable[[dict[str, Any]], None]:
    """Apply a new traffic section to the running routers (``serve deploy``)."""

    def apply(traffic: dict[str, Any]) -> None:
        deploy(traffic_config(model_repository, copy.deepcopy(traffic)))

    return apply
