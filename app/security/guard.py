"""The router's edge: authenticate a request, check its path's scope, admit it.

``Guard`` holds the key ring (reloaded when the key file changes) and the
per-key limiters; ``EdgeMiddleware`` (ASGI, app-wide, so routes added later are
covered) asks it about every HTTP request before any route runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time

from app.errors import BadRequest, Forbidden, ServingError, Unauthorized
from app.security.config import SecurityConfig
from app.security.keys import ApiKey, KeyRing, load_key_file
from app.security.limits import KeyLimiter, Slot

__all__ = ["Guard", "is_open_path", "parse_request_timeout"]

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-request-timeout"
_HEALTH_PREFIX = "/v2/health/"
_REPOSITORY_PREFIX = "/v2/repository/"


def is_open_path(path: str, cfg: SecurityConfig) -> bool:
    """Paths served without a key: health, and metrics if configured so."""
    return path.startswith(_HEALTH_PREFIX) or (path == "/metrics" and not cfg.metrics_require_key)


def parse_request_timeout(value: str | None) -> float | None:
    """The ``X-Request-Timeout`` header (seconds); ``BadRequest`` if it is not > 0."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadRequest(
            f"header X-Request-Timeout must be a number of seconds > 0, got {value!r}",
            param="X-Request-Timeout",
        )
    return seconds


class Guard:
    """Authentication, scopes and per-key limits of one router replica."""

    def __init__(self, cfg: SecurityConfig, router_replicas: int = 1) -> None:
        self.cfg = cfg
        self.share = max(1, router_replicas)
        self.ring: KeyRing | None = None
        self._mtime = 0.0
        self._checked_at = time.monotonic()
        self._reload_lock = asyncio.Lock()
        self._limiters: dict[str, KeyLimiter] = {}
        if cfg.api_keys_file is not None:
            self._mtime = _mtime(cfg.api_keys_file)
            self.ring = load_key_file(cfg.api_keys_file, cfg.default_limits)
            log.info("API keys on: %d keys from %s", len(self.ring), cfg.api_keys_file)

    @property
    def enabled(self) -> bool:
        return self.ring is not None

    async def admit(self, path: str, authorization: str | None) -> tuple[ApiKey | None, Slot]:
        """The caller's key and its concurrency slot; raises 401, 403 or 429."""
        key = await self.identify(path, authorization)
        return key, self.limit(key)

    async def identify(self, path: str, authorization: str | None) -> ApiKey | None:
        """The caller's key if ``path`` needs one (None: open), without counting a
        request against its limits; raises 401 or 403."""
        if self.ring is None or is_open_path(path, self.cfg):
            return None
        await self._maybe_reload()
        key = self.authenticate(authorization)
        if path.startswith(_REPOSITORY_PREFIX) and not key.repository:
            raise Forbidden(f"API key '{key.name}' may not use the model repository API")
        return key

    def limit(self, key: ApiKey | None) -> Slot:
        """One request of ``key`` against its rate and concurrency limits (a token and
        a slot), or 429. Requests without a key are not limited."""
        if key is None:
            return Slot(None)
        return self._limiter(key).admit()

    def authenticate(self, authorization: str | None) -> ApiKey:
        assert self.ring is not None
        if not authorization:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        key = self.ring.lookup(token.strip())
        if key is None:
            raise Unauthorized("invalid API key")
        return key

    def _limiter(self, key: ApiKey) -> KeyLimiter:
        limiter = self._limiters.get(key.name)
        if limiter is None or limiter.limits != key.limits:
            replaced = limiter
            limiter = KeyLimiter(key.name, key.limits, self.share)
            if replaced is not None:  # requests in flight keep counting after a reload
                limiter.in_flight = replaced.in_flight
            self._limiters[key.name] = limiter
        return limiter

    async def _maybe_reload(self) -> None:
        """Re-read the key file when it changed (Kubernetes updates mounted Secrets in
        place); a file that fails to load keeps the previous keys."""
        interval = self.cfg.reload_interval_s
        path = self.cfg.api_keys_file
        if path is None or interval <= 0 or time.monotonic() - self._checked_at < interval:
            return
        if self._reload_lock.locked():
            return
        async with self._reload_lock:
            self._checked_at = time.monotonic()
            try:
                mtime = await asyncio.to_thread(_mtime, path)
                if mtime == self._mtime:
                    return
                ring = await asyncio.to_thread(load_key_file, path, self.cfg.default_limits)
            except ValueError as exc:
                log.error("keeping the previous API keys: %s", exc)
                return
            self.ring, self._mtime = ring, mtime
            log.info("API keys reloaded: %d keys", len(ring))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError as exc:
        raise ValueError(f"security.api_keys_file ({path!r}): {exc.strerror or exc}") from None


def challenge(err: ServingError) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 (RFC 6750)."""
    if not isinstance(err, Unauthorized):
        return {}
    if err.message == "invalid API key":
        return {"WWW-Authenticate": 'Bearer realm="triton-serve", error="invalid_token"'}
    return {"WWW-Authenticate": 'Bearer realm="triton-serve"'}
