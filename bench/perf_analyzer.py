"""NVIDIA's ``perf_analyzer`` (C++) as the bench's load generator, so the client is not
the bottleneck.

The binary ships only in the ``tritonclient==2.44.0`` wheel (later wheels dropped it),
as ``<venv>/bin/perf_analyzer``, and needs Debian's ``libb64-0d`` and
``libcudart.so.12`` (the ``nvidia-cuda-runtime-cu12`` wheel, put on
``LD_LIBRARY_PATH`` here). ``make bench-tools`` installs both into ``bench/.venv-perf``,
apart from the project's venv (which has a newer tritonclient);
``PERF_VENV=<dir>`` (as for make) or ``PERF_ANALYZER=/path/to/perf_analyzer`` point
elsewhere.

One cell is one ``perf_analyzer`` run at one concurrency (synchronous requests, one
thread per request in flight): time windows of ``interval_ms``, stable when the last
three windows agree within ``stability_pct`` on throughput and average latency, at
most ``max_trials`` windows. A cell that does not settle (a busy machine) is measured
again with the check off (three windows, the last one reported) and marked unstable.

``python -m bench.perf_analyzer --check`` says whether the binary runs (standard
library only, so ``make bench-tools`` can run it with any Python).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.paths import REPO_ROOT

PERF_VENV = Path(os.environ.get("PERF_VENV") or REPO_ROOT / "bench" / ".venv-perf")
CUDART_GLOB = "lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12"
UNSTABLE = "Failed to obtain stable measurement"
SETUP_HINT = (
    "run `make bench-tools` (installs tritonclient==2.44.0, which ships perf_analyzer, "
    "and nvidia-cuda-runtime-cu12 into bench/.venv-perf, and Debian's libb64-0d)"
)


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer is not installed or does not run; the message says how to fix it."""


@dataclass(frozen=True)
class Tool:
    binary: Path
    env: dict[str, str]  # the environment it runs in (LD_LIBRARY_PATH set)


def locate(venv: Path = PERF_VENV) -> Tool:
    """The binary and its environment; raises ``PerfAnalyzerMissing`` naming the fix."""
    override = os.environ.get("PERF_ANALYZER")
    binary = Path(override) if override else venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise PerfAnalyzerMissing(f"perf_analyzer not found at {binary}: {SETUP_HINT}")
    roots = [venv, binary.parent.parent]
    cudart = next((p for root in roots for p in sorted(root.glob(CUDART_GLOB))), None)
    env = dict(os.environ)
    if cudart is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(cudart.parent), env.get("LD_LIBRARY_PATH", "")) if p
        )
    tool = Tool(binary, env)
    try:
        proc = subprocess.run(
            [str(binary), "--help"], env=env, capture_output=True, text=True, timeout=30
        )
    except OSError as exc:
        raise PerfAnalyzerMissing(f"{binary} does not run ({exc}): {SETUP_HINT}") from exc
    text = proc.stdout + proc.stderr
    if "error while loading shared libraries" in text or "--concurrency-range" not in text:
        first = text.strip().splitlines()[:1]
        raise PerfAnalyzerMissing(f"{binary} does not run ({' '.join(first)}): {SETUP_HINT}")
    return tool


# ---- input data: the bytes the project's own client sends too ----


def input_data(model: str) -> dict[str, Any]:
    """``--input-data`` JSON for ``model`` (batch 1, so perf_analyzer sends [1, ...]).

    echo: INPUT_FP32 of 16 values (its inputs are optional and its dims dynamic, so
    only this one is sent, with an explicit shape); minilm: one sentence as TEXT.
    """
    from bench.stack_client import ECHO_SHAPE, EMBED_TEXT, echo_values

    if model == "echo":
        tensor = {"content": echo_values(), "shape": list(ECHO_SHAPE[1:])}
        return {"data": [{"INPUT_FP32": tensor}]}
    if model == "minilm":
        return {"data": [{"TEXT": {"content": [EMBED_TEXT], "shape": [1]}}]}
    raise ValueError(f"no perf_analyzer input data for model {model!r}")


def write_input_data(models: Sequence[str], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for model in models:
        path = directory / f"{model}.json"
        path.write_text(json.dumps(input_data(model)))
        paths[model] = path
    return paths


# ---- one cell ----


@dataclass(frozen=True)
class PerfSettings:
    interval_ms: int = 2000
    stability_pct: int = 15
    max_trials: int = 5
    timeout_s: float = 120.0  # one perf_analyzer run


@dataclass
class PerfResult:
    """What perf_analyzer reports for one cell (latencies end to end, at the client)."""

    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    avg_ms: float = float("nan")
    stable: bool = False
    client_cpu_s: float = float("nan")  # perf_analyzer's own CPU time, whole run
    seconds: float = 0.0  # wall time of the whole run (all windows)
    error: str = ""


def _parse_csv(text: str) -> dict[str, float]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("empty perf_analyzer CSV")
    return {k.strip(): float(v) for k, v in rows[-1].items() if k and v}


def _usec_ms(row: dict[str, float], key: str) -> float:
    return row[key] / 1e3 if key in row else float("nan")


def _run(tool: Tool, args: list[str], timeout_s: float) -> tuple[int, str, float, float]:
    """Run perf_analyzer; its exit code, output, CPU seconds and wall seconds."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [str(tool.binary), *args], env=tool.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped
        out.seek(0)
        text = out.read().decode(errors="replace")
    return proc.returncode, text, usage.ru_utime + usage.ru_stime, time.monotonic() - started


def run_cell(
    tool: Tool,
    model: str,
    protocol: str,
    url: str,
    concurrency: int,
    data: Path,
    settings: PerfSettings,
    headers: Sequence[str] = (),
    on_retry: Callable[[str], None] | None = None,
) -> PerfResult:
    """One perf_analyzer run against ``url`` (``host:port``); see the module doc."""
    with tempfile.TemporaryDirectory(prefix="perf_analyzer_") as tmp:
        report = Path(tmp) / "report.csv"
        base = [
            "-m", model, "-i", protocol, "-u", url, "--input-data", str(data),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-mode", "time_windows", "-p", str(settings.interval_ms),
            "-f", str(report),
        ]  # fmt: skip
        for header in headers:
            base += ["-H", header]
        attempts = [
            (True, ["-s", str(settings.stability_pct), "-r", str(settings.max_trials)]),
            (False, ["-s", "1000000", "-r", "3"]),  # no stability check: the 3rd window
        ]
        result = PerfResult()
        cpu = wall = 0.0
        for stable, extra in attempts:
            code, text, used, took = _run(tool, base + extra, settings.timeout_s)
            cpu, wall = cpu + used, wall + took
            if code == 0 and report.is_file():
                row = _parse_csv(report.read_text())
                result = PerfResult(
                    rps=row.get("Inferences/Second", 0.0),
                    p50_ms=_usec_ms(row, "p50 latency"),
                    p99_ms=_usec_ms(row, "p99 latency"),
                    avg_ms=_avg_latency_ms(text),
                    stable=stable,
                )
                break
            tail = " | ".join(text.strip().splitlines()[-3:])
            result.error = f"exit {code}: {tail}"
            if UNSTABLE not in text:
                break  # a real failure: retrying without the check would not help
            if on_retry is not None:
                on_retry(tail)
        result.client_cpu_s, result.seconds = cpu, wall
        return result


def _avg_latency_ms(text: str) -> float:
    """``Avg latency: N usec`` of the report printed on stdout (the client's view)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Avg latency:"):
            return float(line.split()[2]) / 1e3
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_analyzer")
    parser.add_argument("--check", action="store_true", help="check that perf_analyzer runs")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    try:
        tool = locate()
    except PerfAnalyzerMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"perf_analyzer runs: {tool.binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
