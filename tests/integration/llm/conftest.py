"""A real Ray cluster serving the CPU stand-in LLM and MiniLM on the OpenAI API.

``tiny-llm`` speaks Triton's vLLM-backend tensors and is exposed for completions and
chat; ``minilm`` for embeddings; ``echo`` is served but not on /v1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import serve

from app.builders import build_app
from tests.integration.serve.conftest import _free_port, _wait_for_models

APP_NAME = "llm"


def llm_app_args(model_repository: Path) -> dict[str, Any]:
    return {
        "model_repository": str(model_repository),
        "triton": {"log_info": False},
        "deployments": [
            {
                "name": "tiny-llm",
                "models": ["tiny-llm"],
                "num_gpus": 0.5,
                "num_cpus": 0.25,
                "max_ongoing_requests": 16,
                "openai": {"tiny-llm": {"task": "generate"}},
            },
            {
                "name": "embedding",
                "models": ["minilm"],
                "num_gpus": 0.25,
                "num_cpus": 0.25,
                "openai": {"minilm": {"task": "embed"}},
            },
            {"name": "echo", "models": ["echo"], "num_gpus": 0.25, "num_cpus": 0.25},
        ],
    }


@pytest.fixture(scope="package")
def llm_url(model_repository: Path) -> Iterator[str]:
    port = _free_port()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve._run(build_app(llm_app_args(model_repository)), _blocking=False, name=APP_NAME)
        url = f"http://127.0.0.1:{port}"
        _wait_for_models(url, ["tiny-llm", "minilm", "echo"], timeout=240)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
