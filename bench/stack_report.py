"""``bench.stack``'s printed report: latency/throughput tables, CPU per hop, the goals.

The goals are the data path's, each checked per protocol against the standalone
``tritonserver`` of the same run, from the perf_analyzer cells:

- floor: added p50 at concurrency 1 <= 4 ms (each model); minilm requests/s at 16 >=
  0.7x standalone; echo >= 600 requests/s at 16; CPU per request summed over every
  Ray/Serve process <= 3 ms at 16 (each model);
- moonshot: added p50 <= 2 ms; minilm >= 0.9x; echo >= 1,500 requests/s at 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common.report import fmt, verdict
from bench.hop_cpu import STACK_HOPS, STANDALONE_HOPS, TOTAL
from bench.stack_client import ModelResult


@dataclass
class PerfCell:
    """One perf_analyzer run: a target, a model, a protocol, one concurrency."""

    target: str
    model: str
    protocol: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    avg_ms: float
    stable: bool
    requests: int  # served during the whole run (Triton's statistics, before/after)
    seconds: float  # wall time of the whole run
    client_cpu_s: float  # perf_analyzer's own
    hop_cpu_s: dict[str, float] = field(default_factory=dict)  # hop -> CPU s, whole run
    error: str = ""
    # The stack's router→replica calls to the model's deployment and the requests they
    # carried (its coalescing histogram, before/after); None for standalone.
    replica_calls: float | None = None
    coalesced_requests: float | None = None

    def ms_per_request(self, hop: str) -> float:
        """CPU ms per request of ``hop`` (= CPU s per 1,000 requests)."""
        if hop not in self.hop_cpu_s or not self.requests:
            return math.nan
        return self.hop_cpu_s[hop] * 1e3 / self.requests

    @property
    def requests_per_call(self) -> float:
        """Requests per router→replica call (coalescing), NaN where not counted."""
        if not self.replica_calls or self.coalesced_requests is None:
            return math.nan
        return self.coalesced_requests / self.replica_calls

    @property
    def client_ms_per_request(self) -> float:
        return self.client_cpu_s * 1e3 / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class Goal:
    level: str  # "floor" or "moonshot"
    kind: str  # "added_p50", "minilm_ratio", "echo_rps", "cpu"
    limit: float


GOALS = (
    Goal("floor", "added_p50", 4.0),
    Goal("floor", "minilm_ratio", 0.7),
    Goal("floor", "echo_rps", 600.0),
    Goal("floor", "cpu", 3.0),
    Goal("moonshot", "added_p50", 2.0),
    Goal("moonshot", "minilm_ratio", 0.9),
    Goal("moonshot", "echo_rps", 1500.0),
)


def _mark(cell: PerfCell | None) -> str:
    return "" if cell is None or cell.stable else "*"


def perf_tables(cells: Sequence[PerfCell], concurrency: Sequence[int]) -> list[str]:
    index = {(c.target, c.model, c.protocol, c.concurrency): c for c in cells}
    keys = list(dict.fromkeys((c.model, c.protocol, c.target) for c in cells))
    head = " | ".join(f"p50@{n} | p99@{n} | rps@{n}" for n in concurrency)
    lines = [
        "perf_analyzer: latency in ms (end to end at the client), requests/s; "
        "* = did not settle within the stability check (last window of 3 reported)",
        "",
        f"| model | protocol | target | {head} |",
        "| --- | --- | --- |" + " ---: | ---: | ---: |" * len(concurrency),
    ]
    for model, protocol, target in keys:
        row = f"| {model} | {protocol} | {target} "
        for n in concurrency:
            c = index.get((target, model, protocol, n))
            if c is None or (c.error and not c.rps):
                row += "| — | — | — "
            else:
                m = _mark(c)
                row += f"| {fmt(c.p50_ms, '.2f')}{m} | {fmt(c.p99_ms, '.2f')}{m} | {c.rps:.0f}{m} "
        lines.append(row + "|")
    failed = [c for c in cells if c.error and not c.rps]
    if failed:
        lines += ["", "Failed perf_analyzer cells:"]
        lines += [
            f"- {c.target} {c.model} {c.protocol} c={c.concurrency}: {c.error}" for c in failed
        ]
    return lines


def ratio_table(cells: Sequence[PerfCell], concurrency: Sequence[int]) -> list[str]:
    index = {(c.target, c.model, c.protocol, c.concurrency): c for c in cells}
    pairs = list(dict.fromkeys((c.model, c.protocol) for c in cells))
    lines = [
        "Stack vs standalone (perf_analyzer): added latency = stack - standalone",
        "",
        "| model | protocol | added p50@1 ms | added p99@1 ms | "
        + " | ".join(f"rps@{n} ratio" for n in concurrency)
        + " |",
        "| --- | --- | ---: | ---: |" + " ---: |" * len(concurrency),
    ]
    for model, protocol in pairs:
        s1 = index.get(("stack", model, protocol, 1))
        a1 = index.get(("standalone", model, protocol, 1))
        if s1 is None or a1 is None:
            continue
        row = (
            f"| {model} | {protocol} | {fmt(s1.p50_ms - a1.p50_ms, '+.2f')} "
            f"| {fmt(s1.p99_ms - a1.p99_ms, '+.2f')} "
        )
        for n in concurrency:
            s, a = (
                index.get(("stack", model, protocol, n)),
                index.get(("standalone", model, protocol, n)),
            )
            value = s.rps / a.rps if s and a and a.rps else math.nan
            row += f"| {fmt(value, '.2f')}x "
        lines.append(row + "|")
    return lines


def hop_table(cells: Sequence[PerfCell]) -> list[str]:
    hops = [*STACK_HOPS, *(h for h in STANDALONE_HOPS if h not in STACK_HOPS)]
    lines = [
        "CPU seconds per 1,000 requests (= CPU ms per request) by process, perf_analyzer "
        "cells; requests counted by Triton's statistics over the whole perf_analyzer run. "
        "Stack: proxy = ray::ProxyActor, router = the ingress replica, replica = the model's "
        "deployment, model = its Triton stubs, other Ray = every other process of the "
        "cluster (GCS, raylet, controller, other deployments); total = all Ray/Serve "
        "processes. Standalone: tritonserver and its stubs. client = perf_analyzer. "
        "req/call = requests per router-to-replica call (coalescing; the router's "
        "triton_serve_coalesced_requests).",
        "",
        "| model | protocol | c | target | "
        + " | ".join(hops)
        + f" | {TOTAL} | client | req/call |",
        "| --- | --- | ---: | --- |" + " ---: |" * (len(hops) + 3),
    ]
    for c in cells:
        values = " | ".join(fmt(c.ms_per_request(h), ".2f") for h in hops)
        lines.append(
            f"| {c.model} | {c.protocol} | {c.concurrency} | {c.target} | {values} "
            f"| {fmt(c.ms_per_request(TOTAL), '.2f')} | {fmt(c.client_ms_per_request, '.2f')} "
            f"| {fmt(c.requests_per_call, '.2f')} |"
        )
    return lines


def own_client_table(results: Sequence[ModelResult], concurrency: Sequence[int]) -> list[str]:
    lines = [
        "The project's own client (httpx, one Python process; HTTP, binary tensors): "
        "latency in ms, requests/s; CPU ms per request of the target's processes and of "
        "the client. Secondary: near 800 requests/s the client itself is the limit.",
        "",
        "| model | target | p50@1 | p99@1 | "
        + " | ".join(f"rps@{n}" for n in concurrency)
        + " | server CPU@16 | client CPU@16 |",
        "| --- | --- | ---: | ---: |" + " ---: |" * (len(concurrency) + 2),
    ]
    for r in results:
        first = r.cells[concurrency[0]]
        c16 = r.cells.get(16)
        lines.append(
            f"| {r.model} | {r.target} | {fmt(first.p50_ms, '.2f')} | {fmt(first.p99_ms, '.2f')} "
            + " ".join(f"| {r.cells[n].rps:.0f}" for n in concurrency)
            + f" | {fmt(c16.cpu_ms_per_request if c16 else math.nan, '.2f')}"
            + f" | {fmt(c16.client_ms_per_request if c16 else math.nan, '.2f')} |"
        )
    failed = [c for r in results for c in r.cells.values() if c.errors]
    lines += [f"- failed: {c.model} {c.target} c={c.concurrency}: {c.errors}" for c in failed]
    return lines


def check_goals(cells: Sequence[PerfCell]) -> list[dict[str, Any]]:
    """Every goal line that the measured cells allow, with its value and verdict."""
    index = {(c.target, c.model, c.protocol, c.concurrency): c for c in cells}
    pairs = list(dict.fromkeys((c.model, c.protocol) for c in cells if c.target == "stack"))
    out: list[dict[str, Any]] = []
    for goal in GOALS:
        for model, protocol in pairs:
            stack1, alone1 = index.get(("stack", model, protocol, 1)), None
            stack16 = index.get(("stack", model, protocol, 16))
            alone1 = index.get(("standalone", model, protocol, 1))
            alone16 = index.get(("standalone", model, protocol, 16))
            value, text, ok = math.nan, "", False
            if goal.kind == "added_p50" and stack1 and alone1:
                value = stack1.p50_ms - alone1.p50_ms
                text = f"added p50 @1 = {value:+.2f} ms (goal <= {goal.limit:g} ms)"
                ok = value <= goal.limit
            elif goal.kind == "minilm_ratio" and model == "minilm" and stack16 and alone16:
                value = stack16.rps / alone16.rps if alone16.rps else math.nan
                text = f"rps@16 = {value:.2f}x standalone (goal >= {goal.limit:g}x)"
                ok = value >= goal.limit
            elif goal.kind == "echo_rps" and model == "echo" and stack16:
                value = stack16.rps
                text = f"rps@16 = {value:.0f} (goal >= {goal.limit:.0f})"
                ok = value >= goal.limit
            elif goal.kind == "cpu" and stack16:
                value = stack16.ms_per_request(TOTAL)
                text = (
                    f"CPU/request @16, all Ray/Serve = {value:.2f} ms (goal <= {goal.limit:g} ms)"
                )
                ok = value <= goal.limit
            if not text:
                continue
            ratio = value / goal.limit if goal.limit else math.nan
            out.append(
                {"level": goal.level, "kind": goal.kind, "model": model, "protocol": protocol}
                | {"value": value, "goal": goal.limit, "value_over_goal": ratio}
                | {"pass": bool(ok and math.isfinite(value)), "text": text}
            )
    return out


def goal_lines(goals: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["Data-path goals (perf_analyzer cells; value/goal in brackets):"]
    for g in goals:
        lines.append(
            f"- {verdict(g['pass'], 'FAIL')} {g['level']:<8} {g['model']:<6} "
            f"{g['protocol']:<4} {g['text']} "
            f"[{fmt(g['value_over_goal'], '.2f')}]"
        )
    if not goals:
        lines.append("- none checked (both targets and concurrency 1 and 16 are needed)")
    return lines
