"""Processes and shared memory as this machine shows them (`/proc`, `/dev/shm`): Serve
replicas, python-backend stubs (every node of a ``ray.cluster_utils.Cluster`` is a process
tree here) and the python backend's shared-memory regions."""

from __future__ import annotations

import os
import re
import signal
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


def title(pid: int) -> str:
    """The process's argv[0] (Ray workers carry their actor's title there); "" once gone."""
    return _cmdline(pid).split(b"\0", 1)[0].decode(errors="replace")


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``."""
    return sorted(p for p in _pids() if parent(p) == pid and alive(p))


def rss(pid: int) -> int | None:
    """Resident set size in bytes (None once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def stubs_mentioning(text: str) -> list[tuple[int, str]]:
    """Live python-backend stubs whose command line contains ``text`` (a server's shm
    prefix, a model name), with that command line."""
    found = []
    for pid in _pids():
        cmdline = _cmdline(pid)
        if STUB in cmdline.split(b"\0", 1)[0] and text.encode() in cmdline and alive(pid):
            found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def shm_files_with_prefix(prefix: str, since: float | None = None) -> list[str]:
    """``/dev/shm`` regions named ``<prefix>*``; with ``since``, only those created at or
    after that time (not leftovers of a reused pid)."""
    found = []
    for path in SHM_DIR.glob(f"{prefix}*"):
        try:
            if since is None or path.stat().st_ctime >= since:
                found.append(path.name)
        except OSError:
            continue
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
