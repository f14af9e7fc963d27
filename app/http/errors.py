"""One place that renders errors: ``ServingError`` -> status, body, headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import BadRequest, ServingError, kserve_body, openai_body, to_serving_error

__all__ = ["app_path", "error_response", "install_error_handlers", "is_openai_path"]


def app_path(scope: Mapping[str, Any]) -> str:
    """The request path inside the application: without the Serve route prefix
    (``root_path``), so ``/v1/...`` and ``/v2/health/...`` match under any prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(err: ServingError, *, openai: bool = False) -> JSONResponse:
    body = openai_body(err) if openai else kserve_body(err)
    return JSONResponse(body, status_code=err.status_code, headers=err.headers())


def _is_openai(request: Request) -> bool:
    return is_openai_path(app_path(request.scope))


async def _serving(request: Request, exc: Exception) -> JSONResponse:
    return error_response(to_serving_error(exc), openai=_is_openai(request))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    where = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return error_response(BadRequest(f"invalid request: {where}"), openai=_is_openai(request))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if _is_openai(request):
        body: dict[str, object] = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    else:
        body = {"error": message}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Handlers are module-level functions so Serve can pickle the app by reference."""
    app.add_exception_handler(ServingError, _serving)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _serving)
