"""``bench.pool_path`` runs and prints its four cells (a short run)."""

from __future__ import annotations

import pytest

from bench.pool_path import main


def test_pool_path_bench_prints_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--calls", "50"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| replica: plain model (empty context)",
        "| replica: resident pool model (acquire + release)",
        "| router: pool rule, 2 replicas",
        "| router: pool rule, 8 replicas",
    ]
    for row in rows[2:]:
        p50, p99, most = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
        assert 0 < p50 <= p99 <= most
