"""The FastAPI application of the router: routes, error rendering, request ids, metrics.

Serve pickles the app to ship it to router replicas: everything it references
must be module-level (pickled by reference), and per-process state such as the
metrics counters is attached by the replica (``Router.__init__``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

from app.http.errors import app_path, install_error_handlers
from app.http.fast_path import FastPath
from app.http.kserve_routes import fast_route_docs
from app.http.kserve_routes import router as kserve_router
from app.http.openai_routes import router as openai_router
from app.http.traffic_header import TrafficHeaderMiddleware
from app.observability import RouterMetrics
from app.security.middleware import EdgeMiddleware

__all__ = ["create_http_app"]


def _route_of(path: str) -> tuple[str, str]:
    """(model, route kind) for metrics, without high-cardinality path parts."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["v2", "models"] and parts[2] != "stats":
        return parts[2], parts[-1] if len(parts) > 3 else "metadata"
    return "", "/".join(parts[:2]) or "/"


async def request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """The router's request metrics. (Serve itself puts a request id, the client's
    ``X-Request-ID`` if it sent one, on every response and log line.)"""
    started = time.perf_counter()
    response = await call_next(request)
    metrics: RouterMetrics | None = getattr(request.app.state, "router_metrics", None)
    model, route = _route_of(app_path(request.scope))
    if metrics is not None and route != "metrics":
        metrics.observe(model, route, response.status_code, time.perf_counter() - started)
    return response


class RouterApp(FastAPI):
    """The router's FastAPI application; its OpenAPI document also describes the
    inference routes, which ``FastPath`` answers before FastAPI sees them."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            paths = schema.setdefault("paths", {})
            for path, item in fast_route_docs().items():
                paths.setdefault(path, {}).update(item)
        return self.openapi_schema  # type: ignore[return-value]


def create_http_app() -> FastAPI:
    app = RouterApp(
        title="triton-serve",
        description=(
            "Triton models behind Ray Serve: KServe v2 (Triton) HTTP and OpenAI-compatible /v1."
        ),
        version="0.1.0",
    )
    app.include_router(kserve_router)
    app.include_router(openai_router)
    install_error_handlers(app)
    # Every route, including those added later, is behind the edge (API keys, limits);
    # request_context is added after it, so it is outside and counts refused requests
    # too. FastPath, outside both, answers the inference routes itself
    # with the same guard and metrics.
    app.add_middleware(EdgeMiddleware)
    app.middleware("http")(request_context)
    app.add_middleware(FastPath)
    # Outermost of all: sticky routing reads the request's headers and the response
    # names the target that served a public model name, on the fast path too.
    app.add_middleware(TrafficHeaderMiddleware)
    return app
