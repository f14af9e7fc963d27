"""Triton's KServe v2 HTTP protocol: the transport only; ``DataPlane`` does the work.

Health, metadata, listing, repository and metrics routes are FastAPI's; the
inference routes are answered by ``app.http.fast_path`` and described in the OpenAPI
document by ``fast_route_docs``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from app.contract import ModelRef, StatisticsCall
from app.errors import PayloadTooLarge, Unavailable
from app.observability import merge_metrics
from app.protocol.kserve_v2 import (
    HEADER_LENGTH_HEADER,
    InferRequest,
    LoadRequest,
    RepositoryIndexRequest,
    UnloadRequest,
    parse_body,
)
from app.router.dataplane import DataPlane
from app.router.repository import READY_TIMEOUT_S, RepositoryExtension
from app.security.context import permits

__all__ = ["EXTENSIONS", "fast_route_docs", "read_body", "router"]

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, why in [
        (400, "Malformed request"),
        (401, "Missing or invalid API key"),
        (403, "The API key may not do this"),
        (404, "Unknown model or version"),
        (408, "The model did not answer in time"),
        (413, "Body or tensor over the configured limits"),
        (429, "The API key is over its rate or concurrency limit"),
        (503, "Model not ready or its queue is full (see Retry-After)"),
    ]
}

router = APIRouter(responses=_ERRORS)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined, for ``openapi_extra``."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(dict(defs[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _json_body(schema: dict[str, Any], *, required: bool, binary: bool = False) -> dict[str, Any]:
    """``openapi_extra`` describing a body the route reads itself (raw, for the
    binary extension and the size limit)."""
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if binary:
        content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"},
            "description": f"JSON header of {HEADER_LENGTH_HEADER} bytes, then tensor data",
        }
    return {"requestBody": {"required": required, "content": content}}


_INFER_BODY = _json_body(_inline(InferRequest.model_json_schema()), required=True, binary=True)
_GENERATE_BODY = _json_body(
    {"type": "object", "description": "Input tensors by name, plus 'parameters' and 'id'."},
    required=False,
)
_LOAD_BODY = _json_body(_inline(LoadRequest.model_json_schema()), required=False)
_UNLOAD_BODY = _json_body(_inline(UnloadRequest.model_json_schema()), required=False)
_INDEX_BODY = _json_body(_inline(RepositoryIndexRequest.model_json_schema()), required=False)

EXTENSIONS = [
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "generate",
]


def dataplane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def repository(request: Request) -> RepositoryExtension:
    return dataplane(request).repository


async def read_body(request: Request) -> bytes:
    """The body, refusing more than the configured limit without reading it all."""
    limit = dataplane(request).cfg.max_request_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# ---- health and metadata ----


@router.get("/v2/health/live")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    not_ready = await dataplane(request).not_ready()
    if not_ready:
        detail = "; ".join(f"{m}: {why}" for m, why in sorted(not_ready.items()))
        raise Unavailable(f"not ready: {detail}", retry_after=5)
    return Response(status_code=200)


@router.get("/v2")
async def server_metadata(request: Request) -> dict[str, Any]:
    reports = await dataplane(request).reports()
    version = next((r.triton_version for r in reports if r.triton_version), "")
    return {"name": "triton", "version": version, "extensions": EXTENSIONS}


@router.get("/v2/models")
async def list_models(request: Request) -> dict[str, Any]:
    states = await dataplane(request).listed_states()
    return {
        "models": [
            {
                "name": name,
                "version": s.get("version", ""),
                "state": s["state"],
                "reason": s["reason"],
            }
            for name, s in sorted(states.items())
            if permits(name)
        ]
    }


@router.get("/v2/models/stats")
async def all_statistics(request: Request) -> dict[str, Any]:
    """Statistics of every permitted model whose deployment answers within
    ``READY_TIMEOUT_S``; a deployment without a running replica is left out rather
    than holding the answer for the whole request timeout."""
    return {"model_stats": await dataplane(request).replicas.all_statistics(READY_TIMEOUT_S)}


@router.get("/v2/models/{model}")
@router.get("/v2/models/{model}/versions/{version}")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Any:
    return await repository(request).metadata(ModelRef(model, version))


@router.get("/v2/models/{model}/ready")
@router.get("/v2/models/{model}/versions/{version}/ready")
async def model_ready(request: Request, model: str, version: str | None = None) -> Response:
    await repository(request).require_ready(ModelRef(model, version))
    return Response(status_code=200)


@router.get("/v2/models/{model}/config")
@router.get("/v2/models/{model}/versions/{version}/config")
async def model_config(request: Request, model: str, version: str | None = None) -> Any:
    return await dataplane(request).replicas.model_config(ModelRef(model, version))


@router.get("/v2/models/{model}/stats")
@router.get("/v2/models/{model}/versions/{version}/stats")
async def model_statistics(request: Request, model: str, version: str | None = None) -> Any:
    return await dataplane(request).replicas.model_statistics(StatisticsCall(model, version))


# ---- inference: answered by ``app.http.fast_path``, described here ----


def _fast_operation(kind: str, summary: str, body: dict[str, Any], versioned: bool) -> Any:
    parameters = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    if versioned:
        parameters.append(
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    ok: dict[str, Any] = {
        "infer": {"application/json": {}, "application/octet-stream": {}},
        "generate": {"application/json": {}},
        "generate_stream": {"text/event-stream": {}},
    }[kind]
    responses: dict[str, Any] = {"200": {"description": "Successful Response", "content": ok}}
    responses.update({str(status): doc for status, doc in _ERRORS.items()})
    suffix = "_versions__version_" if versioned else ""
    return {
        "post": {
            "summary": summary,
            "operationId": f"{kind}_v2_models__model_{suffix}_{kind}_post",
            "parameters": parameters,
            **body,
            "responses": responses,
        }
    }


def fast_route_docs() -> dict[str, Any]:
    """OpenAPI path items of the inference routes, which FastAPI never sees."""
    docs: dict[str, Any] = {}
    for kind, summary, body in (
        ("infer", "Infer", _INFER_BODY),
        ("generate", "Generate", _GENERATE_BODY),
        ("generate_stream", "Generate Stream", _GENERATE_BODY),
    ):
        docs[f"/v2/models/{{model}}/{kind}"] = _fast_operation(kind, summary, body, False)
        path = f"/v2/models/{{model}}/versions/{{version}}/{kind}"
        docs[path] = _fast_operation(kind, summary, body, True)
    return docs


# ---- repository ----


@router.post("/v2/repository/index", openapi_extra=_INDEX_BODY)
async def repository_index(request: Request) -> list[dict[str, Any]]:
    query = parse_body(RepositoryIndexRequest, await read_body(request), allow_empty=True)
    return await repository(request).index(ready_only=query.ready)


@router.get("/v2/repository/models/{model}")
async def repository_entry(request: Request, model: str) -> dict[str, Any]:
    """The model's repository entry: its state, versions and why it is not ready."""
    return await repository(request).entry(model)


@router.post("/v2/repository/models/{model}/load", openapi_extra=_LOAD_BODY)
async def load_model(request: Request, model: str) -> Response:
    dataplane(request).replicas.deployment_of(model)  # 403/404 before the body
    load = parse_body(LoadRequest, await read_body(request), allow_empty=True)
    await repository(request).load(model, load)
    return Response(status_code=200)


@router.post("/v2/repository/models/{model}/unload", openapi_extra=_UNLOAD_BODY)
async def unload_model(request: Request, model: str) -> Response:
    dataplane(request).replicas.deployment_of(model)  # 403/404 before the body
    unload = parse_body(UnloadRequest, await read_body(request), allow_empty=True)
    await repository(request).unload(model, unload.parameters.unload_dependents)
    return Response(status_code=200)


# ---- metrics ----


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    plane = dataplane(request)
    router_metrics = request.app.state.router_metrics.render()
    text = merge_metrics(
        [
            router_metrics,
            plane.replicas.traffic_metrics.render(),
            plane.replicas.coalesce_metrics.render(),
            await plane.triton_metrics(),
            await plane.serve_metrics(),
        ]
    )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
