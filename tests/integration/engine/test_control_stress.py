"""Overlapping model control must never crash the engine (see ``control_stress``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _run_driver(arg: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.engine.control_stress", arg],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # A crash of the engine is a signal exit (-11 SIGSEGV, -6 SIGABRT), never a clean 0.
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-4000:])
    return result.stdout


def _run_stress(seconds: float) -> dict[str, int]:
    stdout = _run_driver(str(seconds), seconds + 240)
    line = next(li for li in stdout.splitlines() if li.startswith("stress:"))
    return {k: int(v) for k, v in re.findall(r"'([^']+)': (\d+)", line)}


def test_control_calls_overlapping_inference_do_not_crash() -> None:
    tally = _run_stress(20)
    controls = sum(n for k, n in tally.items() if k.startswith(("load", "unload", "reload")))
    assert controls >= 5, tally
    assert tally.get("infer ok", 0) > 0, tally


def test_wait_until_unloaded_returns_when_processes_are_gone() -> None:
    assert "unload check: ok" in _run_driver("unload-check", 240)


STRESS_SECONDS = float(os.environ.get("CONTROL_STRESS_SECONDS", "600"))


@pytest.mark.slow
@pytest.mark.timeout(STRESS_SECONDS + 300)  # beyond pytest-timeout's default of 300 s
def test_control_stress_ten_minutes() -> None:
    tally = _run_stress(STRESS_SECONDS)
    assert tally.get("unload ensemble+dependents", 0) > 0, tally
