"""Pools in the config: globs and the residency block validate purely, naming the
field; globs resolve against a repository (explicit names win; ambiguity fails)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import AppConfig
from app.residency.memory import declared_bytes
from app.residency.pools import resolve_pools


def app(repository: str, *deployments: dict[str, Any]) -> AppConfig:
    return AppConfig.model_validate(
        {"model_repository": repository, "deployments": list(deployments)}
    )


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    for name in ["pool-a", "pool-b", "pool-c", "other", ".hidden"]:
        (tmp_path / name).mkdir()
    (tmp_path / "pool-c" / "config.pbtxt").write_text(
        'parameters { key: "declared_memory_bytes" value: { string_value: "1048576" } }\n'
    )
    return tmp_path


def test_residency_block_round_trips() -> None:
    cfg = app(
        "/m",
        {
            "name": "pool",
            "models": ["pool-*", "base"],
            "residency": {"memory_budget_gb": 2, "pinned": ["base"], "min_resident_s": 5},
        },
    )
    residency = cfg.deployments[0].residency
    assert residency is not None
    assert residency.budget_bytes == 2 << 30
    assert residency.pinned == ["base"]


@pytest.mark.parametrize(
    ("residency", "field"),
    [
        ({"memory_budget_gb": 0}, "memory_budget_gb"),
        ({"memory_budget_gb": 1, "pinned": ["pool-*"]}, "residency.pinned[0]"),
        ({"memory_budget_gb": 1, "min_resident_s": -1}, "min_resident_s"),
        ({"memory_budget_gb": 1, "budget": 3}, "budget"),
    ],
)
def test_invalid_residency_names_the_field(residency: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace("[", r"\[")):
        app("/m", {"name": "pool", "models": ["pool-*"], "residency": residency})


def test_pinned_must_be_a_listed_model_without_globs() -> None:
    with pytest.raises(ValidationError, match=r"residency.pinned\[0\]: 'x' is not one of"):
        app(
            "/m",
            {"name": "d", "models": ["a"], "residency": {"memory_budget_gb": 1, "pinned": ["x"]}},
        )


def test_unclosed_set_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"models\[0\]: glob 'pool-\[ab'"):
        app("/m", {"name": "d", "models": ["pool-[ab"]})


def test_globs_resolve_and_explicit_names_win(repository: Path) -> None:
    cfg = app(
        str(repository),
        {"name": "pool", "models": ["pool-*", "*"]},
        {"name": "single", "models": ["pool-b"]},
    )
    resolved = resolve_pools(cfg)
    assert resolved.deployments[0].models == ["pool-a", "pool-c", "other"]
    assert resolved.deployments[1].models == ["pool-b"]


def test_two_deployments_globs_on_one_model_fail(repository: Path) -> None:
    cfg = app(
        str(repository),
        {"name": "one", "models": ["pool-*"]},
        {"name": "two", "models": ["*-a"]},
    )
    with pytest.raises(ValueError, match=r"deployments\[1\].models\[0\]: glob '\*-a' and "):
        resolve_pools(cfg)


def test_glob_matching_nothing_fails(repository: Path) -> None:
    cfg = app(str(repository), {"name": "one", "models": ["nothing-*"]})
    with pytest.raises(ValueError, match=r"deployments\[0\].models\[0\]: glob 'nothing-\*'"):
        resolve_pools(cfg)


def test_pinned_outside_the_matches_fails(repository: Path) -> None:
    cfg = app(
        str(repository),
        {
            "name": "one",
            "models": ["pool-*"],
            "residency": {"memory_budget_gb": 1, "pinned": ["other"]},
        },
    )
    with pytest.raises(ValueError, match=r"deployments\[0\].residency.pinned\[0\]: 'other'"):
        resolve_pools(cfg)


def _split(*models: str) -> dict[str, Any]:
    return {"canary": {"targets": [{"model": m, "weight": 1} for m in models]}}


def test_traffic_targets_may_be_pool_models(repository: Path) -> None:
    cfg = AppConfig.model_validate(
        {
            "model_repository": str(repository),
            "deployments": [{"name": "pool", "models": ["pool-*"]}],
            "traffic": _split("pool-a", "pool-b"),
        }
    )
    resolved = resolve_pools(cfg)
    assert [t.model for t in resolved.traffic["canary"].targets] == ["pool-a", "pool-b"]


def test_traffic_target_matching_a_glob_but_absent_fails_when_resolved(
    repository: Path,
) -> None:
    cfg = AppConfig.model_validate(
        {
            "model_repository": str(repository),
            "deployments": [{"name": "pool", "models": ["pool-*"]}],
            "traffic": _split("pool-a", "pool-zz"),
        }
    )
    with pytest.raises(ValueError, match=r"traffic.canary.targets\[1\].model: 'pool-zz' is not"):
        resolve_pools(cfg)


def test_traffic_target_matching_no_glob_fails_at_once() -> None:
    with pytest.raises(ValidationError, match=r"traffic.canary.targets\[0\].model: 'x-1' is not"):
        AppConfig.model_validate(
            {
                "model_repository": "/m",
                "deployments": [{"name": "pool", "models": ["pool-*"]}],
                "traffic": _split("x-1"),
            }
        )


def test_globs_need_a_local_repository() -> None:
    cfg = app("s3://bucket/models", {"name": "one", "models": ["pool-*"]})
    with pytest.raises(ValueError, match="model_repository: globs"):
        resolve_pools(cfg)


def test_declared_size_is_read_from_config_pbtxt(repository: Path) -> None:
    assert declared_bytes(str(repository), "pool-c") == 1 << 20
    assert declared_bytes(str(repository), "pool-a") is None


def test_validate_refuses_a_declared_size_over_the_budget(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from app.validate import main

    args = {
        "model_repository": str(repository),
        "deployments": [
            {"name": "pool", "models": ["pool-*"], "residency": {"memory_budget_gb": 0.0005}}
        ],
    }
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump(args))
    assert main([str(config)]) == 1
    err = capsys.readouterr().err
    assert "deployments[0].residency.memory_budget_gb: model 'pool-c' declares" in err
    args["deployments"][0]["residency"] = {"memory_budget_gb": 0.01}  # type: ignore[index]
    config.write_text(yaml.safe_dump(args))
    assert main([str(config)]) == 0
