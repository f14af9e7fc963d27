"""The Serve stack against the standalone ``tritonserver``, over KServe v2 HTTP and gRPC.

Run with ``make bench-tools && make bench-stack`` (or ``python -m bench.stack``;
``--quick`` for a smoke run, ~4 min). One run starts both targets, one after the other,
serving the same ``model_repository`` (``bench.stack_targets``):

- **stack**: Ray started in this process, the applications of ``--stack-config``
  (default ``serve_configs/local.yaml`` with two logical GPUs, as ``make serve``),
  Serve's HTTP and gRPC proxies on free ports;
- **standalone**: the ``tritonserver`` of the nvidia-pytriton wheel, HTTP and gRPC.

Models ``echo`` (``INPUT_FP32`` FP32 [1,16]) and ``minilm`` (``TEXT`` BYTES [1,1] ->
``EMBEDDING`` FP32 [1,384]); one request per model and target is checked first (echo
returns its input; the embedding has 384 unit-norm values, the same on both targets).

Per target, model, protocol and concurrency (1, 16, 64), NVIDIA's ``perf_analyzer``
(C++, ``bench.perf_analyzer``) measures p50/p99 latency and requests/s; around each of
its runs the bench reads the CPU time of every process of the target from ``/proc``
(``bench.hop_cpu``) and Triton's count of served requests, which gives CPU per request
by hop: Serve's proxy, the router replica, the model's replica, its Triton stubs, the
rest of Ray, and their total; for standalone ``tritonserver`` and its stubs. Then the
project's own Python client (``bench.stack_client``, HTTP) measures the same cells again, as
a secondary figure. The report (``bench.stack_report``) ends with the data path's goals, PASS or
FAIL per line; the results go to ``bench/out/stack-<time>.json`` (``--json``).

``--serve-env KEY=VALUE`` (repeatable) sets Ray Serve's request-path flags, such as
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, before Ray starts, so every Serve actor gets them;
``--stack-endpoint direct`` then sends requests to the router replica's own ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import perf_analyzer
from bench import stack_targets as targets
from bench.common.paths import MODEL_REPOSITORY, OUT_DIR, REPO_ROOT
from bench.common.report import load_before, print_totals, progress
from bench.hop_cpu import HopProbe
from bench.stack_client import ClientJob, ModelResult, build_request, check_target, run_client
from bench.stack_report import (
    PerfCell,
    check_goals,
    goal_lines,
    hop_table,
    own_client_table,
    perf_tables,
    ratio_table,
)

MODELS = ("echo", "minilm")
TARGETS = ("stack", "standalone")
PROTOCOLS = ("http", "grpc")
CLIENTS = ("perf", "own")
CONCURRENCY = (1, 16, 64)


@dataclass
class Settings:
    """What every target is measured with."""

    models: list[str]
    protocols: list[str]
    clients: list[str]
    concurrency: tuple[int, ...]
    perf: perf_analyzer.PerfSettings
    encoding: str  # the own client's bodies
    warmup_s: float
    duration_s: float
    client: str
    loop: str
    stack: targets.StackOptions


def _progress(cell: PerfCell) -> None:
    note = "" if cell.stable else "  (unstable)"
    if cell.error and not cell.rps:
        note = f"  FAILED: {cell.error}"
    progress(
        f"  {cell.target:<10} {cell.model:<6} {cell.protocol:<4} c={cell.concurrency:<3} "
        f"{cell.rps:>8.1f} rps  p50 {cell.p50_ms:8.2f} ms  p99 {cell.p99_ms:8.2f} ms  "
        f"CPU/req total {cell.ms_per_request('total'):6.2f} ms  "
        f"client {cell.client_ms_per_request:5.2f} ms  req/call {cell.requests_per_call:5.2f}"
        f"{note}"
    )


def perf_cell(
    target: targets.Target,
    tool: perf_analyzer.Tool,
    model: str,
    protocol: str,
    concurrency: int,
    data: Path,
    settings: Settings,
) -> PerfCell:
    """One perf_analyzer run, with the CPU of each hop and the requests served."""
    address = target.http_address if protocol == "http" else target.grpc_address
    probe = HopProbe(target.hops(model))
    before = targets.success_count(target.http_url, model)
    calls_before = target.coalescing(model)
    probe.start()
    result = perf_analyzer.run_cell(
        tool, model, protocol, address, concurrency, data, settings.perf
    )
    cpu = probe.stop()
    served = targets.success_count(target.http_url, model) - before
    calls_after = target.coalescing(model)
    calls = carried = None
    if calls_before is not None and calls_after is not None:
        calls, carried = (a - b for a, b in zip(calls_after, calls_before, strict=True))
    cell = PerfCell(
        target=target.name,
        model=model,
        protocol=protocol,
        concurrency=concurrency,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        avg_ms=result.avg_ms,
        stable=result.stable,
        requests=served,
        seconds=result.seconds,
        client_cpu_s=result.client_cpu_s,
        hop_cpu_s=cpu,
        error=result.error,
        replica_calls=calls,
        coalesced_requests=carried,
    )
    _progress(cell)
    return cell


def measure(
    target_cm: contextlib.AbstractContextManager[targets.Target],
    settings: Settings,
    tool: perf_analyzer.Tool | None,
    inputs: dict[str, Path],
    meta: dict[str, Any],
) -> tuple[list[PerfCell], list[ModelResult], dict[str, list[float]]]:
    perf_cells: list[PerfCell] = []
    own: list[ModelResult] = []
    outputs: dict[str, list[float]] = {}
    with target_cm as target:
        meta["targets"][target.name] = {
            "triton": target.version,
            "http": target.http_url,
            "grpc": target.grpc_address,
        } | target.info
        print(f"{target.name} ({target.http_url}, gRPC {target.grpc_address}):", file=sys.stderr)
        for model in settings.models:
            outputs[model] = check_target(target.http_url, build_request(model, "binary"))
        if tool is not None:
            for model in settings.models:
                for protocol in settings.protocols:
                    if protocol == "grpc" and not target.grpc_address:
                        print(f"  {target.name}: no gRPC endpoint, skipped", file=sys.stderr)
                        continue
                    for n in settings.concurrency:
                        cell = perf_cell(target, tool, model, protocol, n, inputs[model], settings)
                        perf_cells.append(cell)
        if "own" in settings.clients:
            print(f"  {target.name}: the project's own client (HTTP)", file=sys.stderr)
            for model in settings.models:
                job = ClientJob(
                    url=target.http_url,
                    target=target.name,
                    spec=build_request(model, settings.encoding),
                    concurrency=settings.concurrency,
                    warmup_s=settings.warmup_s,
                    duration_s=settings.duration_s,
                    loop=settings.loop,
                    cpu_root=target.cpu_root,
                )
                own.append(run_client(job, settings.client))
    return perf_cells, own, outputs


# ---- main ----


def _serve_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not key.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(choices)}, got {text!r}"
            )
        return list(dict.fromkeys(names))

    return parse


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,16,64, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--models", type=_names(MODELS), default=list(MODELS), help="default echo,minilm")
    add("--targets", type=_names(TARGETS), default=list(TARGETS), help="default both")
    add("--protocols", type=_names(PROTOCOLS), default=list(PROTOCOLS), help="default http,grpc")
    add("--clients", type=_names(CLIENTS), default=list(CLIENTS), help="perf (perf_analyzer), own")
    add("--concurrency", type=_ints, default=CONCURRENCY, help="default 1,16,64")
    add("--quick", action="store_true", help="smoke run: 1 s windows, 3 trials; own client 1 s")
    add("--json", type=Path, default=None, help="default bench/out/stack-<time>.json")
    add("--perf-interval-ms", type=int, default=2000, help="perf_analyzer window (2000)")
    add("--perf-stability", type=int, default=15, help="perf_analyzer -s, percent (15)")
    add("--perf-max-trials", type=int, default=5, help="perf_analyzer -r (5)")
    add("--duration", type=float, default=3.0, help="own client: seconds per cell (3)")
    add("--warmup", type=float, default=1.0, help="own client: warm-up seconds per cell (1)")
    add("--encoding", choices=["binary", "json"], default="binary", help="own client's bodies")
    add("--client", choices=["process", "inline"], default="process", help="own client's process")
    add("--client-loop", choices=["uvloop", "asyncio"], default=_default_loop())
    add(
        "--stack-config",
        default="serve_configs/local.yaml",
        help="Serve config deployed as the stack (default serve_configs/local.yaml, what "
        "`make serve` runs), or 'bench': one deployment per benchmarked model",
    )
    add("--num-gpus", type=float, default=2, help="logical GPUs of the stack's Ray (2)")
    add(
        "--serve-env",
        type=_serve_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set before Ray starts (repeatable), e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1",
    )
    add(
        "--stack-endpoint",
        choices=["proxy", "direct"],
        default="proxy",
        help="Serve's proxies (default) or the router replica's own ports (direct ingress)",
    )
    args = parser.parse_args(argv)
    env = {**os.environ, **dict(args.serve_env)}
    if args.stack_endpoint == "direct" and env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        parser.error("with RAY_SERVE_ENABLE_HA_PROXY=1, HAProxy is the stack's endpoint: use proxy")
    if args.stack_endpoint == "direct" and not targets.direct_ingress_on(env):
        parser.error(
            "--stack-endpoint direct needs direct ingress: --serve-env "
            "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 (or RAY_SERVE_THROUGHPUT_OPTIMIZED=1)"
        )
    if args.stack_config != "bench" and not Path(args.stack_config).is_file():
        parser.error(f"--stack-config: no such file {args.stack_config}")
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
        args.perf_interval_ms, args.perf_max_trials = 1000, 3
    return args


def _available(models: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Models whose ``config.pbtxt`` exists, and why the others are skipped."""
    kept: list[str] = []
    skipped: dict[str, str] = {}
    for model in models:
        config = MODEL_REPOSITORY / model / "config.pbtxt"
        if config.is_file():
            kept.append(model)
        else:
            skipped[model] = f"{config.relative_to(REPO_ROOT)} does not exist"
    return kept, skipped


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        progress(f"({name}: {time.monotonic() - started:.1f} s)")


def _settings(args: argparse.Namespace, models: list[str]) -> Settings:
    return Settings(
        models=models,
        protocols=args.protocols,
        clients=args.clients,
        concurrency=args.concurrency,
        perf=perf_analyzer.PerfSettings(
            interval_ms=args.perf_interval_ms,
            stability_pct=args.perf_stability,
            max_trials=args.perf_max_trials,
        ),
        encoding=args.encoding,
        warmup_s=args.warmup,
        duration_s=args.duration,
        client=args.client,
        loop=args.client_loop,
        stack=targets.StackOptions(
            config=args.stack_config,
            num_gpus=args.num_gpus,
            serve_env=targets.serve_env_with_defaults(dict(args.serve_env)),
            endpoint=args.stack_endpoint,
        ),
    )


def _max_abs_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    tool = None
    if "perf" in args.clients:
        try:
            tool = perf_analyzer.locate()
        except perf_analyzer.PerfAnalyzerMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    models, skipped = _available(args.models)
    for model, reason in skipped.items():
        print(f"skipping {model}: {reason}", file=sys.stderr)
    if not models:
        print("nothing to measure", file=sys.stderr)
        return 1
    settings = _settings(args, models)
    import ray

    meta: dict[str, Any] = {
        "ray": ray.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 1,
        "perf_analyzer": str(tool.binary) if tool else None,
        "command": shlex.join([Path(sys.executable).name, "-m", "bench.stack", *argv]),
        "settings": asdict(settings),
        "skipped": skipped,
        "targets": {},
        "load_before": load_before(),
    }
    started = time.monotonic()
    out_path = args.json or OUT_DIR / time.strftime("stack-%Y%m%d-%H%M%S.json")
    inputs = perf_analyzer.write_input_data(models, OUT_DIR / "perf_inputs")
    perf_cells: list[PerfCell] = []
    own: list[ModelResult] = []
    outputs: dict[str, dict[str, list[float]]] = {}
    for index, name in enumerate(args.targets):
        if index:
            time.sleep(targets.SETTLE_S)
        cm = (
            targets.stack(settings.stack, models) if name == "stack" else targets.standalone(models)
        )
        with _stage(name):
            cells, results, outputs[name] = measure(cm, settings, tool, inputs, meta)
        perf_cells += cells
        own += results
    perf_cells.sort(
        key=lambda c: (models.index(c.model), PROTOCOLS.index(c.protocol), c.target, c.concurrency)
    )
    own.sort(key=lambda r: (models.index(r.model), TARGETS.index(r.target)))
    goals = check_goals(perf_cells)
    conc = settings.concurrency
    stack_info = meta["targets"].get("stack", {})
    versions = sorted({t["triton"] for t in meta["targets"].values()})
    lines = [
        f"## Serve stack vs standalone tritonserver (Triton {', '.join(versions)}, "
        f"Ray {meta['ray']}, {meta['cpus']} CPUs; stack: {stack_info.get('config', '—')}, "
        f"serve env: {settings.stack.serve_env or 'none'}, endpoint {settings.stack.endpoint})",
        "",
    ]
    if perf_cells:
        lines += [*perf_tables(perf_cells, conc), ""]
        lines += [*ratio_table(perf_cells, conc), ""]
        lines += [*hop_table(perf_cells), ""]
    if own:
        lines += [*own_client_table(own, conc), ""]
    if "stack" in outputs and "standalone" in outputs:
        diffs = {m: _max_abs_diff(outputs["stack"][m], outputs["standalone"][m]) for m in models}
        meta["outputs_max_abs_diff"] = diffs
        lines.append(
            "Outputs, stack vs standalone, max abs diff: "
            + ", ".join(f"{m} {d:.2g}" for m, d in diffs.items())
        )
        lines.append("")
    lines += goal_lines(goals)
    lines.append(f"\nCommand: {meta['command']}")
    print("\n".join(lines))
    print_totals(meta, started)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "perf_analyzer": [asdict(c) for c in perf_cells],
        "own_client": [r.to_dict() for r in own],
        "goals": goals,
    }
    out_path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"(results: {out_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
