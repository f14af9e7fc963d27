"""Every model config of the repository parses with Triton's own schema; the LLMs share
one text interface; model.json files carry the engine arguments they need."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import MODEL_REPOSITORY

CONFIGS = sorted(MODEL_REPOSITORY.glob("*/config.pbtxt"))
LLMS = ["llama3-8b-trtllm", "mixtral-8x7b-vllm", "codellama-13b-vllm"]
STRING, BOOL, INT32 = (
    model_config_pb2.TYPE_STRING,
    model_config_pb2.TYPE_BOOL,
    model_config_pb2.TYPE_INT32,
)


def parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_repository_has_configs() -> None:
    names = {p.parent.name for p in CONFIGS}
    assert {*LLMS, "minilm-gpu", "llama3-8b-trtllm-engine"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_config_parses_with_tritons_schema(path: Path) -> None:
    config = parse(path)
    assert config.name in ("", path.parent.name)
    assert config.backend or config.platform


def _inputs(config: Any) -> dict[str, Any]:
    return {i.name: i for i in config.input}


@pytest.mark.parametrize("name", LLMS)
def test_llms_share_the_text_interface(name: str) -> None:
    config = parse(MODEL_REPOSITORY / name / "config.pbtxt")
    inputs = _inputs(config)
    assert inputs["text_input"].data_type == STRING and not inputs["text_input"].optional
    assert inputs["stream"].data_type == BOOL and inputs["stream"].optional
    assert inputs["sampling_parameters"].data_type == STRING
    assert inputs["sampling_parameters"].optional
    if "max_tokens" in inputs:
        assert inputs["max_tokens"].data_type == INT32 and inputs["max_tokens"].optional
    assert [(o.name, o.data_type) for o in config.output] == [("text_output", STRING)]
    # vLLM models declare decoupled; Triton derives it for the ensemble from its engine.
    assert config.model_transaction_policy.decoupled or config.platform == "ensemble"


def test_trtllm_ensemble_steps_exist_and_engine_is_decoupled() -> None:
    ensemble = parse(MODEL_REPOSITORY / "llama3-8b-trtllm" / "config.pbtxt")
    steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
    assert steps == [
        "llama3-8b-trtllm-preprocess",
        "llama3-8b-trtllm-engine",
        "llama3-8b-trtllm-postprocess",
    ]
    for step in ensemble.ensemble_scheduling.step:
        config = parse(MODEL_REPOSITORY / step.model_name / "config.pbtxt")
        assert config.max_batch_size >= ensemble.max_batch_size == 64
        declared = {i.name for i in config.input} | {o.name for o in config.output}
        assert set(step.input_map) | set(step.output_map) <= declared, step.model_name
    engine = parse(MODEL_REPOSITORY / "llama3-8b-trtllm-engine" / "config.pbtxt")
    assert engine.backend == "tensorrtllm" and engine.model_transaction_policy.decoupled
    params = {k: v.string_value for k, v in engine.parameters.items()}
    assert params["gpt_model_path"].startswith("/models/cache/")
    assert params["batch_scheduler_policy"] == "max_utilization"
    assert 0 < float(params["kv_cache_free_gpu_mem_fraction"]) < 1


def test_postprocess_takes_inputs_only_from_the_decoupled_engine() -> None:
    """Triton refuses an ensemble step fed by two different decoupled origins."""
    ensemble = parse(MODEL_REPOSITORY / "llama3-8b-trtllm" / "config.pbtxt")
    engine_step, post_step = ensemble.ensemble_scheduling.step[1:]
    assert set(post_step.input_map.values()) <= set(engine_step.output_map.values())


MODEL_JSONS = sorted(MODEL_REPOSITORY.glob("*/1/model.json"))


@pytest.mark.parametrize("path", MODEL_JSONS, ids=lambda p: p.parts[-3])
def test_model_json_parses_with_required_keys(path: Path) -> None:
    """vLLM engine arguments (stand-ins of other backends use the same file)."""
    engine_args = json.loads(path.read_text())
    assert isinstance(engine_args.get("model"), str) and engine_args["model"]
    assert 0 < engine_args.get("gpu_memory_utilization", 0.9) <= 1
    assert int(engine_args.get("tensor_parallel_size", 1)) >= 1
    assert parse(path.parents[1] / "config.pbtxt").model_transaction_policy.decoupled


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "mixtral-8x7b-vllm",
            {
                "model": "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ",
                "quantization": "awq",
                "max_model_len": 8192,
                "tensor_parallel_size": 2,
            },
        ),
        (
            "codellama-13b-vllm",
            {
                "model": "codellama/CodeLlama-13b-Instruct-hf",
                "dtype": "float16",
                "max_model_len": 16384,
            },
        ),
    ],
)
def test_vllm_engine_arguments(name: str, expected: dict[str, Any]) -> None:
    engine_args = json.loads((MODEL_REPOSITORY / name / "1" / "model.json").read_text())
    assert expected.items() <= engine_args.items()
    assert engine_args["download_dir"].startswith("/models/cache/")


def test_gpu_embedding_has_minilms_interface_on_a_gpu() -> None:
    cpu = parse(MODEL_REPOSITORY / "minilm" / "config.pbtxt")
    gpu = parse(MODEL_REPOSITORY / "minilm-gpu" / "config.pbtxt")
    assert list(gpu.input) == list(cpu.input) and list(gpu.output) == list(cpu.output)
    assert gpu.max_batch_size == cpu.max_batch_size
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


def _sampling() -> ModuleType:
    path = MODEL_REPOSITORY / "llama3-8b-trtllm-preprocess" / "1" / "sampling.py"
    spec = importlib.util.spec_from_file_location("llama3_sampling", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sampling_defaults_follow_vllm() -> None:
    parsed = _sampling().parse_sampling(None, None)
    assert {k: parsed[k] for k in ("max_tokens", "temperature", "top_k", "top_p")} == {
        "max_tokens": 16,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }


def test_sampling_max_tokens_tensor_wins_and_zero_temperature_is_greedy() -> None:
    parsed = _sampling().parse_sampling(b'{"max_tokens": 5, "temperature": 0, "top_p": 0.9}', 7)
    picked = {k: parsed[k] for k in ("max_tokens", "temperature", "top_k", "top_p")}
    assert picked == {"max_tokens": 7, "temperature": 1.0, "top_k": 1, "top_p": 0.9}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "sampling_parameters: not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"best_of": 2}', "unsupported ['best_of']"),
        (b'{"max_tokens": 0}', "max_tokens: must be an integer >= 1"),
        (b'{"top_p": 0}', "sampling_parameters.top_p"),
        (b'{"temperature": "hot"}', "sampling_parameters.temperature"),
        (b'{"top_k": -2}', "sampling_parameters.top_k"),
    ],
)
def test_sampling_errors_name_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        _sampling().parse_sampling(raw, None)
    assert message in str(info.value)
