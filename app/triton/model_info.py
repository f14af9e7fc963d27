"""Typed views of what Triton reports as JSON: metadata, config, index, statistics.

Triton owns these documents and adds fields between releases, so unknown keys
are kept (``extra="allow"``) rather than rejected.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DurationStat",
    "InferenceStats",
    "ModelConfig",
    "ModelIndexEntry",
    "ModelMetadata",
    "ModelState",
    "ModelStatistics",
    "ServerMetadata",
    "TensorMetadata",
]


class _Reported(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ServerMetadata(_Reported):
    name: str
    version: str
    extensions: list[str] = Field(default_factory=list)


class TensorMetadata(_Reported):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Reported):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str = ""
    inputs: list[TensorMetadata] = Field(default_factory=list)
    outputs: list[TensorMetadata] = Field(default_factory=list)


class ModelState(enum.StrEnum):
    """States of the repository index, as Triton spells them."""

    UNKNOWN = "UNKNOWN"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


class ModelIndexEntry(_Reported):
    name: str
    version: str = ""
    state: str = ""
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == ModelState.READY


class ModelConfig(_Reported):
    """The model's effective configuration (Triton's ``config.pbtxt`` as JSON)."""

    name: str
    platform: str = ""
    backend: str = ""
    max_batch_size: int = 0
    input: list[dict[str, Any]] = Field(default_factory=list)
    output: list[dict[str, Any]] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    model_transaction_policy: dict[str, Any] = Field(default_factory=dict)
    dynamic_batching: dict[str, Any] | None = None
    version_policy: dict[str, Any] = Field(default_factory=dict)
    instance_group: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def decoupled(self) -> bool:
        return bool(self.model_transaction_policy.get("decoupled", False))


class DurationStat(_Reported):
    count: int = 0
    ns: int = 0


class InferenceStats(_Reported):
    success: DurationStat = Field(default_factory=DurationStat)
    fail: DurationStat = Field(default_factory=DurationStat)
    queue: DurationStat = Field(default_factory=DurationStat)
    compute_input: DurationStat = Field(default_factory=DurationStat)
    compute_infer: DurationStat = Field(default_factory=DurationStat)
    compute_output: DurationStat = Field(default_factory=DurationStat)


class ModelStatistics(_Reported):
    name: str
    version: str = ""
    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    inference_stats: InferenceStats = Field(default_factory=InferenceStats)
