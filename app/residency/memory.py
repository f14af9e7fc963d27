"""Measuring what a model load added: resident memory on CPU, device memory on GPU.

On CPU the size of a python-backend model is the resident set (RSS) of its stub
processes plus what the replica's own process grew by during the load (backends
that run in-process). On GPU it is the device memory in use after the load minus
before it (NVML through ``libnvidia-ml.so.1``); loads on one GPU are serialized
(``app.placement.load_lock``), so co-tenants' own loads do not skew it. A size
declared in the model's ``config.pbtxt`` (parameter ``declared_memory_bytes``) is
used only where nothing can be measured, and is labelled so.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.triton.stubs import StubProcess, model_of_instance

__all__ = [
    "DECLARED_PARAMETER",
    "GpuMeter",
    "Measurement",
    "declared_bytes",
    "process_rss",
    "stub_rss",
]

log = logging.getLogger(__name__)

DECLARED_PARAMETER = "declared_memory_bytes"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_DECLARED = re.compile(
    r'key\s*:\s*"' + DECLARED_PARAMETER + r'"\s*value\s*:?\s*\{\s*string_value\s*:\s*"(\d+)"'
)


@dataclass(frozen=True)
class Measurement:
    size: int
    source: str  # "measured (rss)", "measured (gpu)", "declared"
    own_growth: int = 0  # the replica process's part (kept when stubs are re-measured)


def process_rss(pid: int | None = None) -> int:
    """Resident bytes of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid or 'self'}/statm").read_text().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def stub_rss(model: str, models: tuple[str, ...], stubs: list[StubProcess]) -> int:
    """RSS of the stubs of ``model`` (instances named after it) among ``stubs``."""
    return sum(process_rss(s.pid) for s in stubs if model_of_instance(s.instance, models) == model)


def declared_bytes(repository: str, model: str) -> int | None:
    """The model's declared size, if its ``config.pbtxt`` in a local repository has one."""
    try:
        text = (Path(repository) / model / "config.pbtxt").read_text()
    except OSError:
        return None
    match = _DECLARED.search(text)
    return int(match.group(1)) if match else None


class _NvmlMemory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


class GpuMeter:
    """Device memory in use on the replica's GPUs (``CUDA_VISIBLE_DEVICES``), or
    ``available`` False when NVML cannot be loaded."""

    def __init__(self) -> None:
        self.available = False
        self._handles: list[ctypes.c_void_p] = []
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                return
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0")
            for ident in [v.strip() for v in visible.split(",") if v.strip()]:
                handle = ctypes.c_void_p()
                if ident.isdigit():
                    rc = lib.nvmlDeviceGetHandleByIndex_v2(int(ident), ctypes.byref(handle))
                else:
                    rc = lib.nvmlDeviceGetHandleByUUID(ident.encode(), ctypes.byref(handle))
                if rc == 0:
                    self._handles.append(handle)
            self._lib = lib
            self.available = bool(self._handles)
        except OSError:
            return

    def used(self) -> int:
        total = 0
        for handle in self._handles:
            info = _NvmlMemory()
            if self._lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) == 0:
                total += int(info.used)
        return total
