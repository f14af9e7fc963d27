"""The python backend's stub processes of a server, as the operating system sees them.

Triton does not restart a stub that died (SIGKILL, OOM): every later request to its
model fails with "Stub process '<instance>' is not healthy", and a decoupled request
in flight never completes, while the model still reports READY (docs/benchmarks.md, "Measured
behaviour of Triton and Serve", names the versions). So a server's owner watches its
stubs to find out (see ``ModelReplica``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StubProcess", "is_running", "model_of_instance", "running_stubs"]

_STUB = b"triton_python_backend_stub"
# Triton names instances "<model>_<group index>_<instance index>" ("<model>_<group
# index>" when the group has one instance) unless the config names the instance group,
# which then replaces "<model>_<group index>".
_INSTANCE_SUFFIX = re.compile(r"^_\d+(_\d+)?$")


@dataclass(frozen=True)
class StubProcess:
    """A running stub: ``pid`` and ``started`` (clock ticks since boot) together
    name it, so a reused pid is never mistaken for it."""

    pid: int
    started: int
    instance: str  # Triton's instance name, e.g. "echo_0_0"


def running_stubs(shm_prefix: str) -> list[StubProcess]:
    """Live (not zombie) stubs started by this process for the server with ``shm_prefix``."""
    me = os.getpid()
    needle = shm_prefix.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not argv[0].endswith(_STUB) or not any(needle in a for a in argv):
            continue
        # Fields after the command name: state, ppid, ... starttime is the 20th.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or int(fields[1]) != me:
            continue
        instance = argv[8].decode(errors="replace") if len(argv) > 8 else ""
        found.append(StubProcess(int(entry.name), int(fields[19]), instance))
    return found


def is_running(stub: StubProcess) -> bool:
    """Still running (a stub that died stays a zombie until Triton reaps it); cheap
    enough for every request: one small read."""
    try:
        stat = Path(f"/proc/{stub.pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == stub.started


def model_of_instance(instance: str, models: tuple[str, ...]) -> str | None:
    """The model of ``models`` an instance belongs to, if its name says so: the longest
    model name that prefixes it ("<model>_<group>_<index>", or "<model>_<group>" for a
    group of one instance)."""
    owners = [
        m
        for m in models
        if instance.startswith(m + "_") and _INSTANCE_SUFFIX.match(instance[len(m) :])
    ]
    return max(owners, key=len) if owners else None
