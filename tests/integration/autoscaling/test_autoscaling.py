"""Serve replicas and GPU nodes scale together on the real Ray autoscaler (v2).

One run of ``tests.support.autoscaling_scenario`` (which ``bench.autoscaling`` plots)
backs every test here: the fake multinode provider with node types that Ray's own
KubeRay reader makes of ``kuberay/`` (each group's ``idleTimeoutSeconds`` kept, times
1/60), and the ``echo`` model asking for 2 GPUs
per replica in a STRICT_PACK placement group on ``gpu-vllm`` nodes (2 GPUs each, like
Mixtral), from zero to two replicas on two nodes and back to zero. The timeline is
printed so a failure shows what the cluster did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.autoscaling_scenario import (
    Sample,
    Scenario,
    Timeline,
    run_scenario,
    summary,
    timeline_table,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The first request to a model at zero replicas on a group at zero nodes answers within
# this (docs/kubernetes.md): node start + replica start + Triton load here.
COLD_START_BOUND_S = 60.0
# Samples are 1 s apart and the autoscaler looks every second.
SAMPLING_S = 2.0


@pytest.fixture(scope="module")
def timeline() -> Iterator[Timeline]:
    result = run_scenario(Scenario())
    print(timeline_table(result))
    print(summary(result))
    yield result


def _first(samples: list[Sample], after_s: float, test: Callable[[Sample], bool]) -> Sample:
    found = next((s for s in samples if s.t_s >= after_s and test(s)), None)
    assert found is not None, f"no sample after {after_s} s matches"
    return found


def test_load_fills_both_nodes_with_one_strict_pack_replica_each(timeline: Timeline) -> None:
    scenario = timeline.scenario
    assert timeline.max_of("replicas", "load") == scenario.max_replicas == 2
    assert timeline.max_of("gpu_nodes", "load") == scenario.max_gpu_nodes == 2
    # A 2-GPU bundle fills a node: never more replicas than GPU nodes.
    assert all(s.replicas <= s.gpu_nodes for s in timeline.samples)
    assert len([r for r in timeline.requests if r.phase == "load"]) > 100
    assert timeline.failures("load") == []


def test_replicas_drain_before_nodes_and_nodes_wait_their_idle_timeout(
    timeline: Timeline,
) -> None:
    idle = timeline.idle_timeout_s
    assert idle == pytest.approx(600 / 60)  # gpu-vllm's idleTimeoutSeconds, scaled
    samples = timeline.samples
    light = timeline.phase_start_s["light"]
    # From two replicas on two nodes: a replica goes first, its node only after it idled.
    replica_gone = _first(samples, light, lambda s: s.replicas < 2)
    node_gone = _first(samples, light, lambda s: s.gpu_nodes < 2)
    assert replica_gone.t_s < node_gone.t_s
    assert node_gone.t_s - replica_gone.t_s >= idle - SAMPLING_S
    # Then the last replica, and the last node after its idle timeout again.
    last_replica = _first(samples, node_gone.t_s, lambda s: s.replicas == 0)
    last_node = _first(samples, last_replica.t_s, lambda s: s.gpu_nodes == 0)
    assert last_node.t_s - last_replica.t_s >= idle - SAMPLING_S
    assert timeline.failures() == []  # draining lost no request
    assert [r for r in timeline.requests if r.phase == "light"]


def test_scale_from_zero_answers_within_the_bound(timeline: Timeline) -> None:
    cold = [r for r in timeline.requests if r.phase == "cold"]
    assert len(cold) == 1 and cold[0].status == 200, cold
    before = [s for s in timeline.samples if s.phase == "cold"]
    assert (before[0].gpu_nodes, before[0].replicas) == (0, 0)
    assert cold[0].end_s - cold[0].start_s <= COLD_START_BOUND_S
