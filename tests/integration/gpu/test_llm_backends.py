"""vLLM and TensorRT-LLM served through the embedded Triton (NVIDIA GPU + NGC image).

Run inside ``nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3`` (vLLM) or
``-trtllm-python-py3`` (TensorRT-LLM) with this project installed: ``pytest -m gpu``.

- ``VLLM_TEST_MODEL`` (default ``facebook/opt-125m``): a small model already in the
  Hugging Face cache (``HF_HOME``); nothing is downloaded unless ``HF_HUB_OFFLINE=0``.
- ``TRTLLM_TEST_ENGINE_DIR`` and ``TRTLLM_TEST_TOKENIZER_DIR``: a built engine and its
  tokenizer (e.g. from ``kuberay/`` engine build job); the TensorRT-LLM test skips
  without them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# A GPU box may lack Ray or openai (the borrowed one has neither): skip, not a collection
# error. Imports that need them come after.
ray = pytest.importorskip("ray", reason="Ray is not installed")
openai = pytest.importorskip("openai", reason="openai is not installed")


from tests.support.stack import local_stack  # noqa: E402

pytestmark = pytest.mark.gpu

BACKENDS = Path(os.environ.get("TRITON_HOME", "/opt/tritonserver")) / "backends"
REPO = Path(__file__).resolve().parents[3] / "model_repository"


def _needs_backend(name: str) -> None:
    if not (BACKENDS / name).is_dir():
        pytest.skip(f"Triton backend {name!r} not found under {BACKENDS} (use its NGC image)")


def _vllm_model(root: Path, name: str, utilization: float) -> None:
    (root / name / "1").mkdir(parents=True)
    shutil.copy(REPO / "mixtral-8x7b-vllm" / "config.pbtxt", root / name / "config.pbtxt")
    text = (root / name / "config.pbtxt").read_text().replace("mixtral-8x7b-vllm", name)
    (root / name / "config.pbtxt").write_text(text)
    engine = {
        "model": os.environ.get("VLLM_TEST_MODEL", "facebook/opt-125m"),
        "gpu_memory_utilization": utilization,
        "enforce_eager": True,
        "max_model_len": 1024,
    }
    (root / name / "1" / "model.json").write_text(json.dumps(engine))


@pytest.fixture(scope="module")
def two_vllm_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two vLLM engines at 0.5 GPU each on one GPU; their memory shares derived. Both
    declare gpu_memory, so their replicas load one after the other (the GPU load lock,
    app/placement/load_lock.py): vLLM's profiling would otherwise count the other's
    allocations as its own."""
    _needs_backend("vllm")
    root = tmp_path_factory.mktemp("repo")
    memory = {"engine": "vllm", "weights_gb": 0.5, "min_kv_cache_gb": 0.5}
    deployments: list[dict[str, Any]] = []
    for name in ("small-a", "small-b"):
        _vllm_model(root, name, 0.9)  # the app replaces 0.9 with the derived share
        deployments.append(
            {
                "name": name,
                "models": [name],
                "num_gpus": 0.5,
                "num_cpus": 1,
                "gpu_memory": {**memory, "model": name},
                "openai": {name: {"task": "generate"}},
            }
        )
    import torch

    total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    args = {
        "model_repository": str(root),
        "gpus": {"memory_gb": round(total_gb, 1), "count": 1},
        "deployments": deployments,
    }
    ready = ["small-a", "small-b"]
    stack = local_stack(
        args, name="gpu-llm", num_cpus=8, num_gpus=1, ready_models=ready, ready_timeout=900
    )
    with stack as running:
        yield running.url


def test_two_vllm_engines_share_one_gpu(two_vllm_models: str) -> None:
    for name in ("small-a", "small-b"):
        body = {
            "text_input": "The capital of France is",
            "sampling_parameters": '{"max_tokens": 8}',
        }
        response = httpx.post(
            f"{two_vllm_models}/v2/models/{name}/generate", json=body, timeout=120
        )
        assert response.status_code == 200, response.text
        assert response.json()["text_output"]


def test_vllm_through_the_openai_client(two_vllm_models: str) -> None:
    client = openai.OpenAI(base_url=f"{two_vllm_models}/v1", api_key="unused")
    done = client.completions.create(model="small-a", prompt="Hello", max_tokens=5)
    assert done.usage is not None and done.usage.completion_tokens == 5
    chunks = list(
        client.completions.create(model="small-b", prompt="Hello", max_tokens=5, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_tensorrt_llm_engine_through_embedded_triton(tmp_path: Path) -> None:
    _needs_backend("tensorrtllm")
    engine_dir = os.environ.get("TRTLLM_TEST_ENGINE_DIR")
    tokenizer_dir = os.environ.get("TRTLLM_TEST_TOKENIZER_DIR")
    if not engine_dir or not tokenizer_dir:
        pytest.skip("set TRTLLM_TEST_ENGINE_DIR and TRTLLM_TEST_TOKENIZER_DIR to a built engine")
    names = [
        "llama3-8b-trtllm",
        "llama3-8b-trtllm-preprocess",
        "llama3-8b-trtllm-engine",
        "llama3-8b-trtllm-postprocess",
    ]
    for name in names:
        shutil.copytree(REPO / name, tmp_path / name)
        config = tmp_path / name / "config.pbtxt"
        text = config.read_text()
        text = text.replace("/models/cache/engines/llama3-8b", engine_dir)
        text = text.replace("/models/cache/tokenizers/llama3-8b-instruct", tokenizer_dir)
        config.write_text(text)

    import asyncio

    import numpy as np

    from app.triton import Options, Server

    async def run() -> str:
        with Server(Options(model_repository=str(tmp_path))) as server:
            for name in reversed(names):
                server.load(name)
            ensemble = server.model("llama3-8b-trtllm")
            text = b""  # bytes per token: join before decoding
            async for response in ensemble.async_infer(
                {
                    "text_input": np.array([[b"Hello, my name is"]], dtype=object),
                    "max_tokens": np.array([[8]], dtype=np.int32),
                    "stream": np.array([[True]]),
                }
            ):
                if "text_output" in response.outputs:
                    text += response.outputs["text_output"].reshape(-1)[0]
            return text.decode()

    assert asyncio.run(run())
