"""One engine load at a time per physical GPU, across replicas and processes of a node.

vLLM sizes its KV cache by profiling: every byte allocated on the device after it
started counts as its own, so a co-tenant that loads at the same time shrinks the
newcomer's cache or fails its free-memory check (upstream's CI loads two vLLM models
one after the other for this reason). TensorRT-LLM sizes its cache from the memory
free after its engine loaded, which a concurrent load also changes. So a replica of a
deployment that uses GPU memory (it declares ``gpu_memory``) holds an exclusive
``flock`` per GPU it sees from the start of a model load until the load returns: the
vLLM backend answers only when the engine is READY (cache allocated), TensorRT-LLM
once its executor allocated the cache.

The lock file is keyed by GPU UUID (``nvidia-smi``), so two processes that see one GPU
under different ``CUDA_VISIBLE_DEVICES`` indices still meet; without a driver (CPU
tests, Ray's logical GPUs) the key is the ``CUDA_VISIBLE_DEVICES`` value Ray assigned.
The kernel releases a flock when its holder dies, so a killed replica never wedges
the GPU. Several GPUs (tensor parallelism) are locked in sorted order: no deadlock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from app.config import AppConfig
from app.triton.errors import UnavailableError

__all__ = [
    "LOCK_DIR_ENV",
    "LOCK_TIMEOUT_S",
    "gpu_keys",
    "gpu_load_lock",
    "load_lock_keys",
    "lock_directory",
]

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "TRITON_SERVE_GPU_LOCK_DIR"
# A load that waits longer is stuck behind a hung one; failing it shows the reason.
LOCK_TIMEOUT_S = 1800.0
_POLL_S = 0.1
_LOG_EVERY_S = 30.0


def lock_directory(env: Mapping[str, str] = os.environ) -> Path:
    """Host-wide (every container of a pod shares /dev/shm only within the pod; each
    Ray worker pod is one node, which is the scope that matters)."""
    configured = env.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path("/tmp")) / "triton-serve-gpu-locks"


def _gpu_uuids() -> dict[str, str]:
    """nvidia-smi index -> UUID; empty without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(",", 1) for line in out.splitlines() if "," in line)
    return {index.strip(): uuid.strip() for index, uuid in pairs}


def gpu_keys(
    env: Mapping[str, str] = os.environ, uuids: Mapping[str, str] | None = None
) -> list[str]:
    """Lock keys of the GPUs this process sees (``CUDA_VISIBLE_DEVICES``), sorted.

    Indices map to UUIDs through nvidia-smi (PCI order, which CUDA's default order
    equals on identical GPUs); UUIDs stay; without a driver an index is a logical GPU.
    """
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return []
    known = _gpu_uuids() if uuids is None else uuids
    keys = set()
    for value in visible:
        if value.startswith(("GPU-", "MIG-")):
            keys.add(value)
        elif value in known:
            keys.add(known[value])
        else:
            keys.add(f"logical-{value}")
    return sorted(keys)


def load_lock_keys(cfg: AppConfig, deployment: str) -> list[str]:
    """The GPUs whose load lock a replica of ``deployment`` takes: those it sees when
    it declares ``gpu_memory`` and a GPU share; none otherwise."""
    dep = next(d for d in cfg.deployments if d.name == deployment)
    if dep.gpu_memory is None or dep.num_gpus <= 0:
        return []
    return gpu_keys()


@contextlib.contextmanager
def gpu_load_lock(
    keys: list[str],
    what: str,
    *,
    timeout_s: float = LOCK_TIMEOUT_S,
    directory: Path | None = None,
) -> Iterator[None]:
    """Hold every GPU's load lock (in ``keys`` order) for the body; ``what`` names
    the load in logs and in the lock file. Raises ``UnavailableError`` on timeout."""
    if not keys:
        yield
        return
    root = directory if directory is not None else lock_directory()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        deadline = time.monotonic() + timeout_s
        for key in sorted(keys):
            fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            held.callback(os.close, fd)
            _acquire(fd, key, what, deadline, timeout_s)
            # Who holds it, for whoever waits (and for a person reading the file).
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
            held.callback(fcntl.flock, fd, fcntl.LOCK_UN)
        yield


def _acquire(fd: int, key: str, what: str, deadline: float, timeout_s: float) -> None:
    waited_since = time.monotonic()
    next_log = waited_since
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if time.monotonic() - waited_since > _POLL_S:
                log.info("%s: GPU %s load lock taken after %.1f s", what, key, _since(waited_since))
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now >= deadline:
            raise UnavailableError(
                f"{what}: GPU {key} is still loading another engine ({_holder(fd)}) after "
                f"{timeout_s:.0f} s; loads on one GPU run one at a time"
            )
        if now >= next_log:
            log.info("%s: waiting for GPU %s, loading: %s", what, key, _holder(fd))
            next_log = now + _LOG_EVERY_S
        time.sleep(_POLL_S)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
    return "unknown"


def _since(start: float) -> float:
    return time.monotonic() - start
