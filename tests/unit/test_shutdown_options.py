"""Serve's graceful shutdown outlasts Triton's own wait for requests in flight, so a
replica stopping on its own is never killed mid-stop."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.builders import SHUTDOWN_MARGIN_S, deployment_options
from app.config import AppConfig, effective_triton_options

ROOT = Path(__file__).resolve().parents[2]


def test_every_prod_deployment_waits_for_triton_plus_a_margin() -> None:
    config = yaml.safe_load((ROOT / "serve_configs" / "prod.yaml").read_text())
    cfg = AppConfig.model_validate(config["applications"][0]["args"])
    assert cfg.triton.exit_timeout_s == 60  # what the prod file asks for
    for dep in cfg.deployments:
        exit_timeout = effective_triton_options(cfg, dep.name).exit_timeout_s
        options = deployment_options(dep, exit_timeout)
        assert options["graceful_shutdown_timeout_s"] >= exit_timeout + SHUTDOWN_MARGIN_S


def test_short_exit_timeouts_keep_serves_30_s() -> None:
    cfg = AppConfig.model_validate(
        {"model_repository": "/r", "deployments": [{"name": "d", "models": ["m"]}]}
    )
    assert deployment_options(cfg.deployments[0], 1)["graceful_shutdown_timeout_s"] == 30
