"""OpenAI-compatible request and response bodies (completions, chat, embeddings, models).

Requests follow OpenAI's field names and defaults; unknown fields are refused with
the field's name (a typo must not silently do nothing), and fields we cannot honour
(logprobs, tools, logit_bias...) are refused when set instead of being ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import BadRequest

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "SamplingFields",
    "StreamOptions",
    "completion_id",
    "parse_openai_body",
    "sse_data",
    "SSE_DONE",
]

MAX_N = 16
MAX_STOP = 4
MAX_EMBEDDING_INPUTS = 2048

SSE_DONE = b"data: [DONE]\n\n"

_Request = TypeVar("_Request", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamOptions(_Body):
    include_usage: bool = Field(default=False, description="Send a last chunk with usage.")


class SamplingFields(_Body):
    """Fields shared by completions and chat completions."""

    model: str = Field(min_length=1, description="A model listed by GET /v1/models.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(default=1, ge=1, le=MAX_N, description=f"Choices to generate (<= {MAX_N}).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop sequences.")
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, description="Accepted and ignored.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[str] = Field(description="Text prompt(s); token arrays are not supported.")
    max_tokens: int | None = Field(default=16, ge=1, description="OpenAI's default is 16.")
    echo: bool = Field(default=False, description="Prepend the prompt to the completion.")
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("logprobs is not supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("best_of other than 1 is not supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormat(_Body):
    type: Literal["text"] = Field(description="Only plain text is supported.")


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated by OpenAI.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs is not supported")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("top_logprobs is not supported")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value:
            raise ValueError("tools are not supported")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none"):
            raise ValueError("tool_choice is not supported")
        return value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens else self.max_tokens

    def chat(self) -> list[dict[str, str]]:
        """Messages as chat templates take them."""
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1)
    input: str | list[str] = Field(description="Text or texts; token arrays are not supported.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("input must not be an empty list")
            if len(value) > MAX_EMBEDDING_INPUTS:
                raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def parse_openai_body(model_class: type[_Request], body: bytes) -> _Request:
    """JSON body -> request model; any mistake is a 400 naming the field (``param``)."""
    try:
        raw = pydantic_core.from_json(body)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model_class.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = first.get("loc", ())
        # OpenAI's ``param`` is the request field; union branches ("str", "list[str]")
        # that pydantic adds to the location say nothing to a client.
        field = str(location[0]) if location else None
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "unrecognized request argument"
        raise BadRequest(f"{field}: {message}" if field else message, param=field) from None


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sse_data(payload: dict[str, Any]) -> bytes:
    """One OpenAI stream event: ``data: {json}\\n\\n``."""
    return b"data: " + pydantic_core.to_json(payload) + b"\n\n"
