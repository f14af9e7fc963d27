"""ctypes binding of the control-path part of ``tritonserver.h`` (C API 1.x, at least
``REQUIRED_API``, checked when the library is loaded).

Only what the engine calls is declared. The request hot path is in ``_shim.c``;
everything here runs rarely (create, load, metadata, statistics).
``ctypes.CDLL`` releases the GIL during each call, so a slow load does not stall
other Python threads.
"""

from __future__ import annotations

import ctypes
import json
import threading
from ctypes import POINTER, byref, c_bool, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64
from ctypes import c_uint as c_unsigned
from ctypes import c_void_p as ptr
from dataclasses import dataclass
from typing import Any

from app.triton import _shim
from app.triton.errors import TritonError, TritonNotFoundError, error_from_code
from app.triton.install import TritonInstall

__all__ = ["CApi", "load_capi"]

REQUIRED_API = (1, 34)

# name -> (restype, argtypes). Every function returns TRITONSERVER_Error* unless noted.
_ERR = ptr
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "TRITONSERVER_ApiVersion": (_ERR, [POINTER(c_uint32), POINTER(c_uint32)]),
    "TRITONSERVER_ErrorCode": (c_int, [ptr]),
    "TRITONSERVER_ErrorMessage": (c_char_p, [ptr]),
    "TRITONSERVER_ErrorDelete": (None, [ptr]),
    "TRITONSERVER_MessageSerializeToJson": (_ERR, [ptr, POINTER(ptr), POINTER(c_size_t)]),
    "TRITONSERVER_MessageDelete": (_ERR, [ptr]),
    "TRITONSERVER_MetricsFormatted": (_ERR, [ptr, c_int, POINTER(ptr), POINTER(c_size_t)]),
    "TRITONSERVER_MetricsDelete": (_ERR, [ptr]),
    "TRITONSERVER_ParameterNew": (ptr, [c_char_p, c_int, ptr]),
    "TRITONSERVER_ParameterBytesNew": (ptr, [c_char_p, ptr, c_uint64]),
    "TRITONSERVER_ParameterDelete": (None, [ptr]),
    "TRITONSERVER_ServerOptionsNew": (_ERR, [POINTER(ptr)]),
    "TRITONSERVER_ServerOptionsDelete": (_ERR, [ptr]),
    "TRITONSERVER_ServerOptionsSetServerId": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerOptionsSetModelRepositoryPath": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerOptionsSetModelControlMode": (_ERR, [ptr, c_int]),
    "TRITONSERVER_ServerOptionsSetStartupModel": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerOptionsSetStrictModelConfig": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetStrictReadiness": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetExitOnError": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetExitTimeout": (_ERR, [ptr, c_unsigned]),
    "TRITONSERVER_ServerOptionsSetLogInfo": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetLogWarn": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetLogError": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetLogVerbose": (_ERR, [ptr, c_int]),
    "TRITONSERVER_ServerOptionsSetMetrics": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetGpuMetrics": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetCpuMetrics": (_ERR, [ptr, c_bool]),
    "TRITONSERVER_ServerOptionsSetBackendDirectory": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerOptionsSetRepoAgentDirectory": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerOptionsSetBackendConfig": (_ERR, [ptr, c_char_p, c_char_p, c_char_p]),
    "TRITONSERVER_ServerOptionsSetModelLoadThreadCount": (_ERR, [ptr, c_unsigned]),
    "TRITONSERVER_ServerOptionsSetModelLoadRetryCount": (_ERR, [ptr, c_unsigned]),
    "TRITONSERVER_ServerOptionsSetPinnedMemoryPoolByteSize": (_ERR, [ptr, c_uint64]),
    "TRITONSERVER_ServerNew": (_ERR, [POINTER(ptr), ptr]),
    "TRITONSERVER_ServerDelete": (_ERR, [ptr]),
    "TRITONSERVER_ServerStop": (_ERR, [ptr]),
    "TRITONSERVER_ServerSetExitTimeout": (_ERR, [ptr, c_unsigned]),
    "TRITONSERVER_ServerPollModelRepository": (_ERR, [ptr]),
    "TRITONSERVER_ServerIsLive": (_ERR, [ptr, POINTER(c_bool)]),
    "TRITONSERVER_ServerIsReady": (_ERR, [ptr, POINTER(c_bool)]),
    "TRITONSERVER_ServerModelIsReady": (_ERR, [ptr, c_char_p, c_int64, POINTER(c_bool)]),
    "TRITONSERVER_ServerModelTransactionProperties": (
        _ERR,
        [ptr, c_char_p, c_int64, POINTER(c_uint32), POINTER(ptr)],
    ),
    "TRITONSERVER_ServerMetadata": (_ERR, [ptr, POINTER(ptr)]),
    "TRITONSERVER_ServerModelMetadata": (_ERR, [ptr, c_char_p, c_int64, POINTER(ptr)]),
    "TRITONSERVER_ServerModelStatistics": (_ERR, [ptr, c_char_p, c_int64, POINTER(ptr)]),
    "TRITONSERVER_ServerModelConfig": (_ERR, [ptr, c_char_p, c_int64, c_uint32, POINTER(ptr)]),
    "TRITONSERVER_ServerModelIndex": (_ERR, [ptr, c_uint32, POINTER(ptr)]),
    "TRITONSERVER_ServerLoadModel": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerLoadModelWithParameters": (_ERR, [ptr, c_char_p, POINTER(ptr), c_uint64]),
    "TRITONSERVER_ServerUnloadModel": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerUnloadModelAndDependents": (_ERR, [ptr, c_char_p]),
    "TRITONSERVER_ServerMetrics": (_ERR, [ptr, POINTER(ptr)]),
}

PARAMETER_STRING = 0
METRIC_PROMETHEUS = 0


@dataclass(frozen=True)
class ApiVersion:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class CApi:
    """The loaded library: typed functions plus helpers that raise ``TritonError``."""

    def __init__(self, install: TritonInstall, lib: ctypes.CDLL) -> None:
        self.install = install
        self.lib = lib
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        major, minor = c_uint32(), c_uint32()
        self.check(lib.TRITONSERVER_ApiVersion(byref(major), byref(minor)))
        self.api_version = ApiVersion(major.value, minor.value)

    def error(self, err: int) -> TritonError:
        """Convert and free a ``TRITONSERVER_Error*``."""
        code = int(self.lib.TRITONSERVER_ErrorCode(err))
        raw = self.lib.TRITONSERVER_ErrorMessage(err)
        self.lib.TRITONSERVER_ErrorDelete(err)
        return error_from_code(code, raw.decode("utf-8", "replace") if raw else "")

    def check(self, err: int | None) -> None:
        if err:
            raise self.error(err)

    def message_json(self, message: ptr) -> Any:
        """Serialize and free a ``TRITONSERVER_Message``."""
        base, size = ptr(), c_size_t()
        try:
            self.check(
                self.lib.TRITONSERVER_MessageSerializeToJson(message, byref(base), byref(size))
            )
            return json.loads(ctypes.string_at(base, size.value))
        finally:
            self.check(self.lib.TRITONSERVER_MessageDelete(message))

    def metrics_text(self, server: int) -> str:
        metrics = ptr()
        self.check(self.lib.TRITONSERVER_ServerMetrics(server, byref(metrics)))
        try:
            base, size = ptr(), c_size_t()
            self.check(
                self.lib.TRITONSERVER_MetricsFormatted(
                    metrics, METRIC_PROMETHEUS, byref(base), byref(size)
                )
            )
            return ctypes.string_at(base, size.value).decode("utf-8", "replace")
        finally:
            self.check(self.lib.TRITONSERVER_MetricsDelete(metrics))


_LOCK = threading.Lock()
_LOADED: dict[str, CApi] = {}


def load_capi(install: TritonInstall) -> CApi:
    """Open ``libtritonserver`` once per process and bind the shim to it."""
    key = str(install.library)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if _LOADED:
            other = next(iter(_LOADED))
            raise TritonNotFoundError(
                f"this process already uses {other}; one Triton library per process"
            )
        _preload(install)
        try:
            lib = ctypes.CDLL(str(install.library), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise TritonNotFoundError(f"cannot load {install.library}: {exc}") from exc
        capi = CApi(install, lib)
        if capi.api_version.major != REQUIRED_API[0] or capi.api_version.minor < REQUIRED_API[1]:
            raise TritonNotFoundError(
                f"{install.library} has C API {capi.api_version}; "
                f"this engine needs {REQUIRED_API[0]}.x with x >= {REQUIRED_API[1]}"
            )
        _shim.bind(lib._handle, error_from_code)
        _LOADED[key] = capi
        return capi


def _preload(install: TritonInstall) -> None:
    """Open the wheel's bundled libraries so ``libtritonserver``'s dependencies resolve.

    They depend on each other without a runpath, so keep opening until no more progress.
    """
    pending = list(install.preload)
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            return  # the real error surfaces when libtritonserver itself loads
        pending = failed
