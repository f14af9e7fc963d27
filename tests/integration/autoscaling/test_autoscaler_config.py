"""The fake cluster's node types are Ray's own reading of kuberay/ (fast, no cluster)."""

from __future__ import annotations

from app.kuberay.manifests import find_object, load_kustomization
from tests.support.autoscaling_scenario import Scenario
from tests.support.fake_gpu_cluster import (
    autoscaler_config,
    idle_timeout_s,
    kuberay_autoscaling_config,
)


def test_node_types_are_rays_reading_of_each_worker_group() -> None:
    scenario = Scenario()
    kuberay = kuberay_autoscaling_config()
    cluster = find_object(load_kustomization(), "RayService")["spec"]["rayClusterConfig"]
    config = autoscaler_config(kuberay, "127.0.0.1:1", scenario.time_scale, scenario.max_gpu_nodes)
    types = config["available_node_types"]
    for group in cluster["workerGroupSpecs"]:
        node_type = types[group["groupName"]]
        # Each group's own idle timeout, scaled, not the cluster-wide one.
        assert node_type["idle_timeout_s"] == group["idleTimeoutSeconds"] * scenario.time_scale
        assert node_type["max_workers"] <= group["maxReplicas"]
    assert types["cpu-ingress"]["resources"]["triton_ingress"] == 1
    assert types["gpu-vllm"]["resources"]["GPU"] == 2
    assert types["gpu-vllm"]["resources"]["triton_vllm"] == 2
    assert "memory" not in types["gpu-vllm"]["resources"]  # the fake nodes share the host's
    assert config["provider"]["type"] == "external"
    assert config["head_node_type"] in types  # the fake provider's own name for it
    assert idle_timeout_s(kuberay, "cpu-ingress", scenario.time_scale) == 300 * scenario.time_scale
