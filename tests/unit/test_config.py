"""AppConfig: a valid config round-trips; each invalid one fails naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import (
    AppConfig,
    AutoscalingConfig,
    ModelDeploymentConfig,
    RouterConfig,
    TritonOptionsConfig,
    check_paths,
    effective_triton_options,
    model_owner,
    validate_model_name,
)

VALID: dict[str, Any] = {
    "model_repository": "/models",
    "deployments": [
        {
            "name": "vision",
            "models": ["resnet50", "yolo_v8"],
            "num_gpus": 0.5,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 4,
                "initial_replicas": 2,
                "target_ongoing_requests": 8,
            },
            "triton": {"log_verbose": 1, "backend_configs": {"onnxruntime": {"threads": 4}}},
            "resources": {"accelerator_type:A100": 0.1},
        },
        {"name": "text.small-1", "models": ["bert-base"], "num_gpus": 2, "num_replicas": 3},
    ],
    "router": {"num_replicas": 2, "request_timeout_s": 30},
    "triton": {"backend_configs": {"onnxruntime": {"arena": "true"}, "python": {"shm": "1M"}}},
    "allow_repository_file_overrides": True,
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """VALID with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


def error_of(doc: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(doc)
    first = info.value.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return loc, first["msg"]


def test_valid_config_round_trips() -> None:
    cfg = AppConfig.model_validate(VALID)
    again = AppConfig.model_validate(cfg.model_dump())
    assert again == cfg
    assert AppConfig.model_validate_json(cfg.model_dump_json()) == cfg
    dep = cfg.deployments[0]
    assert dep.triton is not None
    assert dep.triton.backend_configs == {"onnxruntime": {"threads": "4"}}
    assert cfg.router.max_ongoing_requests == 256
    assert cfg.max_request_body_bytes == 64 << 20


def test_defaults() -> None:
    cfg = AppConfig(
        model_repository="r", deployments=[ModelDeploymentConfig(name="d", models=["m"])]
    )
    dep = cfg.deployments[0]
    assert (dep.num_gpus, dep.num_cpus, dep.num_replicas, dep.autoscaling) == (0, 1, None, None)
    assert (dep.max_ongoing_requests, dep.max_queued_requests) == (64, 256)
    assert cfg.triton == TritonOptionsConfig()
    assert cfg.router == RouterConfig()
    assert cfg.allow_repository_file_overrides is False


def test_frozen() -> None:
    cfg = AppConfig.model_validate(VALID)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.model_repository = "/elsewhere"  # type: ignore[misc]


def test_model_owner() -> None:
    cfg = AppConfig.model_validate(VALID)
    assert model_owner(cfg) == {
        "resnet50": "vision",
        "yolo_v8": "vision",
        "bert-base": "text.small-1",
    }


def test_effective_triton_options_merge() -> None:
    cfg = AppConfig.model_validate(VALID)
    vision = effective_triton_options(cfg, "vision")
    assert vision.log_verbose == 1
    assert vision.backend_configs == {
        "onnxruntime": {"arena": "true", "threads": "4"},
        "python": {"shm": "1M"},
    }
    assert effective_triton_options(cfg, "text.small-1") == cfg.triton
    with pytest.raises(KeyError):
        effective_triton_options(cfg, "nope")


@pytest.mark.parametrize(
    ("path", "value", "loc", "needle"),
    [
        ("model_repository", "", "model_repository", "at least 1"),
        ("model_repository", ..., "model_repository", "Field required"),
        ("deployments", [], "deployments", "at least 1"),
        ("unknown_field", 1, "unknown_field", "Extra inputs"),
        ("max_request_body_bytes", 0, "max_request_body_bytes", "greater than 0"),
        ("max_tensor_elements", 0, "max_tensor_elements", "greater than 0"),
        ("max_tensor_elements", 1 << 41, "max_tensor_elements", "less than or equal"),
        ("max_bytes_element_bytes", -1, "max_bytes_element_bytes", "greater than 0"),
        ("deployments.1.name", "vision", "deployments", "deployments[1].name"),
        ("deployments.1.models", ["resnet50"], "deployments", "deployments[1].models[0]"),
        ("deployments.0.name", "-bad", "deployments.0.name", "pattern"),
        ("deployments.0.name", "a" * 65, "deployments.0.name", "pattern"),
        ("deployments.0.name", "has space", "deployments.0.name", "pattern"),
        ("deployments.0.models", [], "deployments.0.models", "at least 1"),
        ("deployments.0.models", ["a", "a"], "deployments.0.models", "models[1]"),
        ("deployments.0.models", ["a/b"], "deployments.0.models", "models[0]"),
        ("deployments.0.models", [".hidden"], "deployments.0.models", "'.'"),
        ("deployments.0.models", ["a..b"], "deployments.0.models", "'..'"),
        ("deployments.0.models", [""], "deployments.0.models", "empty"),
        ("deployments.0.models", ["a b"], "deployments.0.models", "whitespace"),
        ("deployments.0.num_gpus", 1.5, "deployments.0.num_gpus", "num_gpus"),
        ("deployments.0.num_gpus", -0.5, "deployments.0.num_gpus", "greater than or equal"),
        ("deployments.0.num_gpus", float("inf"), "deployments.0.num_gpus", "finite"),
        ("deployments.0.num_cpus", -1, "deployments.0.num_cpus", "greater than or equal"),
        ("deployments.0.num_replicas", 2, "deployments.0.num_replicas", "exclusive"),
        ("deployments.1.num_replicas", 0, "deployments.1.num_replicas", "greater than"),
        ("deployments.0.max_ongoing_requests", 4, "deployments.0.max_ongoing_requests", "target"),
        ("deployments.0.max_ongoing_requests", 0, "deployments.0.max_ongoing_requests", "greater"),
        ("deployments.0.max_queued_requests", 0, "deployments.0.max_queued_requests", "greater"),
        ("deployments.0.resources", {"GPU": 1}, "deployments.0.resources", "'GPU'"),
        ("deployments.0.resources", {"x": -1}, "deployments.0.resources", "resources.x"),
        ("deployments.0.triton.log_verbose", -1, "deployments.0.triton.log_verbose", "greater"),
        (
            "deployments.0.triton.exit_timeout_s",
            -1,
            "deployments.0.triton.exit_timeout_s",
            "greater",
        ),
        ("deployments.0.triton.colour", 1, "deployments.0.triton.colour", "Extra inputs"),
        (
            "triton.backend_configs",
            {"onnx": {"a=b": "1"}},
            "triton.backend_configs",
            "backend_configs.onnx",
        ),
        ("triton.backend_configs", {"onnx": {"x": [1]}}, "triton.backend_configs.onnx.x", ""),
        ("router.max_ongoing_requests", 0, "router.max_ongoing_requests", "greater"),
        ("router.request_timeout_s", 0, "router.request_timeout_s", "greater than 0"),
        ("router.num_replicas", 0, "router.num_replicas", "greater"),
        ("router.num_cpus", -1, "router.num_cpus", "greater"),
    ],
)
def test_invalid_configs_name_the_field(path: str, value: Any, loc: str, needle: str) -> None:
    got_loc, msg = error_of(with_change(path, value))
    assert got_loc == loc, (got_loc, msg)
    assert needle in msg, msg


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas", "max_replicas (2)"),
        ({"initial_replicas": 9}, "initial_replicas", "initial_replicas (9)"),
        ({"min_replicas": -1}, "min_replicas", "greater than or equal"),
        ({"max_replicas": 0}, "max_replicas", "greater than or equal"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests", "greater than 0"),
        ({"upscale_delay_s": -1}, "upscale_delay_s", "greater than or equal"),
        ({"downscale_delay_s": float("nan")}, "downscale_delay_s", "finite"),
    ],
)
def test_invalid_autoscaling(changes: dict[str, Any], field: str, needle: str) -> None:
    base = {"min_replicas": 1, "max_replicas": 4}
    with pytest.raises(ValidationError) as info:
        AutoscalingConfig.model_validate({**base, **changes})
    first = info.value.errors()[0]
    assert first["loc"] == (field,)
    assert needle in first["msg"]


@pytest.mark.parametrize("gpus", [0, 0.25, 1, 1.0, 2, 8])
def test_valid_gpu_counts(gpus: float) -> None:
    assert ModelDeploymentConfig(name="d", models=["m"], num_gpus=gpus).num_gpus == gpus


def test_scale_to_zero_is_allowed() -> None:
    auto = AutoscalingConfig(min_replicas=0, max_replicas=2, initial_replicas=0)
    assert auto.min_replicas == 0


def test_validate_model_name() -> None:
    assert validate_model_name("ens_scale-2.v1") == "ens_scale-2.v1"
    for bad in ["", ".", "..", "a/b", "a\\b", "x\x00", "a" * 256]:
        with pytest.raises(ValueError):
            validate_model_name(bad)


def test_check_paths(tmp_path: Path) -> None:
    (tmp_path / "resnet50").mkdir()
    (tmp_path / "yolo_v8").mkdir()
    (tmp_path / "bert-base").mkdir()
    good = AppConfig.model_validate(with_change("model_repository", str(tmp_path)))
    check_paths(good)
    (tmp_path / "bert-base").rmdir()
    with pytest.raises(ValueError, match=r"deployments\[1\]\.models\[0\].*'bert-base'"):
        check_paths(good)
    missing = AppConfig.model_validate(with_change("model_repository", str(tmp_path / "no")))
    with pytest.raises(ValueError, match="model_repository"):
        check_paths(missing)
    check_paths(AppConfig.model_validate(with_change("model_repository", "s3://bucket/models")))


def test_repository_of_this_project_passes(model_repository: Path) -> None:
    cfg = AppConfig(
        model_repository=str(model_repository),
        deployments=[ModelDeploymentConfig(name="cpu", models=["echo", "versioned"])],
    )
    check_paths(cfg)
