"""Serve replicas and GPU nodes scale together on the real Ray autoscaler (v2).

One run of ``bench.autoscaling`` (fake multinode provider, worker types taken from
``kuberay/rayservice.yaml``, the ``echo`` model at half a logical GPU per replica, from
zero to four replicas on two ``gpu-trtllm`` nodes and back to zero) backs every test
here; the timeline is printed so a failure shows what the cluster did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.autoscaling import Scenario, Timeline, run_scenario, summary, timeline_table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The first request to a model at zero replicas on a group at zero nodes answers within
# this (README, "Deploy on Kubernetes"): node start + replica start + Triton load here.
COLD_START_BOUND_S = 60.0


@pytest.fixture(scope="module")
def timeline() -> Iterator[Timeline]:
    result = run_scenario(Scenario())
    print(timeline_table(result))
    print(summary(result))
    yield result


def test_load_grows_replicas_onto_new_gpu_nodes_without_failures(timeline: Timeline) -> None:
    scenario = timeline.scenario
    assert timeline.max_of("replicas", "load") == scenario.max_replicas
    assert timeline.max_of("gpu_nodes", "load") == scenario.max_gpu_nodes
    load_requests = [r for r in timeline.requests if r.phase == "load"]
    assert len(load_requests) > 100
    assert timeline.failures("load") == []


def test_replicas_then_nodes_go_away_and_draining_loses_nothing(timeline: Timeline) -> None:
    light = [s for s in timeline.samples if s.phase == "light"]
    assert light and light[0].gpu_nodes == timeline.scenario.max_gpu_nodes
    # Replicas went first (down to the one that serves the light load), then a node;
    # samples are 1 s apart, so the (1, 1) state may be seen when "idle" begins.
    after = [s for s in timeline.samples if s.phase in ("light", "idle")]
    assert any(s.replicas == 1 and s.gpu_nodes == 1 for s in after)
    assert [r for r in timeline.requests if r.phase == "light"]
    assert timeline.failures("light") == []
    end = timeline.last()
    assert (end.replicas, end.gpu_nodes) == (0, 0), "did not scale back to zero"
    assert "end" in timeline.phase_start_s
    assert timeline.failures() == []


def test_scale_from_zero_answers_within_the_bound(timeline: Timeline) -> None:
    cold = [r for r in timeline.requests if r.phase == "cold"]
    assert len(cold) == 1 and cold[0].status == 200, cold
    before = [s for s in timeline.samples if s.phase == "cold"]
    assert before and before[0].gpu_nodes == 0 and before[0].replicas == 0
    assert timeline.cold_start_s is not None
    assert timeline.cold_start_s <= COLD_START_BOUND_S
