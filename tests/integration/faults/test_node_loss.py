"""A Ray worker node lost (its raylet and every process on it killed) while it hosts
a model replica: Serve starts the replica again on the remaining node and requests
succeed again within a bound. A real multi-raylet cluster on this machine
(``ray.cluster_utils.Cluster``)."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from ray import serve

from tests.integration.faults.checks import echo, echo_answered, until_answered
from tests.integration.faults.conftest import Stack
from tests.support import procs
from tests.support.stack import deploy
from tests.support.waiting import wait_for_models, wait_until

pytestmark = pytest.mark.slow

HA_APP = "ha"
REPLICAS = 2
# Ray notices the node is gone (raylet health checks), then Serve starts the
# replacement replica and Triton loads echo.
BACK_BOUND_S = 120.0


def _raylet_pid(node: object) -> int:
    return int(node.all_processes["raylet"][0].process.pid)  # type: ignore[attr-defined]


def _allowed_while_lost(response: httpx.Response) -> None:
    # The router may have lived on the lost node too: Serve's proxy holds requests
    # until one runs again, or answers 503 (ours, JSON, or Serve's own).
    assert response.status_code == 503, response.text


def test_replica_on_a_lost_node_is_rescheduled(stack: Stack, faults_url: str) -> None:
    head_raylet = _raylet_pid(stack.cluster.head_node)
    worker = stack.cluster.add_node(num_cpus=2, num_gpus=1)
    stack.cluster.wait_for_nodes()
    worker_raylet = _raylet_pid(worker)
    args = {
        "model_repository": str(stack.model_repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1},
        "deployments": [
            # Serve spreads a deployment's replicas over nodes: one lands on the worker.
            {
                "name": "echo",
                "models": ["echo"],
                "num_replicas": REPLICAS,
                "num_gpus": 0.25,
                "num_cpus": 0.25,
            }
        ],
    }
    deploy(args, HA_APP, f"/{HA_APP}")
    url = f"{stack.url}/{HA_APP}"
    try:
        wait_for_models(url, ["echo"], timeout=180)
        wait_until(
            lambda: len(procs.replica_pids(HA_APP, "echo")) == REPLICAS, 120, "both replicas"
        )
        replicas = procs.replica_pids(HA_APP, "echo")
        on_worker = [p for p in replicas if procs.parent(p) == worker_raylet]
        assert len(on_worker) == 1, {p: procs.parent(p) for p in replicas}
        assert echo_answered(echo(url))

        stack.cluster.remove_node(worker, allow_graceful=False)
        lost_at = time.monotonic()
        answered = until_answered(
            lambda: echo(url), echo_answered, BACK_BOUND_S, _allowed_while_lost
        )

        def both_on_head() -> bool:
            pids = procs.replica_pids(HA_APP, "echo")
            return len(pids) == REPLICAS and all(procs.parent(p) == head_raylet for p in pids)

        wait_until(both_on_head, BACK_BOUND_S, "both replicas on the head node")
        rescheduled = time.monotonic() - lost_at
        print(
            f"node lost: requests answered after {answered:.1f} s, "
            f"replica rescheduled on the head node after {rescheduled:.1f} s"
        )
        for _ in range(10):
            assert echo_answered(echo(url))
        lost = on_worker
        wait_until(lambda: not procs.stubs(lost), 30, "the lost replica's stubs exit")
        wait_until(lambda: not procs.shm_files(lost), 30, "the lost replica's regions go")
    finally:
        with contextlib.suppress(Exception):
            serve.delete(HA_APP)
