"""Polling with a bound: the one way tests wait for a stack, a model or a process."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 20,
    what: str = "condition",
    period: float = 0.5,
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails naming ``what``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(period)
    return time.monotonic() - started


def wait_for_models(url: str, models: list[str], timeout: float) -> float:
    """Seconds until every model answers 200 on ``/v2/models/<m>/ready`` at ``url``
    (connection errors while the proxy starts count as not ready)."""
    started = time.monotonic()
    pending = list(models)
    while pending:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"models not ready after {timeout} s: {pending}")
        with contextlib.suppress(httpx.HTTPError):
            pending = [
                m
                for m in pending
                if httpx.get(f"{url}/v2/models/{m}/ready", timeout=10).status_code != 200
            ]
        if pending:
            time.sleep(0.5)
    return time.monotonic() - started
