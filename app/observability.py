"""Prometheus text helpers and the router's own request counters."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["RouterMetrics", "label_metrics", "merge_metrics", "render_registry"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?( .*)$")
# Model names come from requests, so a client could mint series with made-up names
# (each 404 is counted): past this many names, the others share one label.
MAX_MODEL_LABELS = 2000
OTHER_MODELS = "_other"
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_metrics(text: str, labels: dict[str, str]) -> str:
    """Add ``labels`` to every sample of a Prometheus text document (HELP/TYPE kept)."""
    extra = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            out.append(line)
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, _, existing, rest = match.groups()
        inner = f"{existing},{extra}" if existing else extra
        out.append(f"{name}{{{inner}}}{rest}")
    return "\n".join(out) + "\n"


def merge_metrics(documents: list[str]) -> str:
    """Concatenate documents keeping one HELP/TYPE line per metric family."""
    seen: set[str] = set()
    out = []
    for doc in documents:
        for line in doc.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                key = line[:7] + line[7:].split(" ", 1)[0]
                if key in seen:
                    continue
                seen.add(key)
            out.append(line)
    return "\n".join(out) + "\n"


def render_registry(registry: CollectorRegistry) -> str:
    """Prometheus text of one registry, without ``_created`` series: these counters live
    and restart with their process, so a creation time per label set would only double
    the series a scraper stores."""
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if not _is_created(line)) + "\n"


def _is_created(line: str) -> bool:
    if line.startswith(("# HELP ", "# TYPE ")):
        name = line.split(" ", 3)[2]
    else:
        name = line.split("{", 1)[0].split(" ", 1)[0]
    return name.endswith("_created")


class RouterMetrics:
    """Requests and latency per model, route and status (``prometheus_client``, one
    registry per router so that tests and apps in one process do not share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "triton_serve_requests",
            "Requests answered by the router.",
            ("model", "route", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "triton_serve_request_duration_seconds",
            "Router latency per request.",
            ("model", "route"),
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # The labelled children, cached: ``labels()`` validates its arguments per call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._models: set[str] = set()

    def observe(self, model: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((model, route, status))
        if children is None:
            children = self._labelled(model, route, status)
        children[0].inc()
        children[1].observe(seconds)

    def _labelled(self, model: str, route: str, status: int) -> tuple[Any, Any]:
        """The children of a label set not seen yet; past ``MAX_MODEL_LABELS`` names a
        new name counts as ``_other`` (and is not cached under its own name either)."""
        if model not in self._models:
            if len(self._models) >= MAX_MODEL_LABELS:
                model = OTHER_MODELS
            self._models.add(model)
        key = (model, route, status)
        if key not in self._children:
            self._children[key] = (
                self._requests.labels(model, route, str(status)),
                self._latency.labels(model, route),
            )
        return self._children[key]

    def render(self) -> str:
        return render_registry(self.registry)
