"""A real Ray cluster (``ray.cluster_utils.Cluster``: a head raylet, and worker raylets
that tests add and kill) running the real application, for the fault tests.

Layout: ``echo``, ``streamer`` and ``tiny-llm`` (OpenAI chat) share one of the head
node's two logical GPUs, one replica each; Serve's HTTP and gRPC proxy on the head node
only, so worker nodes on this machine do not compete for its ports.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from tests.support import procs
from tests.support.ports import free_port
from tests.support.serving import start_multiraylet_cluster
from tests.support.stack import LocalStack, start_serving
from tests.support.waiting import wait_until

APP_NAME = "faults"
MODELS = ["echo", "streamer", "tiny-llm"]
# A replica replaced after three failed health checks, 10 s apart (measured ~31 s).
SETTLE_BOUND_S = 120.0


def settled(url: str | None = None) -> bool:
    """One replica per deployment (a replaced one has exited), one live stub per
    python-backend model replica, and, given ``url``, the router's health ready."""
    for deployment in [*MODELS, "router"]:
        replicas = procs.replica_pids(APP_NAME, deployment)
        if len(replicas) != 1:
            return False
        if deployment in ("echo", "streamer") and len(procs.stubs(replicas)) != 1:
            return False
    if url is None:
        return True
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def faults_app_args(model_repository: Path) -> dict[str, Any]:
    quarter = {"num_gpus": 0.25, "num_cpus": 0.25}
    return {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [
            {"name": "echo", "models": ["echo"], **quarter},
            {"name": "streamer", "models": ["streamer"], **quarter},
            {
                "name": "tiny-llm",
                "models": ["tiny-llm"],
                "num_gpus": 0.5,
                "num_cpus": 0.25,
                "openai": {"tiny-llm": {"task": "generate"}},
            },
        ],
    }


@dataclass
class Stack:
    """The cluster and the application on it; ``ensure_running`` redeploys after a
    test shut Serve down."""

    cluster: Cluster
    port: int
    model_repository: Path
    grpc_port: int
    running: bool = False
    startup_s: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ensure_running(self) -> str:
        """The application deployed and settled: a test starts from a whole stack even
        when the one before it failed halfway through a recovery."""
        if not self.running:
            started = time.monotonic()
            start_serving(
                LocalStack(self.port, self.grpc_port),
                faults_app_args(self.model_repository),
                APP_NAME,
                ready_models=MODELS,
                ready_timeout=300,
                proxy_location="HeadOnly",
            )
            self.startup_s.append(time.monotonic() - started)
            self.running = True
        what = "every deployment: one replica, its stubs, ready"
        wait_until(lambda: settled(self.url), SETTLE_BOUND_S, what)
        return self.url


@pytest.fixture(scope="package")
def stack(model_repository: Path) -> Iterator[Stack]:
    # The second logical GPU is room for the node-loss test's replicas.
    cluster = start_multiraylet_cluster(num_cpus=4, num_gpus=2)
    state = Stack(cluster, free_port(), model_repository, free_port())
    try:
        yield state
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def faults_url(stack: Stack) -> str:
    return stack.ensure_running()


@pytest.fixture
def faults_grpc(stack: Stack) -> str:
    """``host:port`` of Serve's gRPC proxy, for ``tritonclient.grpc``."""
    stack.ensure_running()
    return f"127.0.0.1:{stack.grpc_port}"
