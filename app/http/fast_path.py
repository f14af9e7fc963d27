"""The data path's HTTP routes as plain ASGI: ``infer``, ``generate`` and
``generate_stream`` of KServe v2, with or without ``/versions/<v>``.

These are the requests a server answers thousands of times a second, so they skip
what FastAPI spends on every request: route matching over every route, dependency
resolution, the ``Request`` object, ``BaseHTTPMiddleware``'s extra task and streams.
What remains per request is what the request needs: the path split once, the
handful of headers read in one pass, the key and its limits (``Guard``: a digest, a
dict lookup, a token bucket), the body read up to its limit, one contract call, and
one counter in ``RouterMetrics``. The answers are those of the FastAPI routes they
replaced: same statuses, ``{"error": ...}`` bodies, headers and metrics labels.

``FastPath`` is the outermost middleware of the FastAPI application: requests for
these routes stop here, everything else (control, listing, OpenAI, docs) goes on to
FastAPI. The OpenAPI document still describes them (``app.http.app``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.contract import GenerateCall, InferCall
from app.errors import (
    BadRequest,
    ClientClosedRequest,
    PayloadTooLarge,
    ServingError,
    to_serving_error,
)
from app.http.errors import app_path, error_response
from app.observability import RouterMetrics
from app.protocol.kserve_v2 import HEADER_LENGTH_HEADER, parse_header_length, sse_error_event
from app.router.dataplane import DataPlane
from app.security.context import current_key, request_timeout_s
from app.security.guard import TIMEOUT_HEADER, Guard, challenge, parse_request_timeout
from app.security.limits import Slot

__all__ = ["FAST_ROUTES", "FastPath", "match"]

log = logging.getLogger(__name__)

# The last path segment of each route this module answers.
FAST_ROUTES = ("infer", "generate", "generate_stream")
_KINDS = frozenset(FAST_ROUTES)
_HEADER_LENGTH = HEADER_LENGTH_HEADER.lower().encode()
_TIMEOUT = TIMEOUT_HEADER.encode()
_WANTED = frozenset(
    {b"authorization", _TIMEOUT, b"content-length", b"content-encoding", _HEADER_LENGTH}
)


def match(path: str) -> tuple[str, str | None, str] | None:
    """(model, version, route) of ``/v2/models/<m>[/versions/<v>]/<route>``, else None
    (as Starlette's ``{model}`` and ``{version}``, a part is one or more characters
    other than ``/``)."""
    parts = path.split("/")
    if len(parts) == 5:
        _, v2, models, model, kind = parts
        version = None
    elif len(parts) == 7:
        _, v2, models, model, versions, version, kind = parts
        if versions != "versions" or not version:
            return None
    else:
        return None
    if v2 != "v2" or models != "models" or not model or kind not in _KINDS:
        return None
    return model, version, kind


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers these routes read (the first of each name, as Starlette's ``get``)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _WANTED and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read_body(receive: Receive, limit: int, declared: str | None) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading it all."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("the client closed the connection before its body arrived")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json(document: Any) -> Response:
    """As FastAPI's ``JSONResponse`` renders it."""
    body = json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    return Response(body, media_type="application/json")


class FastPath:
    """ASGI middleware answering ``match``ing requests itself (405 for methods other
    than POST); see the module docstring. The data plane, guard and metrics are the
    application's (``app.state``), so the router replica's own objects serve both
    paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = app_path(scope)
            target = match(path)
            if target is not None:
                await self._serve(scope, receive, send, path, target)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        target: tuple[str, str | None, str],
    ) -> None:
        started = time.perf_counter()
        model, _, kind = target
        state = scope["app"].state
        headers = _headers(scope)
        guard: Guard | None = getattr(state, "guard", None)
        slot: Slot | None = None
        response: Response
        try:
            timeout = parse_request_timeout(headers.get(_TIMEOUT))
            key = None
            if guard is not None:
                key, slot = await guard.admit(path, headers.get(b"authorization"))
            key_token = current_key.set(key)
            timeout_token = request_timeout_s.set(timeout)
            try:
                if scope["method"] == "POST":
                    response = await self._answer(state.dataplane, receive, headers, target)
                else:  # after the key check, as FastAPI's routing came after the edge
                    response = JSONResponse(
                        {"error": "Method Not Allowed"}, status_code=405, headers={"Allow": "POST"}
                    )
                await response(scope, receive, send)
            finally:
                request_timeout_s.reset(timeout_token)
                current_key.reset(key_token)
            status = response.status_code
        except ServingError as err:
            status = await self._error(scope, receive, send, err)
        except Exception as exc:
            if not isinstance(exc, OSError | ClientDisconnect):  # the client went away
                log.exception("%s of model %s failed", kind, model, exc_info=exc)
            status = await self._error(scope, receive, send, to_serving_error(exc))
        finally:
            if slot is not None:
                slot.release()
        metrics: RouterMetrics | None = getattr(state, "router_metrics", None)
        if metrics is not None:
            metrics.observe(model, kind, status, time.perf_counter() - started)

    async def _answer(
        self,
        plane: DataPlane,
        receive: Receive,
        headers: dict[bytes, str],
        target: tuple[str, str | None, str],
    ) -> Response:
        model, version, kind = target
        replicas = plane.replicas
        replicas.deployment_of(model)  # 403/404 before the body is read
        limit = plane.cfg.max_request_body_bytes
        if kind == "infer":
            header_length = parse_header_length(headers.get(_HEADER_LENGTH))
            if headers.get(b"content-encoding", "identity") not in ("identity", ""):
                raise BadRequest(
                    "compressed request bodies are not supported; send them uncompressed"
                )
            body = await _read_body(receive, limit, headers.get(b"content-length"))
            result = await replicas.infer(InferCall(model, version, body, header_length))
            if result.header_length is None:
                return Response(result.body, media_type="application/json")
            return Response(
                result.body,
                media_type="application/octet-stream",
                headers={HEADER_LENGTH_HEADER: str(result.header_length)},
            )
        body = await _read_body(receive, limit, headers.get(b"content-length"))
        call = GenerateCall(model, version, body)
        if kind == "generate":
            return _json(await replicas.generate(call))
        events = await replicas.generate_stream(call, on_error=sse_error_event)
        return StreamingResponse(events, media_type="text/event-stream")

    @staticmethod
    async def _error(scope: Scope, receive: Receive, send: Send, err: ServingError) -> int:
        """Answer ``err`` as the FastAPI routes' handlers do; its status."""
        response = error_response(err)
        response.headers.update(challenge(err))
        try:
            await response(scope, receive, send)
        except Exception:  # the response had started, or the client left
            log.debug("could not send the error response: %s", err.message)
        return err.status_code
