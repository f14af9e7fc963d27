"""Replicas load vLLM and TensorRT-LLM models with their GPU memory share set."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from app.config import AppConfig
from app.placement.apply import MODEL_JSON_FILE, load_overrides
from app.triton.errors import InvalidArgumentError
from tests.conftest import MODEL_REPOSITORY, REPO_ROOT


def prod(**changes: Any) -> AppConfig:
    document = yaml.safe_load((REPO_ROOT / "serve_configs" / "prod.yaml").read_text())
    args = copy.deepcopy(document["applications"][0]["args"])
    args["model_repository"] = str(MODEL_REPOSITORY)
    args.update(changes)
    return AppConfig.model_validate(args)


def test_vllm_model_loads_with_model_json_carrying_its_share() -> None:
    config, files = load_overrides(
        prod(gpus={"memory_gb": 160}), "codellama-13b-vllm", "codellama-13b-vllm", None, None
    )
    assert config is not None and files is not None
    document = json.loads(config)
    assert (document["name"], document["backend"]) == ("codellama-13b-vllm", "vllm")
    assert document["model_transaction_policy"] == {"decoupled": True}
    engine_args = json.loads(files[MODEL_JSON_FILE])
    assert engine_args["gpu_memory_utilization"] == 0.975  # (160 - 4) / 160
    assert engine_args["model"] == "codellama/CodeLlama-13b-Instruct-hf"
    assert engine_args["max_model_len"] == 16384


def test_a_clients_model_json_keeps_its_arguments_with_the_share_set() -> None:
    client = {MODEL_JSON_FILE: b'{"model": "x/y", "gpu_memory_utilization": 0.99}', "file:a": b"1"}
    _, files = load_overrides(prod(), "codellama-13b-vllm", "codellama-13b-vllm", "{}", client)
    assert files is not None and files["file:a"] == b"1"
    assert json.loads(files[MODEL_JSON_FILE]) == {"model": "x/y", "gpu_memory_utilization": 0.95}


def test_tensorrtllm_engine_loads_with_its_kv_fraction() -> None:
    config, files = load_overrides(
        prod(), "llama3-8b-trtllm", "llama3-8b-trtllm-engine", None, None
    )
    assert files is None and config is not None
    document = json.loads(config)
    assert document["backend"] == "tensorrtllm"
    assert document["parameters"]["kv_cache_free_gpu_mem_fraction"] == {"string_value": "0.3431"}
    assert document["parameters"]["gpt_model_path"]["string_value"].startswith("/models/cache/")


@pytest.mark.parametrize(
    ("deployment", "model"),
    [("llama3-8b-trtllm", "llama3-8b-trtllm"), ("embedding-gpu", "minilm-gpu")],
)
def test_other_models_load_unchanged(deployment: str, model: str) -> None:
    assert load_overrides(prod(), deployment, model, None, None) == (None, None)


def test_tensor_parallel_must_match_num_gpus() -> None:
    cfg = prod()
    deployments = [
        d.model_copy(update={"num_gpus": 1}) if d.name == "mixtral-8x7b-vllm" else d
        for d in cfg.deployments
    ]
    cfg = cfg.model_copy(update={"deployments": deployments})
    with pytest.raises(InvalidArgumentError, match=r"runs on 2 GPUs .* has num_gpus 1"):
        load_overrides(cfg, "mixtral-8x7b-vllm", "mixtral-8x7b-vllm", None, None)


def test_share_needs_the_gpu_memory() -> None:
    with pytest.raises(InvalidArgumentError, match=r"gpus.memory_gb is not"):
        load_overrides(prod(gpus=None), "codellama-13b-vllm", "codellama-13b-vllm", None, None)


def test_share_that_cannot_fit_is_a_load_error_with_the_arithmetic() -> None:
    with pytest.raises(InvalidArgumentError, match=r"43.4 GB > 1 x 40 GB"):
        load_overrides(
            prod(gpus={"memory_gb": 40}), "codellama-13b-vllm", "codellama-13b-vllm", None, None
        )
