"""Reading SSE streams the way a client does, recording when each event came."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    status: int
    events: list[Any] = field(default_factory=list)  # parsed JSON, or "[DONE]"
    transport_error: str | None = None  # the connection broke instead of ending
    ended_after_s: float = 0.0

    @property
    def errors(self) -> list[Any]:
        return [e for e in self.events if isinstance(e, dict) and "error" in e]


def read_stream(
    client: httpx.Client,
    url: str,
    body: dict[str, Any],
    on_event: Callable[[int, Any], None] | None = None,
) -> StreamResult:
    """POST ``body`` and read the SSE answer; ``on_event(i, event)`` runs after each."""
    started = time.monotonic()
    with client.stream("POST", url, json=body) as response:
        result = StreamResult(response.status_code)
        if response.status_code != 200:
            response.read()
            result.events.append(response.json())
            return result
        try:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line.removeprefix("data: ")
                event = payload if payload == "[DONE]" else json.loads(payload)
                result.events.append(event)
                if on_event is not None:
                    on_event(len(result.events), event)
        except httpx.HTTPError as exc:
            result.transport_error = f"{type(exc).__name__}: {exc}"
    result.ended_after_s = time.monotonic() - started
    return result
