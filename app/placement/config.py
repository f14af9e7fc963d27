"""Config models of GPU memory placement: what each deployment's engine needs, and the GPUs.

Ray's fractional GPUs are bookkeeping only: Ray never limits the memory a replica
allocates. These models state the memory each engine needs so that its share of the
GPU can follow its ``num_gpus`` (see ``app.placement.shares``).
"""

from __future__ import annotations

import enum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Engine", "GpuMemoryConfig", "GpuPoolConfig"]


class Engine(enum.StrEnum):
    """How a deployment's GPU memory is bounded."""

    VLLM = "vllm"  # share -> gpu_memory_utilization in the model's 1/model.json
    TENSORRTLLM = "tensorrtllm"  # share -> kv_cache_free_gpu_mem_fraction parameter
    FIXED = "fixed"  # no knob: weights + overhead must fit (e.g. an embedding model)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuMemoryConfig(_Config):
    """GPU memory one replica of a deployment needs; its engine's share is derived from it."""

    engine: Engine = Field(description="vllm | tensorrtllm | fixed: which knob bounds memory.")
    model: str | None = Field(
        default=None,
        description="The model whose memory share is set (one of the deployment's models; "
        "the tensorrtllm engine model, not its ensemble). Required unless engine is fixed.",
    )
    weights_gb: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="GB of weights (or TensorRT engine) of one replica, over all its GPUs; "
        "split evenly across them when num_gpus > 1 (tensor parallelism).",
    )
    min_kv_cache_gb: float = Field(
        default=0,
        ge=0,
        allow_inf_nan=False,
        description="GB of KV cache per GPU the engine needs at least, e.g. one "
        "max_model_len sequence (vLLM refuses to start with less).",
    )
    overhead_gb: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description="GB per GPU the replica uses outside the engine's share: CUDA contexts "
        "of Triton and its stubs, CUDA graphs, activations.",
    )

    @model_validator(mode="after")
    def _model_names_the_engine(self) -> Self:
        if self.engine is not Engine.FIXED and self.model is None:
            raise ValueError(
                f"model: required when engine is {self.engine.value!r} "
                "(the model whose memory share is set)"
            )
        return self


class GpuPoolConfig(_Config):
    """The GPUs the application is placed on (all of one kind)."""

    memory_gb: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="GB of memory of each GPU (80 for an H100 80GB; use what the driver "
        "reports as total, or less).",
    )
    count: int | None = Field(
        default=None,
        ge=1,
        description="GPUs in the cluster at most; the packing plan must fit on them. "
        "None: only each deployment's own share is checked.",
    )
