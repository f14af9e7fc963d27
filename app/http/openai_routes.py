"""OpenAI-compatible API on the same ingress: ``/v1/models``, completions, chat, embeddings.

The router validates the body (a 400 names the field) and knows from the config
which models are exposed and for which task; the model's replica does the rest.
Errors render as OpenAI error objects (``app.http.errors`` picks the format by path).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from app.contract import OpenAICall, OpenAIEndpoint
from app.errors import BadRequest, NotFound, ServingError, openai_body
from app.http.kserve_routes import read_body
from app.llm.config import OpenAIModelConfig
from app.protocol.openai import (
    SSE_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_openai_body,
    sse_data,
)
from app.router.dataplane import DataPlane
from app.security.context import permits

__all__ = ["router"]

router = APIRouter(prefix="/v1")

_STARTED = int(time.time())


def _plane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def _exposed(plane: DataPlane) -> dict[str, OpenAIModelConfig]:
    return plane.openai_models()


def _check(plane: DataPlane, model: str, task: str) -> None:
    settings = _exposed(plane).get(model)
    if settings is None:
        raise NotFound(f"The model '{model}' does not exist", param="model", code="model_not_found")
    if settings.task != task:
        other = "/v1/embeddings" if settings.task == "embed" else "/v1/completions"
        raise BadRequest(f"model '{model}' is served on {other}", param="model")


def _stream_error(err: ServingError) -> bytes:
    """A failure after the stream started (its replica died): an error event, then [DONE]."""
    return sse_data(openai_body(err)) + SSE_DONE


def _json_body(model_class: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that parses its own body (to name fields in
    OpenAI's ``param``): the model's JSON schema with its ``$defs`` inlined."""
    schema = model_class.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}


def _card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _STARTED, "owned_by": "triton-serve"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    models = sorted(m for m in _exposed(_plane(request)) if permits(m))
    return {"object": "list", "data": [_card(m) for m in models]}


@router.get("/models/{model}")
async def get_model(request: Request, model: str) -> dict[str, Any]:
    if model not in _exposed(_plane(request)) or not permits(model):
        raise NotFound(f"The model '{model}' does not exist", code="model_not_found")
    return _card(model)


async def _generate(
    request: Request, endpoint: OpenAIEndpoint, body: CompletionRequest | ChatCompletionRequest
) -> Response:
    plane = _plane(request)
    _check(plane, body.model, "generate")
    call = OpenAICall(endpoint, body.model_dump(exclude_unset=True))
    if body.stream:
        events = await plane.replicas.openai_stream(call, on_error=_stream_error)
        return StreamingResponse(events, media_type="text/event-stream")
    return JSONResponse(await plane.replicas.openai_call(call))


@router.post("/completions", openapi_extra=_json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    body = parse_openai_body(CompletionRequest, await read_body(request))
    return await _generate(request, "completions", body)


@router.post("/chat/completions", openapi_extra=_json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    body = parse_openai_body(ChatCompletionRequest, await read_body(request))
    return await _generate(request, "chat", body)


@router.post("/embeddings", openapi_extra=_json_body(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    body = parse_openai_body(EmbeddingRequest, await read_body(request))
    plane = _plane(request)
    _check(plane, body.model, "embed")
    call = OpenAICall("embeddings", body.model_dump(exclude_unset=True))
    return JSONResponse(await plane.replicas.openai_call(call))
