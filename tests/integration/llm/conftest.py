"""A real Ray cluster serving the CPU stand-in LLM and MiniLM on the OpenAI API.

``tiny-llm`` speaks Triton's vLLM-backend tensors and is exposed for completions and
chat; ``minilm`` for embeddings; ``echo`` is served but not on /v1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import local_stack

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
    ready = ["tiny-llm", "minilm", "echo"]
    args = llm_app_args(model_repository)
    with local_stack(
        args, name=APP_NAME, num_gpus=1, ready_models=ready, ready_timeout=240
    ) as stack:
        yield stack.url
