"""What a fault test looks at on this machine: Serve replicas' and python-backend stubs'
processes (every node of a ``ray.cluster_utils.Cluster`` is a process tree here) and the
python backend's shared-memory files."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SHM_DIR = Path("/dev/shm")
STUB = b"triton_python_backend_stub"
# Server.shm_prefix is ``tsrv<pid>x<n>_``: the pid of the process that embeds Triton.
_OWNER = re.compile(rb"tsrv(\d+)x\d+_")


@dataclass(frozen=True)
class Stub:
    pid: int
    owner_pid: int  # the replica whose Triton started it
    instance: str  # Triton's instance name, e.g. "echo_0_0"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def alive(pid: int) -> bool:
    """Running (a zombie is not: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parent(pid: int) -> int | None:
    """The parent process of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def replica_pids(app: str, deployment: str) -> list[int]:
    """Worker processes of the Serve replicas of ``app``/``deployment`` (Ray titles
    them ``ray::ServeReplica:<app>:<deployment>``, with ``.method`` while busy)."""
    title = re.compile(rf"^ray::ServeReplica:{re.escape(app)}:{re.escape(deployment)}(\.|\s|$)")
    found = []
    for pid in _pids():
        argv0 = _cmdline(pid).split(b"\0", 1)[0].decode(errors="replace")
        if title.match(argv0) and alive(pid):
            found.append(pid)
    return sorted(found)


def stubs(owner_pids: list[int] | None = None) -> list[Stub]:
    """Live python-backend stubs, optionally only those of the given replicas."""
    found = []
    for pid in _pids():
        argv = _cmdline(pid).split(b"\0")
        if not argv or STUB not in argv[0] or not alive(pid):
            continue
        owner = next((_OWNER.search(a) for a in argv if _OWNER.search(a)), None)
        if owner is None:
            continue
        owner_pid = int(owner.group(1))
        if owner_pids is not None and owner_pid not in owner_pids:
            continue
        instance = argv[8].decode() if len(argv) > 8 else ""
        found.append(Stub(pid, owner_pid, instance))
    return found


def shm_files(owner_pids: list[int]) -> list[str]:
    """``/dev/shm`` regions named after the given replicas' servers."""
    return sorted(
        p.name
        for p in SHM_DIR.glob("tsrv*")
        if (m := _OWNER.match(p.name.encode())) and int(m.group(1)) in owner_pids
    )


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def wait_until(predicate: object, timeout: float, what: str, period: float = 0.5) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails naming ``what``."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(period)
    return time.monotonic() - started
