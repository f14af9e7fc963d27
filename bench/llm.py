"""LLM streaming through the stack against the standalone ``tritonserver`` (and ``vllm serve``).

``python -m bench.llm`` (``--quick`` for a smoke run). Both Triton targets get the same
``generate_stream`` request (Triton's generate extension, SSE): a fixed prompt,
``max_tokens`` tokens at temperature 0 with EOS ignored, ``return_num_output_tokens``
so tokens are counted by the engine where it can (vLLM); a model without that output
(the TensorRT-LLM ensemble) is counted one token per streamed response.

Targets, one at a time so they never share the CPU:

- **stack**: Ray in this process (logical GPUs), ``app.builders.build_app`` with one
  deployment for the model, reached through Serve's HTTP proxy; or ``--stack-url`` for a
  stack that already runs (a GPU cluster serving ``serve_configs/prod.yaml``);
- **standalone**: the ``tritonserver`` of the nvidia-pytriton wheel on the same
  repository; or ``--standalone-url`` for one that already runs (the NGC image's);
- **vllm** (optional, ``--vllm-url``): ``vllm serve`` of the same weights, through its
  OpenAI ``/v1/completions`` stream with ``ignore_eos``.

Per target and concurrency (1, 16, 64 by default): output tokens/s, time to first
token (p50/p99) and inter-token latency p50; then the ratios to standalone. On CPU the
model is ``tiny-llm`` (the vLLM-interface stand-in), so the figures say what the stack
adds per request and per token, not how fast a GPU engine is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.protocol.kserve_v2 import generate_event_tokens
from bench.common.measure import percentile
from bench.common.paths import MODEL_REPOSITORY
from bench.common.report import load_before, print_totals, verdict
from bench.common.serve_app import serve_app
from bench.common.standalone import StandaloneTriton

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class StreamCell:
    """Streams of one target at one concurrency: their tokens and token timings."""

    target: str
    concurrency: int
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    seconds: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def ttft(self, q: float) -> float:
        return percentile(sorted(self.ttft_ms), q)

    def itl(self) -> float:
        return statistics.median(self.itl_ms) if self.itl_ms else float("nan")


def triton_body(max_tokens: int) -> dict[str, Any]:
    sampling = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    return {
        "text_input": PROMPT,
        "stream": True,
        "exclude_input_in_output": True,
        "return_num_output_tokens": True,
        "sampling_parameters": json.dumps(sampling),
    }


async def _events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of one SSE stream (``[DONE]`` left out); a non-200 raises."""
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


async def _one_triton(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], cell: StreamCell
) -> None:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async for event in _events(client, url, body):
        if "error" in event:
            raise RuntimeError(event["error"])
        count = generate_event_tokens(event)
        if count:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            tokens += count
    _record(cell, started, first, last, tokens)


async def _one_vllm(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], cell: StreamCell
) -> None:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async for event in _events(client, url, body):
        if event.get("usage"):
            tokens = int(event["usage"]["completion_tokens"])
        if event.get("choices") and event["choices"][0].get("text"):
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
    _record(cell, started, first, last, tokens)


def _record(
    cell: StreamCell, started: float, first: float | None, last: float | None, n: int
) -> None:
    if first is None or last is None or n == 0:
        raise RuntimeError("the stream carried no tokens")
    cell.requests += 1
    cell.tokens += n
    cell.ttft_ms.append((first - started) * 1000)
    if n > 1:
        cell.itl_ms.append((last - first) * 1000 / (n - 1))


async def measure(
    target: str, url: str, concurrency: int, duration_s: float, max_tokens: int
) -> StreamCell:
    """``concurrency`` clients back to back for ``duration_s`` after one warm-up each."""
    if target == "vllm":
        one, body = (
            _one_vllm,
            {
                "model": "",
                "prompt": PROMPT,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    else:
        one, body = _one_triton, triton_body(max_tokens)
    cell = StreamCell(target, concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        if target == "vllm":
            models = (await client.get(url.replace("/completions", "/models"))).json()
            body["model"] = models["data"][0]["id"]
        warm = StreamCell(target, concurrency)
        await asyncio.gather(*(one(client, url, body, warm) for _ in range(concurrency)))
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    await one(client, url, body, cell)
                except (RuntimeError, httpx.HTTPError) as exc:
                    cell.failures += 1
                    print(f"  {target} c={concurrency}: {exc}", file=sys.stderr)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cell.seconds = time.perf_counter() - started
    return cell


def run_cells(target: str, url: str, args: argparse.Namespace) -> list[StreamCell]:
    cells = []
    for c in args.concurrency:
        cell = asyncio.run(measure(target, url, c, args.duration, args.max_tokens))
        print(
            f"  {target:10} c={c:<3} {cell.tokens_per_s:9.1f} tok/s  "
            f"TTFT p50 {cell.ttft(0.5):8.1f} ms  ITL p50 {cell.itl():7.2f} ms  "
            f"({cell.requests} requests, {cell.failures} failed)",
            flush=True,
        )
        cells.append(cell)
    return cells


def stack_cells(args: argparse.Namespace) -> list[StreamCell]:
    if args.stack_url:
        return run_cells("stack", f"{args.stack_url}/v2/models/{args.model}/generate_stream", args)
    config = {
        "model_repository": str(MODEL_REPOSITORY),
        "triton": {"log_info": False},
        "deployments": [
            {
                "name": args.model,
                "models": [args.model],
                "num_gpus": 0.5,
                "num_cpus": 1,
                "max_ongoing_requests": 256,
            },
        ],
        "router": {"max_ongoing_requests": 512},
    }
    with serve_app(config, "bench-llm", args.model) as url:
        return run_cells("stack", f"{url}/v2/models/{args.model}/generate_stream", args)


def standalone_cells(args: argparse.Namespace) -> list[StreamCell]:
    if args.standalone_url:
        url = f"{args.standalone_url}/v2/models/{args.model}/generate_stream"
        return run_cells("standalone", url, args)
    with StandaloneTriton(MODEL_REPOSITORY, [args.model]) as server:
        url = f"http://127.0.0.1:{server.http_port}/v2/models/{args.model}/generate_stream"
        return run_cells("standalone", url, args)


def render(results: dict[str, list[StreamCell]]) -> None:
    base = {c.concurrency: c for c in results["standalone"]}
    print(
        "\n| target | concurrency | tokens/s | x standalone | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | added ITL ms | added TTFT p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for target, cells in results.items():
        for cell in cells:
            ref = base[cell.concurrency]
            ratio = cell.tokens_per_s / ref.tokens_per_s if ref.tokens_per_s else float("nan")
            print(
                f"| {target} | {cell.concurrency} | {cell.tokens_per_s:.1f} | {ratio:.3f} "
                f"| {cell.ttft(0.5):.1f} | {cell.ttft(0.99):.1f} | {cell.itl():.2f} "
                f"| {cell.itl() - ref.itl():+.2f} | {cell.ttft(0.5) - ref.ttft(0.5):+.1f} |"
            )
    stack = {c.concurrency: c for c in results["stack"]}
    print("\nTargets (GPU): tokens/s >= 97% of standalone; TTFT p50 within +5 ms.")
    for c, cell in stack.items():
        ref = base[c]
        ok_rate = cell.tokens_per_s >= 0.97 * ref.tokens_per_s
        ok_ttft = cell.ttft(0.5) - ref.ttft(0.5) <= 5.0
        print(
            f"  c={c}: tokens/s {cell.tokens_per_s / ref.tokens_per_s:.1%} of standalone "
            f"{verdict(ok_rate)}; TTFT p50 {cell.ttft(0.5) - ref.ttft(0.5):+.1f} ms "
            f"{verdict(ok_ttft)}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-llm", help="model to stream from")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per cell")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--stack-url", help="an already running stack (skip starting one)")
    parser.add_argument("--standalone-url", help="an already running tritonserver")
    parser.add_argument("--vllm-url", help="base URL of a `vllm serve` to compare too")
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1,4; 3 s cells")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.max_tokens = [1, 4], 3.0, 16
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta: dict[str, Any] = {"load_before": load_before()}
    started = time.monotonic()
    print(f"model {args.model}, {args.max_tokens} tokens per request, {args.duration} s cells")
    results = {"stack": stack_cells(args), "standalone": standalone_cells(args)}
    if args.vllm_url:
        results["vllm"] = run_cells("vllm", f"{args.vllm_url}/v1/completions", args)
    render(results)
    print_totals(meta, started)
    failed = sum(c.failures for cells in results.values() for c in cells)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
