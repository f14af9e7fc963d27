"""Machine load around a benchmark run: figures on a busy machine are not comparable,
so both scripts record the load average before and after and warn up front."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def load_before() -> float:
    """The 1-minute load average now; warns on stderr when the machine is already busy."""
    load = round(os.getloadavg()[0], 2)
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        print(
            f"warning: load average {load} on {cpus} CPUs before the run; "
            "other work on this machine will skew the numbers",
            file=sys.stderr,
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
