"""Put an engine's GPU memory share into the load of its model.

vLLM reads ``gpu_memory_utilization`` only from ``<version>/model.json``, so a vLLM
model is loaded with that file overridden (``file:1/model.json``, which makes Triton
load from a directory holding only the given files, and needs the full config
alongside). TensorRT-LLM reads ``kv_cache_free_gpu_mem_fraction`` from its config
parameters, so it gets a config override. These overrides come from the app's own
config, not from a client, so ``allow_repository_file_overrides`` does not apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.config import AppConfig
from app.placement.config import Engine
from app.placement.shares import PlacementError, derive_share
from app.triton.errors import InvalidArgumentError

__all__ = ["MODEL_JSON_FILE", "load_overrides", "read_model_config"]

MODEL_JSON_FILE = "file:1/model.json"


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """``config.pbtxt`` as the JSON document Triton accepts as a load ``config``."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    document: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return document


def load_overrides(
    cfg: AppConfig,
    deployment: str,
    model: str,
    config: str | None,
    files: dict[str, bytes] | None,
) -> tuple[str | None, dict[str, bytes] | None]:
    """The ``config`` and ``files`` to load ``model`` with so that its engine takes its
    deployment's GPU share; unchanged for models without one. A client's own config or
    model.json (a load request) is kept, with the share set in it.

    Raises ``InvalidArgumentError`` (recorded as the model's load error) when the share
    cannot be derived or the repository's files cannot be read.
    """
    index, dep = next((i, d) for i, d in enumerate(cfg.deployments) if d.name == deployment)
    mem = dep.gpu_memory
    if mem is None or mem.engine is Engine.FIXED or mem.model != model:
        return config, files
    if cfg.gpus is None:
        raise InvalidArgumentError(
            f"deployments[{index}].gpu_memory is set but gpus.memory_gb is not; "
            f"the memory share of model '{model}' cannot be derived"
        )
    try:
        share = derive_share(dep, cfg.gpus.memory_gb, f"deployments[{index}]")
    except PlacementError as exc:
        raise InvalidArgumentError(str(exc)) from exc
    model_dir = Path(cfg.model_repository) / model
    try:
        document = json.loads(config) if config is not None else read_model_config(model_dir)
        if mem.engine is Engine.TENSORRTLLM:
            parameters = document.setdefault("parameters", {})
            parameters[share.setting or ""] = {"string_value": str(share.value)}
            return json.dumps(document), files
        raw = (files or {}).get(MODEL_JSON_FILE)
        if raw is None:
            raw = (model_dir / "1" / "model.json").read_bytes()
        engine_args = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(
            f"model '{model}': cannot set its GPU memory share: {exc}"
        ) from exc
    parallel = int(engine_args.get("tensor_parallel_size", 1)) * int(
        engine_args.get("pipeline_parallel_size", 1)
    )
    if parallel != share.gpus:
        raise InvalidArgumentError(
            f"model '{model}': model.json runs on {parallel} GPUs "
            f"(tensor_parallel_size x pipeline_parallel_size) but deployment "
            f"'{deployment}' has num_gpus {dep.num_gpus}"
        )
    engine_args[share.setting or ""] = share.value
    overridden = dict(files or {})
    overridden[MODEL_JSON_FILE] = json.dumps(engine_args, indent=2).encode()
    return json.dumps(document), overridden
