"""In-process engine against the standalone ``tritonserver`` of the same Triton build.

Run with ``python -m bench.engine`` (``make bench``). One run measures the ``echo`` model
of ``model_repository`` three ways:

- **in-process**: ``app.triton.Server`` in this process, asyncio clients awaiting
  ``Model.infer``;
- **standalone gRPC** and **standalone HTTP**: the wheel's ``tritonserver`` in a
  subprocess, driven by ``tritonclient``. To be fair to the baseline, each standalone cell
  above concurrency 1 is measured with both client styles, asyncio clients
  (``tritonclient.*.aio``, one client shared by the tasks) and threads (one sync client
  per thread), and the higher requests/s is kept (a style under half the other's rps at
  16 is not tried at 64). At concurrency 1 the sync client on one thread is used: it has
  the lower latency of the two (an event loop only adds work).

Each path is measured with a small tensor (FP32 [1,16]) and a 4 MiB one (FP32 [1, 1<<20]),
with and without a busy Python thread in this process (a thread spinning pure-Python
work). The report has p50/p99 latency at concurrency 1 and requests/s at concurrency 1, 16
and 64, then the ratios and targets. Only one server runs at a time: the in-process server
is started, measured and stopped before the standalone one is started, measured and
stopped. Progress goes to stderr, the report to stdout.

What is measured is in ``bench.engine_cases``, the load generators in
``bench.engine_drivers``, the three paths in ``bench.engine_targets``, the report in
``bench.engine_report``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common.report import json_safe, load_before, print_totals, progress
from bench.engine_cases import TENSORS, Row
from bench.engine_report import render
from bench.engine_targets import ClientStyle, measure_in_process, measure_standalone


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds measured per cell (default 2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="seconds of warm-up per cell (default 0.5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 0.3 s per cell, 0.1 s warm-up, small tensor only unless --tensors",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["in-process", "grpc", "http"],
        default=["in-process", "grpc", "http"],
        help="which paths to measure (default all)",
    )
    parser.add_argument(
        "--tensors", nargs="+", choices=list(TENSORS), default=None, help="tensors (default all)"
    )
    parser.add_argument(
        "--busy", choices=["both", "idle", "busy"], default="both", help="busy-thread modes"
    )
    parser.add_argument(
        "--standalone-client",
        choices=["best", "asyncio", "threads"],
        default="best",
        help="tritonclient style for the standalone server; best measures both (default)",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this process (default: Python's, 5 ms); it bounds "
        "how long a thread waits for the GIL held by the busy thread",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 0.3, 0.1
    if args.tensors is None:
        args.tensors = ["small"] if args.quick else list(TENSORS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    busy_modes = {"both": [False, True], "idle": [False], "busy": [True]}[args.busy]
    styles: list[ClientStyle] = (
        ["asyncio", "threads"] if args.standalone_client == "best" else [args.standalone_client]
    )
    protocols = [p for p, flag in (("gRPC", "grpc"), ("HTTP", "http")) if flag in args.paths]
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    started = time.monotonic()
    gc.collect()
    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "standalone_client": args.standalone_client,
        "switch_interval_ms": sys.getswitchinterval() * 1000,
        "load_before": load_before(),
    }
    rows: list[Row] = []
    if "in-process" in args.paths:
        progress("in-process engine:")
        rows += measure_in_process(args.tensors, busy_modes, args.warmup, args.duration, meta)
    if protocols:
        progress("standalone tritonserver:")
        rows += measure_standalone(
            protocols, args.tensors, busy_modes, styles, args.warmup, args.duration, meta
        )
    report, ratios = render(rows, meta)
    print(report)
    print_totals(meta, started)
    if args.json is not None:
        payload = {
            "meta": meta,
            "rows": [
                {
                    "path": r.path,
                    "tensor": r.tensor,
                    "busy": r.busy,
                    "cells": [asdict(c) for c in r.cells.values()],
                }
                for r in rows
            ],
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(json_safe(payload), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
