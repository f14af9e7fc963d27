"""Overload: goodput, admitted-request latency and shed rate from 0.5x to 3x capacity.

Run with ``python -m bench.overload`` (about 3 minutes on 2 cores). By default it
starts the stack in this process (Ray with 4 logical CPUs and 1 logical GPU) with one
``echo`` deployment whose replica takes ``--max-ongoing`` requests at a time and
queues ``--max-queued`` more (beyond that Serve sheds them and the router answers
503 with ``Retry-After``); ``--url`` measures an already running stack instead
(``make serve``: its echo takes 64 and queues 256).

Every request is an echo infer (FP32 [1,16], JSON) with the request parameter
``delay_ms`` (``--delay-ms``), so the model, not the HTTP path, is the bottleneck:
echo's one instance holds a batch for ``delay_ms``. First the capacity is measured
with a closed loop (``2 x max_ongoing`` clients for ``--capacity-s``): the rate of
200s. Then each load level is offered open-loop (arrivals at a constant rate,
independent of answers, for ``--level-s`` each) and reports:

- goodput: answers with status 200 per second of the level;
- p50/p99 of admitted requests (200s), in ms;
- shed: the share of requests answered 503 (or 429); ``other`` counts anything else.

Target: goodput at 3x >= 90 % of goodput at 1x (overload must not collapse
throughput: shedding is cheap and what is admitted is served).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from app.protocol.kserve_v2 import encode_infer_request
from app.triton.tensors import DataType
from bench.common.measure import percentile
from bench.common.paths import MODEL_REPOSITORY
from bench.common.report import load_before, print_totals, progress, verdict
from bench.common.serve_app import serve_app

LEVELS = (0.5, 1.0, 1.5, 2.0, 3.0)
TARGET_RATIO = 0.9
SHED = (429, 503)


@dataclass
class LevelResult:
    multiple: float
    offered_rps: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def goodput(self) -> float:
        return self.statuses.get(200, 0) / self.seconds

    @property
    def shed_share(self) -> float:
        return sum(self.statuses.get(s, 0) for s in SHED) / max(1, self.sent)

    @property
    def other(self) -> int:
        return self.sent - self.statuses.get(200, 0) - sum(self.statuses.get(s, 0) for s in SHED)

    def percentile(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


def request_body(delay_ms: int) -> bytes:
    tensor = ("INPUT_FP32", DataType.FP32, np.ones((1, 16), np.float32))
    body, _ = encode_infer_request([tensor], binary=False, parameters={"delay_ms": delay_ms})
    return body


async def _send(client: httpx.AsyncClient, url: str, body: bytes, out: LevelResult) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(url, content=body)
        status = response.status_code
    except httpx.HTTPError:
        status = 0
    if status == 200:
        out.latencies_ms.append((time.perf_counter() - started) * 1000)
    out.statuses[status] = out.statuses.get(status, 0) + 1


async def measure_capacity(
    client: httpx.AsyncClient, url: str, body: bytes, clients: int, seconds: float
) -> float:
    """Closed loop: ``clients`` callers back to back; the rate of 200s."""
    out = LevelResult(0, 0, seconds)
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            await _send(client, url, body, out)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    out.seconds = time.perf_counter() - started
    return out.goodput


async def offer(
    client: httpx.AsyncClient, url: str, body: bytes, rps: float, seconds: float, multiple: float
) -> LevelResult:
    """Open loop: one request every ``1/rps`` s, whatever the answers; the level's
    goodput counts 200s over the offered period plus the drain of its last requests."""
    out = LevelResult(multiple, rps, seconds)
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    count = int(rps * seconds)
    for i in range(count):
        delay = started + i / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(client, url, body, out)))
    await asyncio.gather(*tasks)
    out.seconds = max(seconds, time.perf_counter() - started)
    return out


def stack_args(max_ongoing: int, max_queued: int) -> dict[str, Any]:
    return {
        "model_repository": str(MODEL_REPOSITORY),
        "triton": {"log_info": False},
        "router": {"max_ongoing_requests": 1024},
        "deployments": [
            {
                "name": "echo",
                "models": ["echo"],
                "num_cpus": 1,
                "num_gpus": 0.25,
                "max_ongoing_requests": max_ongoing,
                "max_queued_requests": max_queued,
            }
        ],
    }


def local_stack(args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    return serve_app(stack_args(args.max_ongoing, args.max_queued), "overload", "echo")


def print_table(capacity: float, results: list[LevelResult]) -> bool:
    print(f"\ncapacity (closed loop): {capacity:.1f} req/s\n")
    print("| load | offered req/s | sent | goodput req/s | p50 ms | p99 ms | shed | other |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.multiple:g}x | {r.offered_rps:.1f} | {r.sent} | {r.goodput:.1f} "
            f"| {r.percentile(0.50):.0f} | {r.percentile(0.99):.0f} "
            f"| {100 * r.shed_share:.1f}% | {r.other} |"
        )
    at = {r.multiple: r for r in results}
    ratio = at[3.0].goodput / at[1.0].goodput if at[1.0].goodput else 0.0
    ok = ratio >= TARGET_RATIO
    print(
        f"\ngoodput at 3x / goodput at 1x = {ratio:.2f} "
        f"(target >= {TARGET_RATIO:.2f}): {verdict(ok)}"
    )
    return ok


async def run(url: str, args: argparse.Namespace) -> tuple[float, list[LevelResult]]:
    infer_url = f"{url}/v2/models/echo/infer"
    body = request_body(args.delay_ms)
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=1024)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await measure_capacity(client, infer_url, body, 2 * args.max_ongoing, 2.0)  # warm-up
        capacity = await measure_capacity(
            client, infer_url, body, 2 * args.max_ongoing, args.capacity_s
        )
        progress(f"capacity: {capacity:.1f} req/s")
        results = []
        for multiple in LEVELS:
            result = await offer(
                client, infer_url, body, multiple * capacity, args.level_s, multiple
            )
            progress(f"{multiple:g}x: goodput {result.goodput:.1f}, statuses {result.statuses}")
            results.append(result)
            await asyncio.sleep(1.0)  # let queues drain between levels
    return capacity, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running stack (default: start one here)")
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--max-ongoing", type=int, default=4)
    parser.add_argument("--max-queued", type=int, default=8)
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--level-s", type=float, default=15.0)
    args = parser.parse_args()
    meta: dict[str, Any] = {"load_before": load_before()}
    started = time.monotonic()
    print(
        f"echo, delay_ms={args.delay_ms}, max_ongoing_requests={args.max_ongoing}, "
        f"max_queued_requests={args.max_queued}"
        + (f", stack at {args.url}" if args.url else ", stack started here"),
        flush=True,
    )
    if args.url:
        capacity, results = asyncio.run(run(args.url, args))
    else:
        with local_stack(args) as url:
            capacity, results = asyncio.run(run(url, args))
    ok = print_table(capacity, results)
    print_totals(meta, started)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
