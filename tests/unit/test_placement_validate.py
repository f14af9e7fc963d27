"""``python -m app.validate``: its output and exit status, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.validate", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prod_config_fits_eight_80gb_gpus() -> None:
    result = validate("serve_configs/prod.yaml", "--gpu-memory-gb", "80", "--gpus", "8")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "application 'triton' is a valid AppConfig" in out
    assert "  0  triton_vllm           1.00  mixtral-8x7b-vllm#1 (GPUs 0+1)" in out
    assert "gpu_memory_utilization = (80 - 4) / 80 = 0.95" in out
    assert "kv_cache_free_gpu_mem_fraction = 20.9 / (80 - 16.1 - 3 = 60.9) = 0.3431" in out
    assert out.rstrip().endswith("fits: 8 of 8 GPUs used")


def test_too_few_gpus_exit_1_with_the_reason() -> None:
    result = validate("serve_configs/prod.yaml", "--gpu-memory-gb", "80", "--gpus", "7")
    assert result.returncode == 1
    assert "DOES NOT FIT: 8 of 7 GPUs used" in result.stdout
    assert "need 8 GPUs of 80 GB, the config has 7" in result.stderr


def test_small_gpus_exit_1_with_the_arithmetic() -> None:
    result = validate("serve_configs/prod.yaml", "--gpu-memory-gb", "40")
    assert result.returncode == 1
    assert (
        "codellama-13b-vllm: weights 26.0 GB + min KV 13.4 GB + overhead 4.0 GB = 43.4 GB "
        "> 1 x 40 GB = 40.0 GB (deployments[1].gpu_memory)"
    ) in result.stderr


def test_invalid_config_exit_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "applications:\n"
        "  - name: triton\n"
        "    import_path: app.builders:build_app\n"
        "    args:\n"
        "      model_repository: /m\n"
        "      deployments:\n"
        "        - {name: a, models: [x], num_gpus: 0.5,\n"
        "           gpu_memory: {engine: vllm, model: x, weights_gb: -1}}\n"
    )
    result = validate(str(bad), "--gpu-memory-gb", "80")
    assert result.returncode == 2
    assert "deployments.0.gpu_memory.weights_gb: Input should be greater than 0" in result.stderr


def test_missing_gpu_memory_exit_2(tmp_path: Path) -> None:
    bare = tmp_path / "args.yaml"
    bare.write_text("model_repository: /m\ndeployments: [{name: a, models: [x], num_gpus: 0.5}]\n")
    result = validate(str(bare))
    assert result.returncode == 2
    assert "pass --gpu-memory-gb" in result.stderr


def test_no_gpu_deployment_needs_no_gpu_memory(tmp_path: Path) -> None:
    bare = tmp_path / "args.yaml"
    bare.write_text("model_repository: /m\ndeployments: [{name: a, models: [x]}]\n")
    result = validate(str(bare))
    assert result.returncode == 0, result.stderr
    assert "no GPUs used" in result.stdout


def test_here_runs_the_builds_filesystem_checks(tmp_path: Path) -> None:
    """What ``serve run prod.yaml`` would only print in a loop, ``--here`` exits 2 with."""
    missing = tmp_path / "absent"
    config = tmp_path / "prod.yaml"
    text = (REPO_ROOT / "serve_configs" / "prod.yaml").read_text()
    config.write_text(text.replace("/models/repository", str(missing)))
    result = validate(str(config), "--here", "--gpu-memory-gb", "80")
    assert result.returncode == 2, result.stdout
    assert f"model_repository: '{missing}' is not a directory on this node" in result.stderr
    assert "make serve" in result.stderr

    missing.mkdir()  # a repository without the configured models' directories
    result = validate(str(config), "--here", "--gpu-memory-gb", "80")
    assert result.returncode == 2, result.stdout
    assert "deployments[0].models[0]: model " in result.stderr
    assert "has no directory in model_repository" in result.stderr
