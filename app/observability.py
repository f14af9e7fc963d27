"""Prometheus text helpers and the router's own request counters."""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections import defaultdict
from itertools import accumulate

__all__ = ["RouterMetrics", "label_metrics", "merge_metrics"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?( .*)$")
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


class RouterMetrics:
    """Requests and latency per model, route and status, in Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, model: str, route: str, status: int, seconds: float) -> None:
        """Count one request: a few dict lookups; the histogram's cumulative buckets
        are summed when rendered, not per request."""
        with self._lock:
            self._requests[(model, route, status)] += 1
            buckets = self._latency.get((model, route))
            if buckets is None:
                buckets = self._latency[(model, route)] = [0.0] * (len(_LATENCY_BUCKETS_S) + 3)
            # buckets[i]: requests in (bound[i-1], bound[i]]; then > last bound, count, sum.
            buckets[bisect_left(_LATENCY_BUCKETS_S, seconds)] += 1
            buckets[-2] += 1
            buckets[-1] += seconds

    def render(self) -> str:
        lines = [
            "# HELP triton_serve_requests_total Requests answered by the router.",
            "# TYPE triton_serve_requests_total counter",
        ]
        with self._lock:
            for (model, route, status), count in sorted(self._requests.items()):
                lines.append(
                    f'triton_serve_requests_total{{model="{_escape(model)}",route="{route}",'
                    f'status="{status}"}} {count}'
                )
            lines += [
                "# HELP triton_serve_request_duration_seconds Router latency per request.",
                "# TYPE triton_serve_request_duration_seconds histogram",
            ]
            for (model, route), buckets in sorted(self._latency.items()):
                base = f'model="{_escape(model)}",route="{route}"'
                for bound, value in zip(_LATENCY_BUCKETS_S, accumulate(buckets), strict=False):
                    lines.append(
                        f'triton_serve_request_duration_seconds_bucket{{{base},le="{bound}"}} '
                        f"{int(value)}"
                    )
                lines.append(
                    f'triton_serve_request_duration_seconds_bucket{{{base},le="+Inf"}} '
                    f"{int(buckets[-2])}"
                )
                lines.append(
                    f"triton_serve_request_duration_seconds_count{{{base}}} {int(buckets[-2])}"
                )
                lines.append(
                    f"triton_serve_request_duration_seconds_sum{{{base}}} {buckets[-1]:.6f}"
                )
        return "\n".join(lines) + "\n"
