"""Every model of the production config carries the parameters its backend reads with
no fallback (app/triton/backend_parameters.py): a missing one fails the load on GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from app.triton.backend_parameters import REQUIRED_PARAMETERS, required_for
from tests.conftest import MODEL_REPOSITORY, REPO_ROOT


def _prod_models() -> list[str]:
    config = yaml.safe_load((REPO_ROOT / "serve_configs" / "prod.yaml").read_text())
    return sorted(
        {
            m
            for app in config["applications"]
            for d in app["args"]["deployments"]
            for m in d["models"]
        }
    )


def _config(name: str) -> model_config_pb2.ModelConfig:
    path: Path = MODEL_REPOSITORY / name / "config.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", _prod_models())
def test_production_model_has_its_backends_required_parameters(name: str) -> None:
    config = _config(name)
    missing = required_for(config.backend) - set(config.parameters)
    assert not missing, f"{name} ({config.backend}) lacks parameters {sorted(missing)}"


def test_guided_decoding_is_off_in_the_engine() -> None:
    params = _config("llama3-8b-trtllm-engine").parameters
    assert {"guided_decoding_backend", "xgrammar_tokenizer_info_path"} <= set(params)
    assert params["guided_decoding_backend"].string_value == ""
    assert params["xgrammar_tokenizer_info_path"].string_value == ""


def test_rows_cite_their_source_and_apply_by_version() -> None:
    assert all(row.source and row.names for row in REQUIRED_PARAMETERS)
    assert "tokenizer_dir" not in required_for("tensorrtllm", (0, 18))
    assert "tokenizer_dir" in required_for("tensorrtllm", (0, 19))
    assert required_for("python") == set()
