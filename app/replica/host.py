"""The replica's host: one in-process Triton, model control with its stub watch, and
the reporter; what the per-protocol adapters share (which models are served here,
each model's shape for decoding, Triton errors as ``ServingError``s)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.config import AppConfig, ModelDeploymentConfig, effective_triton_options
from app.errors import (
    BadRequest,
    NotFound,
    ServingError,
    Unavailable,
    from_triton,
    is_stub_death,
)
from app.protocol.kserve_v2 import DecodedInferRequest, InputSpec
from app.replica.affinity import serve_publisher
from app.replica.control import ModelControl
from app.replica.reporter import Reporter, ray_get
from app.replica.residency import Residency
from app.state_store import ModelIntent, current_app_name, get_state_store
from app.triton import (
    DataType,
    InferenceRequest,
    ModelControlMode,
    NotFoundError,
    Options,
    Server,
    TritonError,
)

__all__ = ["ModelShape", "ReplicaHost", "engine_request", "parse_version", "typed_outputs"]

T = TypeVar("T")

_VERSION = re.compile(r"^[0-9]{1,18}$")


def parse_version(version: str | None) -> int:
    """URL version segment to Triton's int64 (-1: the policy's latest)."""
    if version is None or version == "":
        return -1
    if not _VERSION.match(version):
        raise BadRequest(f"model version '{version}' is not a non-negative integer")
    return int(version)


@dataclass(frozen=True)
class ModelShape:
    """What decoding needs to know about a model; cached until it is (re)loaded."""

    inputs: tuple[InputSpec, ...]
    max_batch_size: int
    decoupled: bool
    version_label: str  # the version that answers (the policy's latest for -1)


class ReplicaHost:
    """Starts Triton for ``deployment_name`` and loads its models (as operators'
    intents in the state store say), then reports on a thread until ``stop``."""

    def __init__(self, cfg: AppConfig, deployment_name: str) -> None:
        self.cfg = cfg
        self.deployment_name = deployment_name
        self.deployment: ModelDeploymentConfig = next(
            d for d in cfg.deployments if d.name == deployment_name
        )
        self.models: tuple[str, ...] = tuple(self.deployment.models)
        triton = effective_triton_options(cfg, deployment_name)
        self.server = Server(
            Options(
                model_repository=cfg.model_repository,
                model_control_mode=ModelControlMode.EXPLICIT,
                strict_model_config=triton.strict_model_config,
                log_verbose=triton.log_verbose,
                log_info=triton.log_info,
                backend_configs=triton.backend_configs,
                exit_timeout_s=triton.exit_timeout_s,
                server_id=f"triton-{deployment_name}",
            )
        ).start()
        self._shapes: dict[tuple[str, int], ModelShape] = {}
        try:
            self.triton_version = self.server.metadata().version
            store = get_state_store(current_app_name())
            intents: dict[str, ModelIntent] = {}
            with contextlib.suppress(Exception):
                intents = ray_get(store.intents.remote())
            pool = self.deployment.residency
            self.control = ModelControl(
                cfg,
                deployment_name,
                self.models,
                self.server,
                intents,
                self._shapes.clear,
                on_demand=frozenset(self.models) if pool is not None else frozenset(),
            )
            # Models of a pool load on first request (pinned ones now), within its budget.
            self.residency: Residency | None = None
            if pool is not None:
                self.residency = Residency(
                    self.deployment,
                    pool,
                    cfg.model_repository,
                    self.control,
                    wait_for_room_s=cfg.router.request_timeout_s,
                    pinned_by_operator=self.control.pinned_by_operator,
                    publish=serve_publisher(),
                )
                self.control.residency = self.residency
        except BaseException:
            self.server.stop()  # no replica will own it
            raise
        self.stubs = self.control.stubs
        self.reporter = Reporter(
            self.control, store, _replica_id(deployment_name), self.triton_version
        )
        self.reporter.start()

    def owned(self, model: str | None, version: str | None, *, serving: bool = True) -> int:
        """The version number; raises if the model is not hosted here or, for
        ``serving`` calls, cannot answer (its stub died and it is being reloaded)."""
        if model not in self.models:
            raise NotFound(f"model '{model}' is not served by deployment '{self.deployment_name}'")
        if serving:
            self.stubs.raise_if_unavailable(model)
        return parse_version(version)

    @contextlib.asynccontextmanager
    async def use(self, model: str) -> AsyncIterator[None]:
        """Around a call that runs ``model``: in a pool, it is loaded first and not
        evicted until the call ends; elsewhere nothing happens."""
        residency = self.residency
        if residency is None or model not in residency.pool:
            yield
            return
        async with residency.use(model):
            yield

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, with Triton's errors as ``ServingError``s."""
        try:
            return fn()
        except TritonError as exc:
            raise from_triton(exc) from exc

    async def run(self, model: str, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, a call that runs ``model``, with Triton's errors as
        ``ServingError``s."""
        try:
            return await awaitable
        except TritonError as exc:
            raise self._engine_error(model, exc) from exc

    def _engine_error(self, model: str, exc: TritonError) -> ServingError:
        if is_stub_death(exc.message):
            explained = self.stubs.explain_stub_death(model)
            if explained is not None:
                return explained
        return from_triton(exc)

    async def shape(self, model: str, version: int) -> ModelShape:
        key = (model, version)
        found = self._shapes.get(key)
        if found is not None:
            return found
        try:
            config = self.server.model(model, version).config()
        except NotFoundError as exc:
            raise self._not_found(model, exc) from exc
        except TritonError as exc:
            raise from_triton(exc) from exc
        inputs = tuple(
            InputSpec(
                name=i["name"],
                datatype=DataType.from_string(i["data_type"]),
                dims=tuple(int(d) for d in i.get("dims", [])),
                optional=bool(i.get("optional", False)),
            )
            for i in config.input
        )
        label = str(version) if version >= 0 else self._latest_version(model)
        found = ModelShape(inputs, config.max_batch_size, config.decoupled, label)
        self._shapes[key] = found
        return found

    def check_health(self) -> None:
        if not self.server.live():
            raise RuntimeError("the in-process Triton server is not live")
        problem = self.stubs.health_problem()
        if problem is not None:
            raise RuntimeError(f"models that cannot recover in this replica: {problem}")

    def stop(self) -> None:
        self.reporter.stop()
        # Requests that met a dead stub never finish: waiting for them only delays
        # the replacement, which needs this replica's resources.
        broken = self.stubs.health_problem() is not None
        self.server.stop(exit_timeout_s=1 if broken else None)

    def _latest_version(self, model: str) -> str:
        """The version Triton runs for version -1: the highest ready one (the index
        lists each ready version, lowest first)."""
        versions = [
            int(entry.version)
            for entry in self.server.repository_index(ready_only=True)
            if entry.name == model and entry.version.isdigit()
        ]
        return str(max(versions)) if versions else ""

    def _not_found(self, model: str, exc: TritonError) -> ServingError:
        """A configured model Triton does not know: 503 if it is not loaded (it may
        be again), 404 if it is but the version asked for does not exist."""
        try:
            loaded = self.server.model(model).ready()
        except TritonError:
            loaded = False
        if loaded:
            return from_triton(exc)
        reason = self.control.load_errors.get(model) or "it is not loaded"
        return Unavailable(f"model '{model}' is not ready: {reason}", retry_after=5)


def engine_request(model: str, version: int, decoded: DecodedInferRequest) -> InferenceRequest:
    return InferenceRequest(
        model_name=model,
        model_version=version,
        inputs={i.name: i.to_tensor() for i in decoded.inputs},
        request_id=decoded.id or "",
        parameters=decoded.parameters,
        output_names=[o.name for o in decoded.outputs] if decoded.outputs else None,
        priority=decoded.priority,
        timeout_us=decoded.timeout_us or 0,
        correlation_id=decoded.sequence_id,
        flags=(1 if decoded.sequence_start else 0) | (2 if decoded.sequence_end else 0),
    )


def typed_outputs(outputs: dict[str, Any]) -> list[tuple[str, DataType, Any]]:
    return [(name, DataType.from_numpy(array.dtype), array) for name, array in outputs.items()]


def _replica_id(deployment: str) -> str:
    try:
        from ray import serve

        replica = serve.get_replica_context().replica_id
        return str(getattr(replica, "unique_id", replica))
    except Exception:
        return f"{deployment}#{os.getpid()}"
