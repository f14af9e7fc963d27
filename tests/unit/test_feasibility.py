"""A deployment no node can ever hold is refused at once with a 503 naming what is
missing; one that merely waits for room (or is scaled to zero) is left to wait."""

from __future__ import annotations

import asyncio

import pytest

from app.config import AppConfig
from app.placement import feasibility
from app.placement.feasibility import missing_resources, replica_demand, unplaceable

CPU_ONLY = [{"CPU": 2.0, "memory": 1e9}]
ONE_GPU = [{"CPU": 2.0, "GPU": 1.0}]


def _cfg(**dep: object) -> AppConfig:
    deployment = {"name": "d", "models": ["m"], "num_cpus": 0.25, **dep}
    return AppConfig.model_validate(
        {
            "model_repository": "/r",
            "router": {"fixed_cluster": True},
            "deployments": [deployment],
        }
    )


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    feasibility._nodes_at = -feasibility.NODES_CACHE_S


def _why(cfg: AppConfig, nodes: list[dict[str, float]]) -> str | None:
    feasibility._nodes_at = -feasibility.NODES_CACHE_S  # a fresh read of ``nodes``
    return asyncio.run(unplaceable(cfg, "d", nodes=lambda: nodes))


def test_a_gpu_deployment_on_a_cpu_only_cluster_names_the_gpu() -> None:
    why = _why(_cfg(num_gpus=0.5), CPU_ONLY)
    assert why is not None and "GPU 0.5" in why and "'d'" in why


def test_a_custom_resource_no_node_advertises_is_named() -> None:
    why = _why(_cfg(num_gpus=0.5, resources={"triton_vllm": 1}), ONE_GPU)
    assert why is not None and "triton_vllm 1" in why and "GPU" not in why.split("short by")[1]


def test_tensor_parallel_replicas_need_all_their_gpus_on_one_node() -> None:
    two_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    assert _why(_cfg(num_gpus=2), two_nodes) is not None
    assert _why(_cfg(num_gpus=2), [{"CPU": 8.0, "GPU": 2.0}]) is None


def test_placeable_and_scaled_to_zero_deployments_wait() -> None:
    assert _why(_cfg(num_gpus=0.5), ONE_GPU) is None
    scaled_to_zero = _cfg(num_gpus=0.5, autoscaling={"min_replicas": 0, "max_replicas": 2})
    assert _why(scaled_to_zero, ONE_GPU) is None


def test_a_cluster_an_autoscaler_may_grow_waits() -> None:
    cfg = _cfg(num_gpus=0.5).model_copy(
        update={
            "router": AppConfig.model_validate(
                {"model_repository": "/r", "deployments": [{"name": "d", "models": ["m"]}]}
            ).router
        }
    )
    assert _why(cfg, CPU_ONLY) is None


def test_the_node_list_is_read_once_per_period() -> None:
    reads: list[int] = []

    def counted() -> list[dict[str, float]]:
        reads.append(1)
        return CPU_ONLY

    for _ in range(3):
        assert asyncio.run(unplaceable(_cfg(num_gpus=1), "d", nodes=counted)) is not None
    assert len(reads) == 1


def test_no_answer_from_ray_refuses_nothing() -> None:
    def broken() -> list[dict[str, float]]:
        raise ConnectionError("GCS away")

    assert asyncio.run(unplaceable(_cfg(num_gpus=4), "d", nodes=broken)) is None


def test_demand_and_shortfall() -> None:
    assert replica_demand(_cfg(num_gpus=0).deployments[0]) == {"CPU": 0.25}
    assert missing_resources({"GPU": 1.0}, [{"GPU": 0.5}, {}]) == {"GPU": 0.5}
    assert missing_resources({"GPU": 1.0}, []) == {"GPU": 1.0}


def test_building_a_gpu_app_on_a_cluster_without_gpus_says_what_to_do() -> None:
    from app.placement.feasibility import check_cluster_gpus

    with pytest.raises(ValueError, match=r"make serve.*ray start --head --num-gpus 2"):
        check_cluster_gpus(_cfg(num_gpus=0.5), nodes=lambda: CPU_ONLY)
    gpu_app = _cfg(num_gpus=0.5)
    assert check_cluster_gpus(gpu_app, nodes=lambda: ONE_GPU) is gpu_app
    cpu_app = _cfg(num_gpus=0)
    assert check_cluster_gpus(cpu_app, nodes=lambda: CPU_ONLY) is cpu_app


def test_gpus_optional_drops_the_gpu_shares_only_where_the_cluster_has_no_gpu() -> None:
    from app.placement.feasibility import check_cluster_gpus

    cfg = _cfg(num_gpus=0.5)
    cfg = cfg.model_copy(update={"router": cfg.router.model_copy(update={"gpus_optional": True})})
    on_cpu = check_cluster_gpus(cfg, nodes=lambda: CPU_ONLY)
    assert [d.num_gpus for d in on_cpu.deployments] == [0.0]
    assert check_cluster_gpus(cfg, nodes=lambda: ONE_GPU).deployments[0].num_gpus == 0.5


def test_a_missing_model_repository_says_what_to_do(tmp_path: object) -> None:
    from app.config import check_paths

    with pytest.raises(ValueError, match=r"not a directory on this node.*make serve"):
        check_paths(_cfg().model_copy(update={"model_repository": "/models/nowhere"}))
