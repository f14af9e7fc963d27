"""CPU per request of the router's own HTTP layer, in one process, without Ray.

``python -m bench.router_http`` builds the router's ASGI application as the router
replica does (``create_http_app`` with its ``DataPlane``, ``Guard`` and
``RouterMetrics``) and calls it directly with ASGI messages: no HTTP server, no
client, no Serve. The model deployment's handle is replaced by one that answers at
once, so what is measured is the router's work per request and nothing else: routing,
middleware, the key check and limits, the body, the contract call's bookkeeping
(deadline, deployment gate), the response and the metrics. Serve's own cost per
request (its proxy or direct ingress, the handle call, pickling) is not in it;
``bench.stack`` measures the whole path.

It reports CPU microseconds per request (``time.process_time`` over ``--requests``
sequential requests, best of ``--rounds``) for KServe ``infer`` (JSON body, echo's
FP32 [1,16]), with API keys off and on, and for ``GET /v2/health/live``, a route
FastAPI answers, as a baseline of FastAPI's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common.measure import percentile

ECHO_BODY = json.dumps(
    {"inputs": [{"name": "INPUT_FP32", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
).encode()
ECHO_ANSWER = json.dumps(
    {
        "model_name": "echo",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT_FP32", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}
        ],
    }
).encode()
KEY = "bench-key-0123456789abcdef"


class _Answered:
    """A handle call that has already answered (awaitable, cancellable)."""

    __slots__ = ("result",)

    def __init__(self, result: Any) -> None:
        self.result = result

    def __await__(self) -> Any:
        return self.result
        yield  # pragma: no cover - makes this a generator

    def cancel(self) -> None:
        pass


class _InstantHandle:
    """Stands in for a model deployment's Serve handle: every call answers at once."""

    def options(self, **_: Any) -> _InstantHandle:
        return self

    def remote(self, call: Any) -> _Answered:
        from app.contract import InferResult

        return _Answered(InferResult(ECHO_ANSWER))


def build(keys_file: str | None) -> Any:
    from app.config import AppConfig
    from app.http.app import create_http_app
    from app.observability import RouterMetrics
    from app.router.dataplane import DataPlane
    from app.router.traffic_client import TrafficClient
    from app.security.guard import Guard

    cfg = AppConfig.model_validate(
        {
            "model_repository": "model_repository",
            "deployments": [
                {"name": "echo", "models": ["echo"]},
                {"name": "shadow", "models": ["shadow"]},
            ],
            "security": {"api_keys_file": keys_file} if keys_file else {},
            # Public names: one target, and the same with every request copied.
            "traffic": {
                "routed": {"targets": [{"model": "echo", "weight": 1}]},
                "mirrored": {
                    "targets": [{"model": "echo", "weight": 1}],
                    "mirror": {"model": "shadow", "percent": 100},
                },
            },
        }
    )
    plane = DataPlane.__new__(DataPlane)  # no state store: the hot path never reads it
    plane.cfg, plane.app_name, plane.owner = cfg, "bench", {"echo": "echo", "shadow": "shadow"}
    handles = {"echo": _InstantHandle(), "shadow": _InstantHandle()}
    plane.replicas = TrafficClient(cfg, handles)
    app = create_http_app()
    app.state.dataplane = plane
    app.state.guard = Guard(cfg.security)
    app.state.router_metrics = RouterMetrics()
    return app


def scope_of(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def one(app: Any, scope: dict[str, Any], body: bytes) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def measure(
    app: Any, scope: dict[str, Any], body: bytes, requests: int
) -> tuple[float, float]:
    """CPU microseconds per request over ``requests`` sequential requests, and the p99
    of each request's wall time (µs). Work a request leaves behind (a mirror copy)
    runs while the next ones wait, so it shows in both."""
    for _ in range(200):  # warm up (imports, caches, the middleware stack's build)
        status = await one(app, scope, body)
    if status != 200:
        raise SystemExit(f"{scope['method']} {scope['path']} answered {status}")
    walls = []
    started = time.process_time()
    for _ in range(requests):
        begun = time.perf_counter_ns()
        await one(app, scope, body)
        await asyncio.sleep(0)  # tasks the request started (a mirror copy) run now
        walls.append(time.perf_counter_ns() - begun)
    cpu = (time.process_time() - started) / requests * 1e6
    return cpu, percentile(sorted(walls), 0.99) / 1000


async def run(args: argparse.Namespace, keys_file: str) -> list[tuple[str, tuple[float, float]]]:
    json_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(ECHO_BODY)).encode()),
    ]
    cells = [
        ("infer, keys off", None, scope_of("POST", "/v2/models/echo/infer", json_headers)),
        (
            "infer, keys on",
            keys_file,
            scope_of(
                "POST",
                "/v2/models/echo/infer",
                [*json_headers, (b"authorization", f"Bearer {KEY}".encode())],
            ),
        ),
        (
            "infer, public name, no mirror",
            None,
            scope_of("POST", "/v2/models/routed/infer", json_headers),
        ),
        (
            "infer, public name, every request mirrored",
            None,
            scope_of("POST", "/v2/models/mirrored/infer", json_headers),
        ),
        ("GET /v2/health/live (FastAPI)", None, scope_of("GET", "/v2/health/live", [])),
    ]
    results = []
    for label, keys_path, scope in cells:
        app = build(keys_path)
        body = ECHO_BODY if scope["method"] == "POST" else b""
        rounds = [await measure(app, scope, body, args.requests) for _ in range(args.rounds)]
        results.append((label, min(rounds)))  # the round with the least CPU
        copies = _mirror_copies(app)
        if copies:
            print(f"{label}: mirror copies {copies}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="per round (5000)")
    parser.add_argument("--rounds", type=int, default=5, help="best of (5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys.json"
        keys_file.write_text(json.dumps({"keys": [{"name": "bench", "key": KEY, "models": "*"}]}))
        results = asyncio.run(run(args, str(keys_file)))
    print("| router HTTP layer, in process | CPU µs per request | p99 µs per request |")
    print("| --- | ---: | ---: |")
    for label, (micros, p99) in results:
        print(f"| {label} | {micros:.0f} | {p99:.0f} |")
    print(
        f"\n(best of {args.rounds} x {args.requests} requests; 1-min load average {_load():.2f})",
        file=sys.stderr,
    )


def _mirror_copies(app: Any) -> dict[str, float]:
    """The router's mirror counters by result (ok, dropped, failed)."""
    from app.observability import render_registry

    text = render_registry(app.state.dataplane.replicas.traffic_metrics.registry)
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("triton_serve_traffic_mirror_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            found[result] = found.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return float("nan")


if __name__ == "__main__":
    main()
