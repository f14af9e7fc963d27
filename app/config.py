"""The Serve application's configuration: the ``args`` of the application.

Parsing is pure (no filesystem access) because configs are also validated on
client machines; ``check_paths`` does the filesystem checks where the
application is built. Every error names the field path at fault.
"""

from __future__ import annotations

import fnmatch
import math
import re
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.grpc.config import GrpcConfig
from app.llm.config import OpenAIModelConfig
from app.placement.config import GpuMemoryConfig, GpuPoolConfig
from app.residency.config import ResidencyConfig, is_glob
from app.router.traffic_config import TrafficRouteConfig, check_traffic
from app.security.config import SecurityConfig
from app.triton.tensors import MAX_ELEMENTS

__all__ = [
    "AppConfig",
    "AutoscalingConfig",
    "ModelDeploymentConfig",
    "RouterConfig",
    "TritonOptionsConfig",
    "check_paths",
    "effective_triton_options",
    "model_owner",
    "openai_tasks",
    "validate_model_name",
]

MiB = 1 << 20
DEPLOYMENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def validate_model_name(name: str) -> str:
    """A Triton model name usable as a repository directory and a URL path segment."""
    if not name:
        raise ValueError("model name must not be empty")
    if len(name) > 255:
        raise ValueError(f"model name {name[:32]!r}... is longer than 255 characters")
    if "/" in name or "\\" in name:
        raise ValueError(f"model name {name!r} must not contain '/' or '\\'")
    if name.startswith(".") or ".." in name:
        raise ValueError(f"model name {name!r} must not start with '.' or contain '..'")
    if any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"model name {name!r} must not contain whitespace or control characters")
    return name


def _setting_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TritonOptionsConfig(_Config):
    """Options of the in-process Triton server; app-wide defaults or a deployment override."""

    log_verbose: int = Field(default=0, ge=0, description="Triton verbose log level (0 = off).")
    log_info: bool = Field(default=True, description="Enable Triton's info-level logging.")
    backend_configs: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Backend -> setting -> value, as Triton's --backend-config=b,setting=value.",
    )
    strict_model_config: bool = Field(
        default=False, description="Require complete config.pbtxt (no auto-completion)."
    )
    exit_timeout_s: int = Field(
        default=30, ge=0, description="Seconds Triton waits for in-flight requests at shutdown."
    )

    @field_validator("backend_configs", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        """YAML turns ``4`` and ``true`` into numbers and bools; Triton wants strings."""
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for backend, settings in value.items():
            if isinstance(settings, dict):
                settings = {k: _setting_text(v) for k, v in settings.items()}
            out[backend] = settings
        return out

    @field_validator("backend_configs")
    @classmethod
    def _non_empty_names(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for backend, settings in value.items():
            if not backend or "," in backend:
                raise ValueError(f"backend_configs: invalid backend name {backend!r}")
            for setting in settings:
                if not setting or "," in setting or "=" in setting:
                    raise ValueError(f"backend_configs.{backend}: invalid setting name {setting!r}")
        return value


class AutoscalingConfig(_Config):
    """Ray Serve autoscaling of one model deployment."""

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0 scales to zero).")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas; >= min_replicas.")
    initial_replicas: int | None = Field(
        default=None, ge=0, description="Replicas at start; within [min, max]."
    )
    target_ongoing_requests: float = Field(
        default=16.0,
        gt=0,
        allow_inf_nan=False,
        description="Ongoing requests per replica the autoscaler aims for "
        "(<= the deployment's max_ongoing_requests).",
    )
    upscale_delay_s: float = Field(
        default=30.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds of sustained load before scaling up.",
    )
    downscale_delay_s: float = Field(
        default=600.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds of low load before scaling down.",
    )

    @field_validator("max_replicas")
    @classmethod
    def _max_at_least_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and value < low:
            raise ValueError(f"max_replicas ({value}) must be >= min_replicas ({low})")
        return value

    @field_validator("initial_replicas")
    @classmethod
    def _initial_within_bounds(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high = info.data.get("min_replicas"), info.data.get("max_replicas")
        if value is None or low is None or high is None:
            return value
        if not low <= value <= high:
            raise ValueError(
                f"initial_replicas ({value}) must be within min_replicas ({low}) "
                f"and max_replicas ({high})"
            )
        return value


class ModelDeploymentConfig(_Config):
    """One Serve deployment: a Triton server owning a fixed set of models."""

    name: str = Field(
        pattern=DEPLOYMENT_NAME_PATTERN, description="Serve deployment name (unique)."
    )
    models: list[str] = Field(
        min_length=1,
        description="Models this deployment serves, unique across the app: names, or "
        "globs over the repository ('pool-*': every match no other deployment names).",
    )
    num_gpus: float = Field(
        default=0,
        ge=0,
        allow_inf_nan=False,
        description="GPUs per replica: a fraction <= 1 or a whole number.",
    )
    num_cpus: float = Field(default=1, ge=0, allow_inf_nan=False, description="CPUs per replica.")
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Autoscaling; exclusive with num_replicas."
    )
    num_replicas: int | None = Field(
        default=None, ge=1, description="Fixed replica count (1 when neither is set)."
    )
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Requests a replica handles at once (Triton batches them)."
    )
    max_queued_requests: int = Field(
        default=256, ge=1, description="Requests waiting at the callers before 503s."
    )
    triton: TritonOptionsConfig | None = Field(
        default=None, description="Overrides of the app-wide Triton options (fields set here)."
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per replica."
    )
    openai: dict[str, OpenAIModelConfig] = Field(
        default_factory=dict,
        description="Models of this deployment served on the OpenAI API (/v1), by name.",
    )
    gpu_memory: GpuMemoryConfig | None = Field(
        default=None,
        description="GPU memory the replica's engine needs; its memory share (vLLM "
        "gpu_memory_utilization, TensorRT-LLM kv_cache_free_gpu_mem_fraction) follows num_gpus.",
    )
    # ---- residency: a pool of models loaded on first request ----
    residency: ResidencyConfig | None = Field(
        default=None,
        description="Load the models on first request (except pinned ones) and evict the "
        "least recently used when a load would exceed the memory budget.",
    )

    @field_validator("models")
    @classmethod
    def _valid_unique_models(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, name in enumerate(value):
            try:
                validate_model_name(name)
            except ValueError as exc:
                raise ValueError(f"models[{i}]: {exc}") from None
            if is_glob(name) and name.count("[") != name.count("]"):
                raise ValueError(f"models[{i}]: glob {name!r} has an unclosed '['")
            if name in seen:
                raise ValueError(f"models[{i}]: model {name!r} is listed twice")
            seen.add(name)
        return value

    @field_validator("openai")
    @classmethod
    def _openai_models_served(
        cls, value: dict[str, OpenAIModelConfig], info: ValidationInfo
    ) -> dict[str, OpenAIModelConfig]:
        models = info.data.get("models") or []
        for name in value:
            if name not in models and not any(fnmatch.fnmatchcase(name, m) for m in models):
                raise ValueError(f"openai.{name}: not one of this deployment's models {models}")
        return value

    @field_validator("residency")
    @classmethod
    def _pinned_served(
        cls, value: ResidencyConfig | None, info: ValidationInfo
    ) -> ResidencyConfig | None:
        """Pinned models are names; with globs in ``models`` the check that each is
        one of the deployment's waits for the repository (``app.residency.pools``)."""
        if value is None:
            return value
        models = info.data.get("models") or []
        for i, name in enumerate(value.pinned):
            try:
                validate_model_name(name)
            except ValueError as exc:
                raise ValueError(f"residency.pinned[{i}]: {exc}") from None
            if is_glob(name):
                raise ValueError(f"residency.pinned[{i}]: {name!r} is a glob; name the model")
            if name not in models and not any(is_glob(m) for m in models):
                raise ValueError(
                    f"residency.pinned[{i}]: {name!r} is not one of this deployment's "
                    f"models {models}"
                )
        return value

    @field_validator("num_gpus")
    @classmethod
    def _fraction_or_whole(cls, value: float) -> float:
        if not math.isfinite(value) or (value > 1 and not float(value).is_integer()):
            raise ValueError(f"num_gpus ({value}) must be a fraction <= 1 or a whole number")
        return value

    @field_validator("num_replicas")
    @classmethod
    def _not_with_autoscaling(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("autoscaling") is not None:
            raise ValueError("num_replicas and autoscaling are exclusive; set one of them")
        return value

    @field_validator("max_ongoing_requests")
    @classmethod
    def _target_reachable(cls, value: int, info: ValidationInfo) -> int:
        autoscaling = info.data.get("autoscaling")
        if autoscaling is not None and autoscaling.target_ongoing_requests > value:
            raise ValueError(
                f"autoscaling.target_ongoing_requests ({autoscaling.target_ongoing_requests}) "
                f"must be <= max_ongoing_requests ({value}), or replicas never reach the target"
            )
        return value

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if not key or key in _RESERVED_RESOURCES:
                raise ValueError(
                    f"resources: {key!r} is not a custom resource (use num_cpus/num_gpus)"
                )
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"resources.{key}: amount must be a finite number >= 0")
        return value


class RouterConfig(_Config):
    """The ingress deployment that speaks KServe v2 and routes to model deployments."""

    num_replicas: int = Field(default=1, ge=1, description="Router replicas.")
    max_ongoing_requests: int = Field(
        default=256,
        ge=1,
        description="Requests per router replica; Serve's default 5 collapses at concurrency 16.",
    )
    num_cpus: float = Field(
        default=1, ge=0, allow_inf_nan=False, description="CPUs per router replica."
    )
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds before a routed request fails with 408.",
    )
    coalesce: bool = Field(
        default=True,
        description="Infer calls (KServe HTTP and gRPC) for one deployment that wait at "
        "the router together travel to a replica in one call and come back as each "
        "completes; deployments with autoscaling or residency are not coalesced.",
    )
    fixed_cluster: bool = Field(
        default=False,
        description="The Ray cluster cannot add nodes (no autoscaler): a deployment no node "
        "can hold fails the build (no GPU at all) or gets 503 at once naming what is "
        "missing, instead of waiting for a node an autoscaler would add.",
    )
    gpus_optional: bool = Field(
        default=False,
        description="With fixed_cluster, on a Ray cluster with no GPU at all (a plain "
        "`ray start --head`), run the deployments without their GPU shares instead of "
        "failing the build; only for configs whose models all run on CPU.",
    )


class AppConfig(_Config):
    """The whole application: one Triton model repository served by many deployments."""

    model_repository: str = Field(
        min_length=1, description="Triton model repository (local path or s3://, gs://, as://)."
    )
    deployments: list[ModelDeploymentConfig] = Field(
        min_length=1, description="Model deployments; model and deployment names are unique."
    )
    router: RouterConfig = Field(default_factory=RouterConfig, description="The ingress.")
    triton: TritonOptionsConfig = Field(
        default_factory=TritonOptionsConfig, description="Triton options for every deployment."
    )
    allow_repository_file_overrides: bool = Field(
        default=False,
        description="Allow load requests that carry 'file:' parameters (writes model files).",
    )
    max_request_body_bytes: int = Field(
        default=64 * MiB, gt=0, description="Largest request body the router accepts."
    )
    max_tensor_elements: int = Field(
        default=1 << 26, gt=0, le=MAX_ELEMENTS, description="Most elements in one input tensor."
    )
    max_bytes_element_bytes: int = Field(
        default=16 * MiB, gt=0, description="Largest single element of a BYTES input."
    )
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="API keys, their scopes and limits (off without a key file).",
    )
    grpc: GrpcConfig = Field(
        default_factory=GrpcConfig,
        description="Triton's gRPC protocol on the router (its port is Serve's grpc_options).",
    )
    gpus: GpuPoolConfig | None = Field(
        default=None,
        description="The GPUs the app is placed on; build_app refuses deployments whose "
        "gpu_memory does not fit their share, or a packing that does not fit the GPUs.",
    )
    traffic: dict[str, TrafficRouteConfig] = Field(
        default_factory=dict,
        description="Public model names routed to weighted targets (splits, canaries, "
        "a mirror, sticky sessions); applied to running routers on a config update.",
    )

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, value: list[ModelDeploymentConfig]) -> list[ModelDeploymentConfig]:
        deployment_at: dict[str, int] = {}
        model_at: dict[str, tuple[int, int]] = {}
        for i, dep in enumerate(value):
            if dep.name in deployment_at:
                raise ValueError(
                    f"deployments[{i}].name: {dep.name!r} is also the name of "
                    f"deployments[{deployment_at[dep.name]}]"
                )
            deployment_at[dep.name] = i
            for j, model in enumerate(dep.models):
                if is_glob(model):  # resolved against the repository where it is built
                    continue
                if model in model_at:
                    oi, oj = model_at[model]
                    raise ValueError(
                        f"deployments[{i}].models[{j}]: model {model!r} is already served "
                        f"by deployment {value[oi].name!r} (deployments[{oi}].models[{oj}])"
                    )
                model_at[model] = (i, j)
        return value

    @model_validator(mode="after")
    def _traffic_targets(self) -> AppConfig:
        globs = [m for dep in self.deployments for m in dep.models if is_glob(m)]
        check_traffic(self.traffic, openai_tasks(self), globs)
        return self


def openai_tasks(cfg: AppConfig) -> dict[str, str | None]:
    """Every model, with its task on ``/v1`` (None when it is not there)."""
    return {
        model: (dep.openai[model].task if model in dep.openai else None)
        for dep in cfg.deployments
        for model in dep.models
    }


def model_owner(cfg: AppConfig) -> dict[str, str]:
    """Model name -> name of the deployment that serves it."""
    return {model: dep.name for dep in cfg.deployments for model in dep.models}


def effective_triton_options(cfg: AppConfig, deployment: str) -> TritonOptionsConfig:
    """App-wide Triton options with the deployment's explicitly set fields on top.

    ``backend_configs`` merge per setting, so an override need not repeat the rest.
    """
    dep = next((d for d in cfg.deployments if d.name == deployment), None)
    if dep is None:
        raise KeyError(f"no deployment named {deployment!r}")
    if dep.triton is None:
        return cfg.triton
    merged = cfg.triton.model_dump()
    override = dep.triton
    for name in override.model_fields_set:
        if name == "backend_configs":
            backends = {b: dict(s) for b, s in cfg.triton.backend_configs.items()}
            for backend, settings in override.backend_configs.items():
                backends.setdefault(backend, {}).update(settings)
            merged[name] = backends
        else:
            merged[name] = getattr(override, name)
    return TritonOptionsConfig.model_validate(merged)


def check_paths(cfg: AppConfig) -> None:
    """Filesystem checks for the host that builds the application.

    A local ``model_repository`` must be a directory holding a directory per
    configured model; remote repositories (``scheme://``) are left to Triton.
    Raises ``ValueError`` naming the field.
    """
    if _URL_SCHEME.match(cfg.model_repository):
        return
    root = Path(cfg.model_repository)
    if not root.is_dir():
        raise ValueError(
            f"model_repository: {cfg.model_repository!r} is not a directory on this node. "
            "Mount the model repository there (the image of kuberay/image copies it to "
            "/models/repository), or set args.model_repository; on a laptop run "
            "`make serve` (serve_configs/local.yaml)"
        )
    for i, dep in enumerate(cfg.deployments):
        for j, model in enumerate(dep.models):
            if not is_glob(model) and not (root / model).is_dir():
                raise ValueError(
                    f"deployments[{i}].models[{j}]: model {model!r} has no directory in "
                    f"model_repository {cfg.model_repository!r}"
                )
