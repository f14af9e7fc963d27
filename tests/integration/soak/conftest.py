"""A real Ray cluster serving every model the soak traffic uses, on two logical GPUs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from tests.support.ports import free_port
from tests.support.serving import start_multiraylet_cluster
from tests.support.stack import LocalStack, start_serving

APP_NAME = "soak"
MODELS = ["echo", "streamer", "versioned", "tiny-llm", "minilm"]


def soak_app_args(model_repository: Path) -> dict[str, Any]:
    quarter = {"num_gpus": 0.25, "num_cpus": 0.25}
    return {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [
            {"name": "echo", "models": ["echo"], **quarter},
            {"name": "streamer", "models": ["streamer"], **quarter},
            {"name": "versioned", "models": ["versioned"], **quarter},
            {
                "name": "tiny-llm",
                "models": ["tiny-llm"],
                "num_gpus": 0.5,
                "num_cpus": 0.25,
                "openai": {"tiny-llm": {"task": "generate"}},
            },
            {
                "name": "embedding",
                "models": ["minilm"],
                **quarter,
                "openai": {"minilm": {"task": "embed"}},
            },
        ],
    }


@dataclass
class SoakStack:
    cluster: Cluster
    url: str


@pytest.fixture(scope="package")
def soak_stack(model_repository: Path) -> Iterator[SoakStack]:
    cluster = start_multiraylet_cluster()
    stack = LocalStack(free_port(), free_port())
    try:
        start_serving(
            stack,
            soak_app_args(model_repository),
            APP_NAME,
            ready_models=MODELS,
            ready_timeout=300,
            proxy_location="HeadOnly",
        )
        yield SoakStack(cluster, stack.url)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
