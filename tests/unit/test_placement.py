"""GPU memory shares, their refusal messages, the packing plan and prod.yaml."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from app.builders import deployment_options
from app.config import AppConfig, ModelDeploymentConfig
from app.placement.packing import check_placement, plan_packing
from app.placement.shares import PlacementError, derive_share
from tests.conftest import REPO_ROOT

PROD = REPO_ROOT / "serve_configs" / "prod.yaml"


def prod_args() -> dict[str, Any]:
    document = yaml.safe_load(PROD.read_text())
    (app,) = document["applications"]
    assert app["import_path"] == "app.builders:build_app"
    args: dict[str, Any] = app["args"]
    return args


def dep(num_gpus: float, **gpu_memory: Any) -> ModelDeploymentConfig:
    return ModelDeploymentConfig.model_validate(
        {"name": "d", "models": ["m", "other"], "num_gpus": num_gpus, "gpu_memory": gpu_memory}
    )


def test_vllm_utilization_is_the_fraction_less_the_overhead() -> None:
    share = derive_share(
        dep(0.5, engine="vllm", model="m", weights_gb=16, min_kv_cache_gb=2, overhead_gb=2),
        80,
        "deployments[0]",
    )
    assert (share.setting, share.value) == ("gpu_memory_utilization", 0.475)  # (40-2)/80
    assert share.kv_cache_gb == pytest.approx(22.0)  # 0.475 x 80 - 16
    assert "gpu_memory_utilization = (40 - 2) / 80 = 0.475" in share.arithmetic()


def test_two_vllm_halves_never_claim_more_than_the_gpu() -> None:
    a = derive_share(dep(0.5, engine="vllm", model="m", weights_gb=10), 80, "d")
    b = derive_share(dep(0.5, engine="vllm", model="m", weights_gb=10, overhead_gb=0), 80, "d")
    assert a.value is not None and b.value is not None
    # Each engine plus its overhead stays within its half.
    assert a.value * 80 + a.overhead_gb <= 40 and b.value * 80 + b.overhead_gb <= 40


def test_tensor_parallel_splits_the_weights_per_gpu() -> None:
    share = derive_share(
        dep(2, engine="vllm", model="m", weights_gb=24.7, min_kv_cache_gb=0.54, overhead_gb=4),
        80,
        "d",
    )
    assert (share.gpus, share.fraction, share.value) == (2, 1.0, 0.95)
    assert share.weights_gb == pytest.approx(12.35)
    assert "weights 12.35 GB (24.7 GB / 2 GPUs)" in share.arithmetic()


def test_tensorrtllm_fraction_is_of_the_memory_free_after_the_weights() -> None:
    share = derive_share(
        dep(
            0.5,
            engine="tensorrtllm",
            model="m",
            weights_gb=16.1,
            min_kv_cache_gb=1.1,
            overhead_gb=3,
        ),
        80,
        "d",
    )
    # K = 40 - 16.1 - 3 = 20.9 of the 80 - 16.1 - 3 = 60.9 GB free on an empty GPU.
    assert share.setting == "kv_cache_free_gpu_mem_fraction"
    assert share.value == 0.3431
    assert share.kv_cache_worst_gb == pytest.approx(0.3431 * 20.9)


def test_tensorrtllm_whole_gpu_fraction_is_capped() -> None:
    share = derive_share(dep(1, engine="tensorrtllm", model="m", weights_gb=16), 80, "d")
    assert share.value == 0.95


def test_refusal_shows_the_arithmetic() -> None:
    small = dep(0.25, engine="vllm", model="m", weights_gb=26, min_kv_cache_gb=2, overhead_gb=0)
    with pytest.raises(PlacementError) as info:
        derive_share(small, 80, "deployments[1]")
    assert str(info.value) == (
        "d: weights 26.0 GB + min KV 2.0 GB + overhead 0.0 GB = 28.0 GB > "
        "0.25 x 80 GB = 20.0 GB (deployments[1].gpu_memory)"
    )


def test_tensorrtllm_refused_when_co_tenants_leave_too_little_kv() -> None:
    tight = dep(0.5, engine="tensorrtllm", model="m", weights_gb=16, min_kv_cache_gb=15)
    with pytest.raises(PlacementError, match=r"KV cache when co-tenants start first"):
        derive_share(tight, 80, "deployments[0]")


def test_share_model_must_be_one_of_the_deployments_models() -> None:
    with pytest.raises(PlacementError, match=r"deployments\[3\]\.gpu_memory\.model: 'x'"):
        derive_share(dep(0.5, engine="vllm", model="x", weights_gb=1), 80, "deployments[3]")


def test_engine_needs_a_model_and_the_field_is_named() -> None:
    with pytest.raises(ValidationError, match=r"model: required when engine is 'vllm'"):
        dep(0.5, engine="vllm", weights_gb=1)


def test_gpu_memory_needs_a_gpu() -> None:
    with pytest.raises(PlacementError, match=r"d\.num_gpus: 0"):
        derive_share(dep(0, engine="fixed", weights_gb=1), 80, "d")


def test_prod_config_validates_and_fits_eight_80gb_gpus() -> None:
    cfg = AppConfig.model_validate(prod_args())
    assert cfg.gpus is not None and (cfg.gpus.memory_gb, cfg.gpus.count) == (80, 8)
    plan = check_placement(cfg)
    assert plan is not None and plan.fits and plan.gpus_needed == 8
    by_gpu = {g.index: sorted({s.deployment for s in g.slots}) for g in plan.gpus}
    assert by_gpu[0] == by_gpu[1] == ["mixtral-8x7b-vllm"]
    # No GPU mixes worker groups (vLLM and TensorRT-LLM live in different images).
    group = {d.name: tuple(sorted(d.resources)) for d in cfg.deployments}
    assert all(len({group[s.deployment] for s in g.slots}) == 1 for g in plan.gpus)
    assert {d: s.value for d, s in plan.shares.items()} == {
        "mixtral-8x7b-vllm": 0.95,
        "codellama-13b-vllm": 0.95,
        "llama3-8b-trtllm": 0.3431,
        "embedding-gpu": None,
    }


def test_prod_model_files_carry_the_shares_the_plan_derives() -> None:
    """The repository's static values match what replicas set, for users of Triton alone."""
    repo = REPO_ROOT / "model_repository"
    for name in ("mixtral-8x7b-vllm", "codellama-13b-vllm"):
        assert (
            json.loads((repo / name / "1" / "model.json").read_text())["gpu_memory_utilization"]
            == 0.95
        )
    engine = (repo / "llama3-8b-trtllm-engine" / "config.pbtxt").read_text()
    assert '"kv_cache_free_gpu_mem_fraction" value: { string_value: "0.3431" }' in engine


def test_prod_codellama_does_not_fit_half_a_gpu() -> None:
    args = copy.deepcopy(prod_args())
    codellama = next(d for d in args["deployments"] if d["name"] == "codellama-13b-vllm")
    codellama["num_gpus"] = 0.5
    with pytest.raises(PlacementError) as info:
        check_placement(AppConfig.model_validate(args))
    assert "codellama-13b-vllm: weights 26.0 GB + min KV 13.4 GB + overhead 4.0 GB" in str(
        info.value
    )
    assert "> 0.5 x 80 GB = 40.0 GB" in str(info.value)


def test_packing_refused_when_the_gpus_are_too_few() -> None:
    args = copy.deepcopy(prod_args())
    args["gpus"]["count"] = 7
    with pytest.raises(PlacementError, match=r"need 8 GPUs of 80 GB, the config has 7"):
        check_placement(AppConfig.model_validate(args))


def test_gpu_memory_without_gpus_is_refused() -> None:
    args = copy.deepcopy(prod_args())
    del args["gpus"]
    with pytest.raises(PlacementError, match=r"gpus: required because deployments\[0\]"):
        check_placement(AppConfig.model_validate(args))


def test_first_fit_decreasing_packs_fractions_without_overlap() -> None:
    deployments = [
        {"name": f"f{i}", "models": [f"m{i}"], "num_gpus": fraction, "num_replicas": 2}
        for i, fraction in enumerate([0.25, 0.5, 0.75, 0.5])
    ]
    cfg = AppConfig.model_validate({"model_repository": "/r", "deployments": deployments})
    plan = plan_packing(cfg, 80, None)
    assert plan.gpus_needed == 4  # 2 x (0.75 + 0.25) and 4 x 0.5
    assert all(g.used <= 1 for g in plan.gpus)
    assert [round(g.used, 2) for g in plan.gpus] == [1.0, 1.0, 1.0, 1.0]


def test_multi_gpu_replica_is_one_strict_pack_bundle_ray_accepts() -> None:
    from ray import serve

    cfg = AppConfig.model_validate(prod_args())
    mixtral = next(d for d in cfg.deployments if d.name == "mixtral-8x7b-vllm")
    options = deployment_options(mixtral)
    assert options["placement_group_bundles"] == [{"CPU": 4, "GPU": 2, "triton_vllm": 1}]
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"]["num_gpus"] == 2

    class Replica:
        pass

    # Ray validates that the actor's resources fit the first bundle.
    serve.deployment(Replica).options(**options)
    halves = next(d for d in cfg.deployments if d.name == "llama3-8b-trtllm")
    assert "placement_group_bundles" not in deployment_options(halves)


def test_prod_model_directories_exist() -> None:
    cfg = AppConfig.model_validate(prod_args())
    repo = Path(REPO_ROOT / "model_repository")
    for d in cfg.deployments:
        for model in d.models:
            assert (repo / model / "config.pbtxt").is_file(), model
