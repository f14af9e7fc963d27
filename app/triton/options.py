"""Server options, validated when they are built rather than when Triton first uses them."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ModelControlMode", "Options"]


class ModelControlMode(enum.IntEnum):
    """``TRITONSERVER_ModelControlMode``."""

    NONE = 0
    POLL = 1
    EXPLICIT = 2


class Options(BaseModel):
    """Options of one in-process Triton server (the ``tritonserver`` CLI flags, typed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_repository: list[Path] = Field(
        min_length=1, description="Model repository directories (each must exist)."
    )
    model_control_mode: ModelControlMode = Field(
        default=ModelControlMode.EXPLICIT,
        description="EXPLICIT: load on request; POLL: follow the repository; NONE: load all.",
    )
    startup_models: list[str] = Field(
        default_factory=list,
        description="Models to load at start in EXPLICIT mode ('*' loads all).",
    )
    strict_model_config: bool = Field(
        default=False, description="Require a complete config.pbtxt (no auto-complete)."
    )
    strict_readiness: bool = Field(
        default=True, description="Server is ready only when every loaded model is ready."
    )
    exit_on_error: bool = Field(
        default=False,
        description="Fail start() when a startup model fails to load (else the index says why).",
    )
    exit_timeout_s: int = Field(
        default=30, ge=0, description="How long stop() waits for in-flight requests."
    )
    log_verbose: int = Field(default=0, ge=0, description="Triton's --log-verbose level.")
    log_info: bool = Field(default=False, description="Log Triton's INFO messages.")
    log_warn: bool = Field(default=True, description="Log Triton's WARNING messages.")
    log_error: bool = Field(default=True, description="Log Triton's ERROR messages.")
    metrics: bool = Field(default=True, description="Collect Prometheus metrics.")
    cpu_metrics: bool = Field(default=True, description="Collect CPU/memory metrics.")
    gpu_metrics: bool = Field(default=False, description="Collect GPU metrics (needs DCGM).")
    backend_directory: Path | None = Field(
        default=None, description="Backend directory; default: the located Triton's."
    )
    backend_configs: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Backend settings: backend -> setting -> value (--backend-config).",
    )
    model_load_thread_count: int | None = Field(
        default=None, ge=1, description="Threads that load models concurrently."
    )
    model_load_retry_count: int = Field(
        default=0,
        ge=0,
        description="Retries of a failed model load (the C API's own default retries forever).",
    )
    server_id: str = Field(default="triton", min_length=1, description="Server name in metadata.")
    triton_home: str | None = Field(
        default=None, description="Triton install to use (else $TRITON_HOME, NGC, the wheel)."
    )
    startup_timeout_s: float = Field(
        default=120.0, gt=0, description="How long start() waits for the server to be ready."
    )
    teardown_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How long a model-control call waits for an earlier model's teardown to finish"
            " (requests still in flight hold it) before it is refused."
        ),
    )

    @field_validator("model_repository", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str | Path):
            return [value]
        return value

    @field_validator("model_repository")
    @classmethod
    def _repositories_exist(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_dir():
                raise ValueError(f"model_repository: {path} is not a directory")
        return [path.resolve() for path in value]

    @field_validator("backend_configs")
    @classmethod
    def _no_empty_names(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for backend, settings in value.items():
            if not backend or any(not key for key in settings):
                raise ValueError("backend_configs: backend and setting names must be non-empty")
        return value
