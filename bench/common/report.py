"""What every benchmark prints: progress on stderr, verdicts, JSON, and the machine's
load around the run (figures from a busy machine are not comparable, so the load
average is recorded before and after, with a warning up front)."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from bench.common.measure import Cell


def progress(line: str) -> None:
    """A line on stderr at once (the report itself goes to stdout)."""
    print(line, file=sys.stderr, flush=True)


def cell_line(cell: Cell) -> str:
    """A cell's figures for a progress line, after what names the cell."""
    return (
        f"c={cell.concurrency:<3} {cell.requests:>7} req {cell.rps:>9.1f} rps  "
        f"p50 {cell.p50_ms:8.3f} ms  p99 {cell.p99_ms:8.3f} ms"
    )


def verdict(ok: bool, missed: str = "MISS") -> str:
    """A target met, or ``missed`` (a missed target is a finding, not a failed run;
    the stack's goals say FAIL)."""
    return "PASS" if ok else missed


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash where there is no figure."""
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def json_safe(value: Any) -> Any:
    """JSON has no NaN: a figure without requests becomes ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def load_before() -> float:
    """The 1-minute load average now; warns on stderr when the machine is already busy."""
    load = round(os.getloadavg()[0], 2)
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        progress(
            f"warning: load average {load} on {cpus} CPUs before the run; "
            "other work on this machine will skew the numbers"
        )
    return load


def print_totals(meta: dict[str, Any], started: float) -> None:
    """Record wall time and the load after the run in ``meta`` and print them."""
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["load_after"] = round(os.getloadavg()[0], 2)
    print(
        f"\n(total {meta['wall_s']} s; 1-min load average {meta['load_before']} before, "
        f"{meta['load_after']} after)"
    )
