"""``EdgeMiddleware``: the ASGI middleware that runs ``Guard`` before every route.

Pure ASGI (not ``BaseHTTPMiddleware``) so that a streaming response keeps its
key's concurrency slot until its last byte, and the context variables it sets
are seen by the route in the same task.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ServingError
from app.http.errors import app_path, error_response, is_openai_path
from app.security.context import current_key, request_timeout_s
from app.security.guard import TIMEOUT_HEADER, Guard, challenge, parse_request_timeout

__all__ = ["EdgeMiddleware"]


class EdgeMiddleware:
    """Authenticates, authorizes and rate-limits with ``app.state.guard`` (absent or
    disabled: open), and takes the client's ``X-Request-Timeout``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = app_path(scope)
        headers = _headers(scope)
        state = getattr(scope.get("app"), "state", None)
        guard: Guard | None = getattr(state, "guard", None)
        try:
            timeout = parse_request_timeout(headers.get(TIMEOUT_HEADER))
            if guard is not None:
                key, slot = await guard.admit(path, headers.get("authorization"))
            else:
                key, slot = None, None
        except ServingError as err:
            response = error_response(err, openai=is_openai_path(path))
            response.headers.update(challenge(err))
            await response(scope, receive, send)
            return
        key_token = current_key.set(key)
        timeout_token = request_timeout_s.set(timeout)
        try:
            await self.app(scope, receive, send)
        finally:
            request_timeout_s.reset(timeout_token)
            current_key.reset(key_token)
            if slot is not None:
                slot.release()


def _headers(scope: Scope) -> dict[str, str]:
    wanted = (b"authorization", TIMEOUT_HEADER.encode())
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name.lower() in wanted
    }
