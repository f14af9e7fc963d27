"""Descendants of python-backend stubs: found through /proc, ended after Triton stops.

A stub may start processes of its own (vLLM's multiprocessing executor starts one
worker per GPU of a tensor-parallel model). If they outlive Triton they keep their GPU
memory, and the replacement replica fails vLLM's free-memory check. Two cases:

- Triton stopped by its owner: the stubs' trees are read just before the stop, and
  whatever of them is still running afterwards is ended (SIGTERM, then SIGKILL).
- The owner killed (SIGKILL, OOM): nothing runs in it any more. Every process Triton
  starts inherits ``OWNER_ENV`` (the owner's pid and start time), so the next server
  started on the node, and every replica's report period, end processes whose owner
  is gone (``end_orphans``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "OWNER_ENV",
    "Proc",
    "descendants",
    "end_orphans",
    "end_processes",
    "is_alive",
    "mark_owner",
    "proc",
]

OWNER_ENV = "TRITON_SERVE_OWNER"
_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """A process named by pid and start time (clock ticks since boot): a reused pid
    is never mistaken for it."""

    pid: int
    started: int


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of ``pid``, None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def proc(pid: int) -> Proc | None:
    found = _stat(pid)
    return None if found is None else Proc(pid, found[2])


def is_alive(p: Proc) -> bool:
    """Running (a zombie is dead: it only waits for its parent to reap it)."""
    found = _stat(p.pid)
    return found is not None and found[0] != "Z" and found[2] == p.started


def _pids() -> list[int]:
    return [int(e.name) for e in _PROC.iterdir() if e.name.isdigit()]


def descendants(roots: Iterable[int]) -> list[Proc]:
    """Every live process below ``roots`` (not the roots themselves)."""
    children: dict[int, list[Proc]] = {}
    for pid in _pids():
        found = _stat(pid)
        if found is not None and found[0] != "Z":
            children.setdefault(found[1], []).append(Proc(pid, found[2]))
    out: list[Proc] = []
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), []):
            out.append(child)
            pending.append(child.pid)
    return out


def end_processes(procs: Iterable[Proc], grace_s: float = 3.0) -> list[Proc]:
    """SIGTERM the ones still running, SIGKILL those left after ``grace_s``; returns
    those that were running."""
    running = [p for p in procs if is_alive(p) and p.pid != os.getpid()]
    for p in running:
        with contextlib.suppress(OSError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(is_alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in running:
        if is_alive(p):
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGKILL)
    return running


def mark_owner() -> None:
    """Make processes started from now on (stubs, their children) name this process
    as their owner, in the environment they inherit."""
    me = proc(os.getpid())
    if me is not None:
        os.environ[OWNER_ENV] = f"{me.pid}:{me.started}"


def _owner_of(pid: int) -> Proc | None:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    prefix = f"{OWNER_ENV}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            owner_pid, _, started = item[len(prefix) :].partition(b":")
            with contextlib.suppress(ValueError):
                return Proc(int(owner_pid), int(started))
    return None


def end_orphans(grace_s: float = 3.0) -> list[Proc]:
    """End processes whose owner (``OWNER_ENV``) is no longer running; returns them."""
    uid = os.getuid()
    me = os.getpid()
    orphans = []
    for pid in _pids():
        if pid == me:
            continue
        try:
            if (_PROC / str(pid)).stat().st_uid != uid:
                continue
        except OSError:
            continue
        owner = _owner_of(pid)
        if owner is None or is_alive(owner):
            continue
        found = proc(pid)
        if found is not None:
            orphans.append(found)
    return end_processes(orphans, grace_s)
