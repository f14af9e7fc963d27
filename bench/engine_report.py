"""``bench.engine``'s report: the latency/throughput table, then the ratios to the
standalone server against the targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.common.report import verdict
from bench.engine_cases import (
    CONCURRENCY,
    PATHS,
    TARGET_BUSY_COST,
    TARGET_P50_RATIO,
    TARGET_RPS_RATIO,
    TENSORS,
    Row,
)


def _find(rows: Sequence[Row], path: str, tensor: str, busy: bool) -> Row | None:
    for row in rows:
        if (row.path, row.tensor, row.busy) == (path, tensor, busy):
            return row
    return None


def _table(rows: Sequence[Row], meta: dict[str, Any]) -> list[str]:
    triton = meta.get("triton") or meta.get("standalone_triton", "?")
    if meta.get("standalone_triton", triton) != triton:
        triton = f"{triton} in-process, {meta['standalone_triton']} standalone"
    lines = [
        f"## echo: in-process engine vs standalone tritonserver (Triton {triton}, "
        f"{meta['cpus']} CPUs, {meta['duration_s']} s per cell, "
        f"GIL switch interval {meta['switch_interval_ms']:g} ms)",
        "",
        "| path | tensor | busy thread | p50 ms | p99 ms | rps@1 | rps@16 | rps@64 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.path} | {row.tensor} | {'yes' if row.busy else 'no'} "
            f"| {row.p50_ms:.3f} | {row.p99_ms:.3f} "
            + " ".join(f"| {row.rps(c):.0f}" for c in CONCURRENCY)
            + " |"
        )
    standalone = [row for row in rows if row.path != "in-process"]
    if standalone:
        lines += ["", "Standalone client style per cell (tritonclient asyncio or sync in threads):"]
        lines += [
            f"- {row.path}, {row.tensor}, {'busy' if row.busy else 'idle'}: "
            + ", ".join(f"c{c} {cell.client}" for c, cell in row.cells.items())
            for row in standalone
        ]
    return lines


def _ratio_lines(rows: Sequence[Row], ratios: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| tensor | busy thread | in-process rps@16 / gRPC rps@16 | target | "
        "in-process p50 / gRPC p50 | target |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for tensor in TENSORS:
        for busy in (False, True):
            mine = _find(rows, "in-process", tensor, busy)
            grpc = _find(rows, "standalone gRPC", tensor, busy)
            if mine is None or grpc is None:
                continue
            rps_ratio = mine.rps(16) / grpc.rps(16)
            p50_ratio = mine.p50_ms / grpc.p50_ms
            rps_ok = rps_ratio >= TARGET_RPS_RATIO
            p50_ok = p50_ratio <= TARGET_P50_RATIO
            ratios["throughput"].append(
                {"tensor": tensor, "busy": busy, "ratio": rps_ratio, "pass": rps_ok}
            )
            ratios["latency"].append(
                {"tensor": tensor, "busy": busy, "ratio": p50_ratio, "pass": p50_ok}
            )
            lines.append(
                f"| {tensor} | {'yes' if busy else 'no'} | {rps_ratio:.2f}x "
                f"| >= {TARGET_RPS_RATIO}x {verdict(rps_ok)} | {p50_ratio:.2f}x "
                f"| <= {TARGET_P50_RATIO:.1f}x {verdict(p50_ok)} |"
            )
    return lines


def _busy_lines(rows: Sequence[Row], ratios: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| path | tensor | idle p50 ms | busy p50 ms | busy-thread cost (busy/idle - 1) | target "
        "| idle mean ms | busy mean ms | cost on the mean |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for path in PATHS:
        for tensor in TENSORS:
            idle = _find(rows, path, tensor, False)
            busy_row = _find(rows, path, tensor, True)
            if idle is None or busy_row is None:
                continue
            cost = busy_row.p50_ms / idle.p50_ms - 1
            ok = cost < TARGET_BUSY_COST
            # The busy-thread latency is bimodal (the loop either wins the GIL back at once
            # or waits a switch interval), so the mean at concurrency 1 is shown as well.
            idle_mean, busy_mean = idle.cells[1].mean_ms, busy_row.cells[1].mean_ms
            mean_cost = busy_mean / idle_mean - 1
            if path == "in-process":
                ratios["busy_cost"].append(
                    {"tensor": tensor, "cost": cost, "mean_cost": mean_cost, "pass": ok}
                )
            target = f"< {TARGET_BUSY_COST:.0%} {verdict(ok)}" if path == "in-process" else "-"
            lines.append(
                f"| {path} | {tensor} | {idle.p50_ms:.3f} | {busy_row.p50_ms:.3f} "
                f"| {cost:+.0%} | {target} | {idle_mean:.3f} | {busy_mean:.3f} "
                f"| {mean_cost:+.0%} |"
            )
    return lines


def render(rows: Sequence[Row], meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The markdown report and the ratios/targets as data."""
    ratios: dict[str, Any] = {"throughput": [], "latency": [], "busy_cost": []}
    lines = _table(rows, meta) + _ratio_lines(rows, ratios) + _busy_lines(rows, ratios)
    verdicts = [v["pass"] for group in ratios.values() for v in group]
    if verdicts:
        lines += [
            "",
            f"Targets: {sum(verdicts)}/{len(verdicts)} PASS "
            f"(throughput@16 >= {TARGET_RPS_RATIO}x gRPC, p50@1 <= gRPC, "
            f"busy-thread p50 cost < {TARGET_BUSY_COST:.0%}).",
        ]
    return "\n".join(lines), ratios
