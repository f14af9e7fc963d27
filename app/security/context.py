"""What the edge middleware learned about the current request, for the data plane.

Context variables, so every route (KServe, OpenAI, any added later) that reaches a
model through ``DataPlane`` is checked without passing them through each route.
"""

from __future__ import annotations

from contextvars import ContextVar

from app.errors import Forbidden
from app.security.keys import ApiKey

__all__ = ["authorize_model", "current_key", "request_timeout_s", "permits"]

# None: authentication is off (or the path is open); every model is allowed.
current_key: ContextVar[ApiKey | None] = ContextVar("current_key", default=None)
# The client's own timeout for this request (seconds), if it sent one.
request_timeout_s: ContextVar[float | None] = ContextVar("request_timeout_s", default=None)


def permits(model: str) -> bool:
    key = current_key.get()
    return key is None or key.may_use(model)


def authorize_model(model: str) -> None:
    """``Forbidden`` unless the current key may use ``model``."""
    key = current_key.get()
    if key is not None and not key.may_use(model):
        raise Forbidden(f"API key '{key.name}' is not allowed to use model '{model}'")
