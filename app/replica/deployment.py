"""The model deployment: one in-process Triton per replica, serving a fixed set of models.

Request bodies arrive undecoded from the router; they are validated and decoded
here, next to Triton, so the router never touches tensors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.config import AppConfig, effective_triton_options
from app.contract import (
    GenerateCall,
    GrpcInferCall,
    InferCall,
    InferResult,
    ModelRef,
    OpenAICall,
    ReplicaAPI,
    StatisticsCall,
)
from app.deployments.model_control import ModelControl, ray_get
from app.deployments.state import (
    ModelIntent,
    current_app_name,
    get_state_store,
)
from app.deployments.streaming import coalesce
from app.deployments.stub_watch import StubWatch
from app.errors import (
    BadRequest,
    NotFound,
    NotImplementedFeature,
    ServingError,
    Unavailable,
    from_triton,
)
from app.llm.service import OpenAIService
from app.protocol import kserve_v2_grpc
from app.protocol.kserve_v2 import (
    DecodedInferRequest,
    InputSpec,
    decode_generate_request,
    decode_infer_request,
    encode_generate_response,
    encode_infer_response,
    sse_error_event,
    sse_event,
)
from app.protocol.kserve_v2_infer import classify, split_scheduling
from app.triton import (
    DataType,
    InferenceRequest,
    ModelControlMode,
    NotFoundError,
    Options,
    Server,
    TritonError,
)
from app.triton.inference import AsyncResponseIterator, infer_once

__all__ = ["ModelReplica", "parse_version"]

log = logging.getLogger(__name__)

LARGE_JSON_BYTES = 256 * 1024
_VERSION = re.compile(r"^[0-9]{1,18}$")


def parse_version(version: str | None) -> int:
    """URL version segment to Triton's int64 (-1: the policy's latest)."""
    if version is None or version == "":
        return -1
    if not _VERSION.match(version):
        raise BadRequest(f"model version '{version}' is not a non-negative integer")
    return int(version)


@dataclass(frozen=True)
class _ModelShape:
    """What decoding needs to know about a model; cached until it is (re)loaded."""

    inputs: tuple[InputSpec, ...]
    max_batch_size: int
    decoupled: bool
    version_label: str  # the version that answers (the policy's latest for -1)


class ModelReplica(ModelControl):
    """Serve deployment class; ``build_app`` wraps it with each deployment's options."""

    def __init__(self, app_config: dict[str, Any], deployment_name: str) -> None:
        self.cfg = AppConfig.model_validate(app_config)
        self.deployment_name = deployment_name
        dep = next(d for d in self.cfg.deployments if d.name == deployment_name)
        self.models: tuple[str, ...] = tuple(dep.models)
        triton = effective_triton_options(self.cfg, deployment_name)
        self.server = Server(
            Options(
                model_repository=self.cfg.model_repository,
                model_control_mode=ModelControlMode.EXPLICIT,
                strict_model_config=triton.strict_model_config,
                log_verbose=triton.log_verbose,
                log_info=triton.log_info,
                backend_configs=triton.backend_configs,
                exit_timeout_s=triton.exit_timeout_s,
                server_id=f"triton-{deployment_name}",
            )
        ).start()
        self.triton_version = self.server.metadata().version
        self.replica_id = _replica_id(deployment_name)
        self.openai = OpenAIService(self.server, self.cfg.model_repository, dep.openai)
        self.load_errors: dict[str, str] = {}
        self._shapes: dict[tuple[str, int], _ModelShape] = {}
        self._applied: dict[str, int] = {}
        self._load_args: dict[str, tuple[str | None, dict[str, bytes] | None]] = {}
        self._apply_lock = threading.Lock()
        self._store = get_state_store(current_app_name())
        intents: dict[str, ModelIntent] = {}
        with contextlib.suppress(Exception):
            intents = ray_get(self._store.intents.remote())
        for model in self.models:
            intent = intents.get(model)
            if intent is not None and not intent.loaded:
                self._applied[model] = intent.generation
                continue
            self._load(model, intent.config if intent else None, intent.files if intent else None)
            if intent is not None:
                self._applied[model] = intent.generation
        self.stubs = StubWatch(self.server, self.models, self._apply_lock, self._reload)
        self._stop_reporting = threading.Event()
        self._reporter = threading.Thread(
            target=self._report_forever, name="state-reporter", daemon=True
        )
        self._reporter.start()

    # ---- inference ----

    async def infer(self, call: InferCall) -> InferResult:
        model, body, header_length = call.model, call.body, call.header_length
        number = self._owned(model, call.version)
        decode = functools.partial(
            decode_infer_request,
            body,
            header_length,
            max_elements=self.cfg.max_tensor_elements,
            max_bytes_element=self.cfg.max_bytes_element_bytes,
        )
        # Large JSON tensors take long enough to parse to stall other requests.
        json_bytes = len(body) if header_length is None else header_length
        decoded = await asyncio.to_thread(decode) if json_bytes > LARGE_JSON_BYTES else decode()
        shape = await self._shape(model, number)
        if shape.decoupled:
            raise BadRequest(f"model '{model}' is decoupled; use generate_stream or gRPC streaming")
        response = await self._run(infer_once(self.server, _engine_request(model, number, decoded)))
        classes = {o.name: o.classification for o in decoded.outputs or () if o.classification}
        outputs = []
        for name, array in response.outputs.items():
            if name in classes:  # Triton's classification extension
                array = classify(array, classes[name], batched=shape.max_batch_size > 0)
            outputs.append((name, DataType.from_numpy(array.dtype), array))
        payload, out_header_length = encode_infer_response(
            model,
            shape.version_label,
            decoded.id,
            outputs,
            binary_outputs=decoded.binary_outputs(),
        )
        return InferResult(payload, out_header_length)

    async def generate(self, call: GenerateCall) -> dict[str, Any]:
        model = call.model
        number = self._owned(model, call.version)
        request = await self._generate_request(model, number, call.body)
        response = await self._run(infer_once(self.server, request))
        return encode_generate_response(
            model,
            (await self._shape(model, number)).version_label,
            _typed_outputs(response.outputs),
            request_id=request.request_id or None,
        )

    async def generate_stream(self, call: GenerateCall) -> AsyncIterator[bytes]:
        """SSE events. The first item is ``b""`` once the request is accepted, so the
        router can turn an early error into a proper status instead of a broken stream;
        events already waiting travel together (``coalesce``)."""
        async for chunk in coalesce(self._generate_events(call.model, call.version, call.body)):
            yield chunk

    async def _generate_events(
        self, model: str, version: str | None, body: bytes
    ) -> AsyncGenerator[bytes, None]:
        number = self._owned(model, version)
        request = await self._generate_request(model, number, body)
        try:
            stream = AsyncResponseIterator(self.server, request)
        except TritonError as exc:
            raise from_triton(exc) from exc
        yield b""
        label = (await self._shape(model, number)).version_label
        try:
            async for response in stream:
                if response.outputs:
                    yield sse_event(
                        encode_generate_response(
                            model,
                            label,
                            _typed_outputs(response.outputs),
                            request_id=request.request_id or None,
                        )
                    )
        except TritonError as exc:
            yield sse_error_event(from_triton(exc))
        finally:
            stream.cancel()

    # ---- Triton's gRPC protocol: serialized messages, decoded here like HTTP bodies ----

    async def grpc_infer(self, call: GrpcInferCall) -> bytes:
        """A serialized ``ModelInferRequest`` in, a serialized ``ModelInferResponse`` out."""
        model = call.model
        number = self._owned(model, call.version)
        decoded, _ = self._decode_grpc(call.message)
        shape = await self._shape(model, number)
        if shape.decoupled:
            raise NotImplementedFeature(
                f"ModelInfer RPC doesn't support models with decoupled transaction policy "
                f"('{model}'); use ModelStreamInfer"
            )
        response = await self._run(infer_once(self.server, _engine_request(model, number, decoded)))
        encoded = kserve_v2_grpc.encode_infer_response(
            model,
            shape.version_label,
            decoded.id,
            _typed_outputs(response.outputs),
            response.parameters,
        )
        return bytes(encoded.SerializeToString())

    async def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]:
        """Serialized ``ModelStreamInferResponse``s of one request of a stream, as
        Triton sends them: responses without outputs only when the client asked for
        an empty final response, each then flagged with ``triton_final_response``;
        an engine error mid-stream is a last response with ``error_message``. The
        first item is ``b""`` once the request is accepted (errors before it raise)."""
        model = call.model
        number = self._owned(model, call.version)
        decoded, empty_final = self._decode_grpc(call.message)
        label = (await self._shape(model, number)).version_label
        try:
            stream = AsyncResponseIterator(self.server, _engine_request(model, number, decoded))
        except TritonError as exc:
            raise from_triton(exc) from exc
        yield b""
        try:
            async for response in stream:
                if not response.outputs and not (response.final and empty_final):
                    continue
                parameters = dict(response.parameters)
                if empty_final:
                    parameters[kserve_v2_grpc.FINAL_RESPONSE_PARAMETER] = response.final
                encoded = kserve_v2_grpc.encode_infer_response(
                    model, label, decoded.id, _typed_outputs(response.outputs), parameters
                )
                yield bytes(kserve_v2_grpc.stream_response(encoded).SerializeToString())
        except TritonError as exc:
            error = kserve_v2_grpc.stream_error(from_triton(exc).message)
            yield bytes(error.SerializeToString())
        finally:
            stream.cancel()

    def _decode_grpc(self, message: bytes) -> tuple[DecodedInferRequest, bool]:
        return kserve_v2_grpc.decode_infer_request(
            kserve_v2_grpc.parse_infer_request(message),
            max_elements=self.cfg.max_tensor_elements,
            max_bytes_element=self.cfg.max_bytes_element_bytes,
        )

    # ---- OpenAI API (bodies validated by the router) ----

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]:
        endpoint, body = call.endpoint, call.body
        self._owned(call.model, None)
        if endpoint == "completions":
            return await self.openai.completion(body)
        if endpoint == "chat":
            return await self.openai.chat(body)
        if endpoint == "embeddings":
            return await self.openai.embeddings(body)
        raise NotFound(f"no OpenAI endpoint {endpoint!r}")

    async def openai_stream(self, call: OpenAICall) -> AsyncIterator[bytes]:
        """SSE events; the first item is ``b""`` once generation has started."""
        endpoint, body = call.endpoint, call.body
        self._owned(call.model, None)
        events: AsyncGenerator[bytes, None]
        if endpoint == "completions":
            events = self.openai.completion_stream(body)
        elif endpoint == "chat":
            events = self.openai.chat_stream(body)
        else:
            raise NotFound(f"no streaming OpenAI endpoint {endpoint!r}")
        async for chunk in coalesce(events):
            yield chunk

    # ---- model information ----

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]:
        model, number = ref.model, self._owned(ref.model, ref.version)
        return self._call(lambda: self.server.model(model, number).metadata().model_dump())

    async def model_config(self, ref: ModelRef) -> dict[str, Any]:
        model, number = ref.model, self._owned(ref.model, ref.version)
        return self._call(lambda: self.server.model(model, number).config().model_dump())

    async def model_ready(self, ref: ModelRef) -> bool:
        model, number = ref.model, self._owned(ref.model, ref.version, serving=False)
        self.stubs.check()
        if self.stubs.why_unavailable(model):
            return False
        try:
            return self.server.model(model, number).ready()
        except TritonError:
            return False

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]:
        """Statistics of one hosted model, or of all of them when ``model`` is None."""
        model = call.model
        number = self._owned(model, call.version) if model else -1
        stats: list[dict[str, Any]] = []
        for name in [model] if model else self.models:
            with contextlib.suppress(TritonError):
                stats += [s.model_dump() for s in self.server.statistics(name, number)]
        if model and not stats:
            raise NotFound(f"no statistics for model '{model}' (is it loaded?)")
        return {"model_stats": stats}

    def metrics(self) -> str:
        return self.server.metrics()

    def check_health(self) -> None:
        if not self.server.live():
            raise RuntimeError("the in-process Triton server is not live")
        problem = self.stubs.health_problem()
        if problem is not None:
            raise RuntimeError(f"models that cannot recover in this replica: {problem}")

    def __del__(self) -> None:
        stop_reporting = getattr(self, "_stop_reporting", None)
        if stop_reporting is not None:
            stop_reporting.set()
        server = getattr(self, "server", None)
        stubs = getattr(self, "stubs", None)
        if server is not None:
            # Requests that met a dead stub never finish: waiting for them only
            # delays the replacement, which needs this replica's resources.
            broken = stubs is not None and stubs.health_problem() is not None
            server.stop(exit_timeout_s=1 if broken else None)

    # ---- internals ----

    def _owned(self, model: str | None, version: str | None, *, serving: bool = True) -> int:
        """The version number; raises if the model is not hosted here or, for
        ``serving`` calls, cannot answer (its stub died and it is being reloaded)."""
        if model not in self.models:
            raise NotFound(f"model '{model}' is not served by deployment '{self.deployment_name}'")
        if serving:
            self.stubs.raise_if_unavailable(model)
        return parse_version(version)

    def _call(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except TritonError as exc:
            raise from_triton(exc) from exc

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except TritonError as exc:
            raise from_triton(exc) from exc

    def _latest_version(self, model: str) -> str:
        """The version Triton runs for version -1: the highest ready one (the index
        lists each ready version, lowest first)."""
        versions = [
            int(entry.version)
            for entry in self.server.repository_index(ready_only=True)
            if entry.name == model and entry.version.isdigit()
        ]
        return str(max(versions)) if versions else ""

    async def _shape(self, model: str, version: int) -> _ModelShape:
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
        found = _ModelShape(inputs, config.max_batch_size, config.decoupled, label)
        self._shapes[key] = found
        return found

    def _not_found(self, model: str, exc: TritonError) -> ServingError:
        """A configured model Triton does not know: 503 if it is not loaded (it may
        be again), 404 if it is but the version asked for does not exist."""
        try:
            loaded = self.server.model(model).ready()
        except TritonError:
            loaded = False
        if loaded:
            return from_triton(exc)
        reason = self.load_errors.get(model) or "it is not loaded"
        return Unavailable(f"model '{model}' is not ready: {reason}", retry_after=5)

    async def _generate_request(self, model: str, version: int, body: bytes) -> InferenceRequest:
        shape = await self._shape(model, version)
        decoded = decode_generate_request(
            body,
            shape.inputs,
            shape.max_batch_size,
            max_elements=self.cfg.max_tensor_elements,
            max_bytes_element=self.cfg.max_bytes_element_bytes,
        )
        priority, timeout_us, parameters = split_scheduling(decoded.parameters)
        return InferenceRequest(
            model_name=model,
            model_version=version,
            inputs={i.name: i.to_tensor() for i in decoded.inputs},
            request_id=decoded.request_id or "",
            parameters=parameters,
            priority=priority,
            timeout_us=timeout_us,
        )


if TYPE_CHECKING:

    def _implements_the_contract(replica: ModelReplica) -> ReplicaAPI:
        return replica  # mypy checks every call of ReplicaAPI against ModelReplica


def _engine_request(model: str, version: int, decoded: DecodedInferRequest) -> InferenceRequest:
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


def _typed_outputs(outputs: dict[str, Any]) -> list[tuple[str, DataType, Any]]:
    return [(name, DataType.from_numpy(array.dtype), array) for name, array in outputs.items()]


def _replica_id(deployment: str) -> str:
    try:
        from ray import serve

        replica = serve.get_replica_context().replica_id
        return str(getattr(replica, "unique_id", replica))
    except Exception:
        return f"{deployment}#{os.getpid()}"
