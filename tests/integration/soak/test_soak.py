"""Soak: mixed traffic for ``SOAK_SECONDS`` (60 here; ``make test-soak``: 1800).

No request lost or corrupted; bad requests get their 4xx, never a 5xx; the resident
memory of the cluster's Ray worker processes (Serve replicas, proxy, controller, the
state store) and of the python-backend stubs stays flat after a warm-up; no replica
restarts; every replica ends with the stubs and shared-memory regions it started
with (``versioned`` is unloaded and loaded every 5 s throughout).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.integration.soak.client import run_soak, summary
from tests.integration.soak.conftest import APP_NAME, SoakStack
from tests.integration.soak.traffic import MIX
from tests.support import procs

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WARMUP_S = min(120.0, SOAK_SECONDS / 4)
SAMPLE_PERIOD_S = max(1.0, SOAK_SECONDS / 120)
# Growth from the end of the warm-up to the end that still counts as flat.
RSS_SLACK_BYTES = 64 << 20
RSS_SLACK_FRACTION = 0.15
DEPLOYMENTS = ["echo", "streamer", "versioned", "tiny-llm", "embedding"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SOAK_SECONDS) + 900)]


@dataclass
class RssSampler:
    """Every SAMPLE_PERIOD_S: the RSS of the raylet's Ray workers and their stubs."""

    raylet: int
    samples: list[tuple[float, dict[tuple[int, str], int]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def watched(self) -> dict[tuple[int, str], int]:
        found: dict[tuple[int, str], int] = {}
        for pid in procs.children(self.raylet):
            title = procs.title(pid)
            if not title.startswith("ray::") or title.startswith("ray::IDLE"):
                continue
            for key_pid, name in [(pid, title.split(".")[0])] + [
                (stub.pid, f"  stub {stub.instance}") for stub in procs.stubs([pid])
            ]:
                rss = procs.rss(key_pid)
                if rss is not None:
                    found[(key_pid, name)] = rss
        return found

    def run(self, started: float) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - started, self.watched()))
            self.stop.wait(SAMPLE_PERIOD_S)

    def growth(self) -> list[tuple[str, int, int]]:
        """(process, RSS after warm-up, growth since): medians of the first and the
        last tenth of the samples taken after the warm-up."""
        after = [s for t, s in self.samples if t >= WARMUP_S]
        window = max(1, len(after) // 10)
        rows = []
        for key in sorted(set(after[0]) & set(after[-1]), key=lambda k: k[1]):
            first = statistics.median(s[key] for s in after[:window] if key in s)
            last = statistics.median(s[key] for s in after[-window:] if key in s)
            rows.append((f"{key[1]} ({key[0]})", int(first), int(last - first)))
        return rows


def _inventory() -> dict[str, tuple[list[int], Counter[str], int]]:
    """Each deployment: its replica pids, their stubs' instance names, their regions."""
    found = {}
    for deployment in DEPLOYMENTS:
        pids = procs.replica_pids(APP_NAME, deployment)
        instances = Counter(stub.instance for stub in procs.stubs(pids))
        found[deployment] = (pids, instances, len(procs.shm_files(pids)))
    return found


def test_mixed_traffic_loses_nothing_and_stays_flat(soak_stack: SoakStack) -> None:
    raylet = int(soak_stack.cluster.head_node.all_processes["raylet"][0].process.pid)
    before = _inventory()
    assert all(pids and instances for pids, instances, _ in before.values()), before
    sampler = RssSampler(raylet)
    started = time.monotonic()
    thread = threading.Thread(target=sampler.run, args=(started,), daemon=True)
    thread.start()
    try:
        tally = asyncio.run(run_soak(soak_stack.url, SOAK_SECONDS))
    finally:
        sampler.stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    report = summary(tally, elapsed)
    print(json.dumps(report, indent=2))
    rows = sampler.growth()
    print(f"RSS after the {WARMUP_S:.0f} s warm-up and growth until the end ({elapsed:.0f} s):")
    for name, rss, grew in rows:
        print(f"  {name:60s} {rss / 2**20:8.1f} MiB  {grew / 2**20:+7.1f} MiB")

    assert not tally.lost and not tally.corrupted, report
    assert {kind for kind, _, _ in MIX} | {"load_cycle"} <= set(tally.sent), report
    assert tally.sent["load_cycle"] >= SOAK_SECONDS / 20, report
    grown = [
        (name, rss, grew)
        for name, rss, grew in rows
        if grew > max(RSS_SLACK_BYTES, RSS_SLACK_FRACTION * rss)
    ]
    assert not grown, grown
    after = _inventory()
    for deployment, (pids, instances, regions) in before.items():
        assert after[deployment][0] == pids, f"{deployment} replica restarted"
        assert after[deployment][1] == instances, (deployment, after[deployment][1])
        assert after[deployment][2] == regions, (deployment, "shared-memory regions")
