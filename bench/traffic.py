"""The mirror's cost to the primary: p50/p99 of a public name with and without a mirror.

Run with ``python -m bench.traffic`` (about 2 minutes on 2 cores with the defaults).
It starts the stack in this process (Ray with 4 logical CPUs) serving ``versioned``
and ``ensemble_pipeline`` (same input, the mirror target) and three ways to reach
``versioned`` version 1:

- ``direct``: the model itself;
- ``routed``: a public name with one target and no mirror;
- ``mirrored``: the same public name with every request copied to the pipeline.

Closed loop: ``--clients`` clients send KServe infer requests (FP32 [16], JSON) for
``--phase-s`` seconds per mode; the modes alternate for ``--rounds`` rounds so drift
on a shared machine hits each alike. Reported: requests, p50 and p99 (ms) per mode,
and ``mirrored - routed`` at p99, the figure the target (<= 1 ms) is about. Mirror
copies still in flight when a phase ends run into the next one; the pipeline's
counters in ``/metrics`` show how many were sent, dropped or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common.net import wait_ok
from bench.common.report import load_before, print_totals
from bench.common.serve_app import serve_app

MODEL_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
MODES = {"direct": "versioned/versions/1", "routed": "routed", "mirrored": "mirrored"}
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16}]}
).encode()


def stack_args(max_in_flight: int) -> dict[str, Any]:
    cpu = {"num_gpus": 0, "num_cpus": 0.5}
    one = [{"model": "versioned", "version": "1", "weight": 1}]
    return {
        "model_repository": str(MODEL_REPOSITORY),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.5},
        "deployments": [
            {"name": "versioned", "models": ["versioned"], **cpu},
            {"name": "pipeline", "models": ["ensemble_pipeline", "ens_scale", "ens_offset"], **cpu},
        ],
        "traffic": {
            "routed": {"targets": one},
            "mirrored": {
                "targets": one,
                "mirror": {
                    "model": "ensemble_pipeline",
                    "percent": 100,
                    "max_in_flight": max_in_flight,
                },
            },
        },
    }


@contextlib.contextmanager
def local_stack(max_in_flight: int) -> Iterator[str]:
    with serve_app(stack_args(max_in_flight), "traffic", "versioned", num_gpus=0) as url:
        wait_ok(f"{url}/v2/models/ensemble_pipeline/ready", 300)
        yield url


async def phase(url: str, path: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms) of 200s and the count of anything else."""
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    headers = {"content-type": "application/json"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < end:
            started = time.perf_counter()
            response = await http.post(
                f"{url}/v2/models/{path}/infer", content=BODY, headers=headers
            )
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    for path in MODES.values():  # warm every path
        await phase(url, path, args.clients, 1.0)
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    errors = dict.fromkeys(MODES, 0)
    for _ in range(args.rounds):
        for mode, path in MODES.items():
            got, failed = await phase(url, path, args.clients, args.phase_s)
            latencies[mode] += got
            errors[mode] += failed
    return {
        mode: {
            "requests": len(values),
            "errors": errors[mode],
            "p50_ms": round(percentile(values, 0.50), 2),
            "p99_ms": round(percentile(values, 0.99), 2),
        }
        for mode, values in latencies.items()
    }


def mirror_counts(url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("triton_serve_traffic_mirror_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="a running stack serving 'routed' and 'mirrored'")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-in-flight", type=int, default=32, help="mirror copies at once")
    args = parser.parse_args()
    started = time.monotonic()
    meta: dict[str, Any] = {"load_before": load_before()}
    stack = contextlib.nullcontext(args.url) if args.url else local_stack(args.max_in_flight)
    with stack as url:
        results = asyncio.run(run(url, args))
        mirror = mirror_counts(url)
    print(f"{'mode':<10}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for mode, r in results.items():
        print(
            f"{mode:<10}{r['requests']:>10}{r['errors']:>8}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
        )
    delta = results["mirrored"]["p99_ms"] - results["routed"]["p99_ms"]
    print(f"\nmirror's effect on p99: {delta:+.2f} ms (target <= 1 ms)")
    print(f"mirror copies: {mirror}")
    print_totals(meta, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
