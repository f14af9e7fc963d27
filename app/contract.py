"""The one contract between the router and the model replicas.

``ReplicaAPI`` names every call a router makes to a replica; the replica implements
it (checked by mypy) and the router calls it through ``ReplicaClient``, never by a
method name as a string. Arguments and results are small frozen dataclasses: they
pickle by reference across the Ray hop, and tensor payloads stay the raw bytes the
client sent (decoded next to Triton, never in the router). No pydantic here: these
travel on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "CallBatch",
    "GenerateCall",
    "GrpcInferCall",
    "InferCall",
    "InferResult",
    "LoadCall",
    "ModelRef",
    "OpenAICall",
    "OpenAIEndpoint",
    "ReplicaAPI",
    "StatisticsCall",
    "UnloadCall",
]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model, and a version segment as the client sent it (None: the latest)."""

    model: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class InferCall:
    """A KServe v2 HTTP infer body, undecoded; ``header_length`` for the binary extension."""

    model: str
    version: str | None
    body: bytes
    header_length: int | None = None


@dataclass(frozen=True, slots=True)
class InferResult:
    """The encoded response body; ``header_length`` set when it carries binary tensors."""

    body: bytes
    header_length: int | None = None


@dataclass(frozen=True, slots=True)
class GenerateCall:
    """A generate (or generate_stream) body, undecoded."""

    model: str
    version: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class GrpcInferCall:
    """A serialized ``ModelInferRequest``: the replica parses it, next to Triton."""

    model: str
    version: str | None
    message: bytes


@dataclass(frozen=True, slots=True)
class CallBatch:
    """Infer calls coalesced into one replica call (``app.router.coalesce``), each
    with the seconds left before its caller's deadline."""

    calls: tuple[InferCall | GrpcInferCall, ...]
    timeouts_s: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class StatisticsCall:
    """Statistics of one model, or of every model of the deployment when ``model`` is None."""

    model: str | None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class LoadCall:
    """Load now; ``generation`` is the operator intent (in the state store) it fulfils."""

    model: str
    config: str | None
    files: dict[str, bytes] | None
    generation: int


@dataclass(frozen=True, slots=True)
class UnloadCall:
    model: str
    unload_dependents: bool
    generation: int


OpenAIEndpoint = Literal["completions", "chat", "embeddings"]


@dataclass(frozen=True, slots=True)
class OpenAICall:
    """An OpenAI body the router validated, as a plain dict (``model`` names the model)."""

    endpoint: OpenAIEndpoint
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


class ReplicaAPI(Protocol):
    """What a model replica answers. Streaming calls yield ``b""`` first, once the
    request is accepted, so the router turns an early error into a status rather
    than a broken stream."""

    async def infer(self, call: InferCall) -> InferResult: ...

    async def generate(self, call: GenerateCall) -> dict[str, Any]: ...

    def generate_stream(self, call: GenerateCall) -> AsyncIterator[bytes]: ...

    async def grpc_infer(self, call: GrpcInferCall) -> bytes: ...

    def infer_batch(self, batch: CallBatch) -> AsyncIterator[list[tuple[int, Any]]]:
        """Each call's answer (its result, or its ``ServingError``) as it completes,
        by index into ``batch.calls``; answers ready together come in one list."""
        ...

    def grpc_stream_infer(self, call: GrpcInferCall) -> AsyncIterator[bytes]: ...

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]: ...

    def openai_stream(self, call: OpenAICall) -> AsyncIterator[bytes]: ...

    async def model_ready(self, ref: ModelRef) -> bool: ...

    async def model_metadata(self, ref: ModelRef) -> dict[str, Any]: ...

    async def model_config(self, ref: ModelRef) -> dict[str, Any]: ...

    async def model_statistics(self, call: StatisticsCall) -> dict[str, Any]: ...

    async def load_model(self, call: LoadCall) -> None: ...

    async def unload_model(self, call: UnloadCall) -> None: ...
