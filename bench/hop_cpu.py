"""CPU time per process and per hop, read from ``/proc/<pid>/stat`` (Linux).

A request through the stack crosses Serve's proxy (``ray::ProxyActor``; ``haproxy`` with
Serve's HAProxy ingress), the router replica and a model replica
(``ray::ServeReplica:<app>:<deployment>``, the proctitle Ray gives its workers), whose
in-process Triton runs the model in python-backend stub processes. The bench reads
utime + stime of each before and after a cell and divides by the requests served in
between: CPU seconds per 1,000 requests, which is also CPU milliseconds per request.

Only descendants of a given root are looked at (the bench's own Ray cluster, started
with ``address="local"``, or the standalone ``tritonserver``), so other Ray clusters on
a shared machine are never counted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CpuSnapshot = dict[int, int]  # pid -> utime + stime in clock ticks

# Stack hops, in the order of a request; "replica" is the model's deployment (its Ray
# worker), "model" its Triton stub processes, "other Ray" every other process of the
# cluster (GCS, raylet, controller, the other deployments, idle workers).
STACK_HOPS = ("proxy", "router", "replica", "model", "other Ray")
STANDALONE_HOPS = ("tritonserver", "model")
TOTAL = "total"


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(
    root: int, exclude: int, children: Mapping[int, list[int]] | None = None
) -> list[int]:
    """``root`` and its descendants, without ``exclude`` (Linux). A descendant ``exclude``
    goes with its own descendants; ``exclude == root`` keeps the root's descendants."""
    kids = _children() if children is None else children
    tree: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid == exclude and pid != root:
            continue
        if pid != exclude:
            tree.append(pid)
        todo += kids.get(pid, [])
    return tree


def cpu_snapshot(pids: Iterable[int]) -> CpuSnapshot:
    ticks: CpuSnapshot = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_seconds(start: CpuSnapshot, end: CpuSnapshot, pids: Iterable[int] | None = None) -> float:
    """CPU used between two snapshots by the processes alive at both (of ``pids``)."""
    chosen = end.keys() if pids is None else pids
    ticks = sum(end[pid] - start[pid] for pid in chosen if pid in start and pid in end)
    return ticks / os.sysconf("SC_CLK_TCK")


def proctitle(pid: int) -> str:
    """What ``ps`` shows for ``pid`` (Ray workers rewrite it to ``ray::<actor>``)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass(frozen=True)
class StackRoles:
    """How to tell the stack's hops apart: its application and its model deployments."""

    app: str
    model_deployments: frozenset[str]  # every deployment of the app that hosts models


def stack_hops(root: int, exclude: int, roles: StackRoles, deployment: str) -> dict[str, list[int]]:
    """The stack's processes under ``root`` by hop, for a request to ``deployment``.

    proxy: ``ray::ProxyActor`` (and ``haproxy``); router: a replica of the app that is
    not a model deployment (the ingress); replica: ``deployment``'s replicas; model: their
    descendants (Triton's stubs); other Ray: the rest of the tree.
    """
    children = _children()
    hops: dict[str, list[int]] = {hop: [] for hop in STACK_HOPS}
    prefix = f"ray::ServeReplica:{roles.app}:"
    tree = process_tree(root, exclude, children)
    stubs: set[int] = set()
    for pid in tree:
        title = proctitle(pid)
        name = title.split()[0] if title else ""
        if name.startswith("ray::ProxyActor") or Path(name).name == "haproxy":
            hops["proxy"].append(pid)
        elif name.startswith(prefix):
            # "ray::ServeReplica:<app>:<deployment>", plus ".<method>" while it runs a task
            dep = name[len(prefix) :].partition(".")[0]
            if dep == deployment:
                hops["replica"].append(pid)
                stubs.update(process_tree(pid, pid, children))
            elif dep not in roles.model_deployments:
                hops["router"].append(pid)
    claimed = {pid for pids in hops.values() for pid in pids} | stubs
    hops["model"] = sorted(stubs)
    hops["other Ray"] = [pid for pid in tree if pid not in claimed]
    return hops


def standalone_hops(server_pid: int) -> dict[str, list[int]]:
    """``tritonserver`` itself and its python-backend stubs."""
    tree = process_tree(server_pid, -1)
    return {"tritonserver": [server_pid], "model": [p for p in tree if p != server_pid]}


class HopProbe:
    """CPU seconds per hop between ``start()`` and ``stop()``; the total is every process
    of every hop (for the stack: every Ray/Serve process, raylet and GCS included)."""

    def __init__(self, hops: Mapping[str, Sequence[int]]) -> None:
        self.hops = {hop: list(pids) for hop, pids in hops.items()}
        self._pids = [pid for pids in self.hops.values() for pid in pids]
        self._start: CpuSnapshot = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._start = cpu_snapshot(self._pids)

    def stop(self) -> dict[str, float]:
        end = cpu_snapshot(self._pids)
        self.seconds = {hop: cpu_seconds(self._start, end, pids) for hop, pids in self.hops.items()}
        self.seconds[TOTAL] = sum(self.seconds.values())
        return self.seconds
