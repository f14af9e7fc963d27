"""The in-process Triton server: lifecycle and model control.

Control calls (``start``, ``load``, ``unload``...) block the calling thread,
some for seconds; from an event loop run them with ``asyncio.to_thread``.
Inference (``Model.async_infer``) never blocks.

Model control is serialized per server, and no control call starts while an earlier
model's teardown is still running: Triton destroys unloaded models on detached
threads, and a teardown that overlaps another load or unload can crash the process
(``TritonModelInstance`` destructor racing the shared rate limiter; docs/benchmarks.md, "Measured
behaviour of Triton and Serve", says where and how often). "Finished" is read from
what Triton does last: the index leaves UNLOADING only after the model object is
deleted, and a python-backend model's stub processes exit when its instances are.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import sys
import sysconfig
import threading
import time
import weakref
from ctypes import byref, c_bool, c_char_p, c_uint32, c_void_p
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from app.triton._capi import PARAMETER_STRING, CApi, load_capi
from app.triton.errors import (
    InvalidArgumentError,
    NotFoundError,
    TritonError,
    UnavailableError,
)
from app.triton.inference import (
    AsyncResponseIterator,
    InferenceRequest,
    InferenceResponse,
    all_dispatchers,
    infer_once,
)
from app.triton.install import TritonInstall, locate_triton
from app.triton.model_info import (
    ModelConfig,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
)
from app.triton.options import Options
from app.triton.process_tree import Proc, descendants, end_orphans, end_processes, mark_owner
from app.triton.stubs import StubProcess, is_running, model_of_instance, running_stubs

__all__ = [
    "Model",
    "Server",
    "interpreter_library_dir",
    "remove_orphaned_shm",
    "stop_all_servers",
]

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
_SERVER_SEQ = itertools.count()
_LIVE: weakref.WeakSet[Server] = weakref.WeakSet()
_HOOKS_LOCK = threading.Lock()
_hooks_installed = False
_TXN_DECOUPLED = 2
_IN_TRANSITION = frozenset({"LOADING", "UNLOADING"})


class Server:
    """One Triton server inside this process.

    >>> server = Server(Options(model_repository="model_repository")).start()
    >>> server.load("echo")
    """

    def __init__(self, options: Options | None = None, **kwargs: Any) -> None:
        self.options = options if options is not None else Options(**kwargs)
        self.install: TritonInstall = locate_triton(self.options.triton_home)
        self._capi: CApi | None = None
        self._server: int | None = None
        self._lock = threading.Lock()
        # One model-control call at a time; reentrant so a control call may poll.
        self._control = threading.RLock()
        # Stubs of a replaced model version, until they exit (a reload's old instances).
        self._retiring: set[StubProcess] = set()
        self._stopped = False
        # Two servers in one host must not share the python backend's shm names.
        self.shm_prefix = f"tsrv{os.getpid()}x{next(_SERVER_SEQ)}_"

    # ---- lifecycle ----

    def start(self, *, wait_until_ready: bool = True, timeout: float | None = None) -> Server:
        """Create the server; with ``wait_until_ready``, wait until it reports ready."""
        with self._lock:
            if self._server is not None:
                return self
            if self._stopped:
                raise UnavailableError("a stopped server cannot be restarted; create a new one")
            self._capi = capi = load_capi(self.install)
            _prepare_environment(self.install)
            remove_orphaned_shm()
            # Stubs and their children name this process as owner; those of owners
            # that died (a killed replica) hold GPU memory a new one needs.
            mark_owner()
            end_orphans()
            opts = self._build_options(capi)
            server = c_void_p()
            try:
                capi.check(capi.lib.TRITONSERVER_ServerNew(byref(server), opts))
            finally:
                capi.check(capi.lib.TRITONSERVER_ServerOptionsDelete(opts))
            self._server = server.value
            _LIVE.add(self)
            _install_exit_hooks()
        log.info("%s, C API %s", self.install.describe(), capi.api_version)
        if wait_until_ready:
            self._wait_ready(timeout if timeout is not None else self.options.startup_timeout_s)
        return self

    def stop(self, *, exit_timeout_s: int | None = None) -> None:
        """Stop Triton, waiting up to ``exit_timeout_s`` (default: the option's) for
        requests in flight. Idempotent."""
        with self._lock:
            if self._server is None or self._capi is None:
                self._stopped = True
                return
            server, capi = self._server, self._capi
            self._server = None
            self._stopped = True
        _LIVE.discard(self)
        # Read before the stop: once a stub exits its children are reparented.
        stub_trees = self._stub_trees()
        try:
            if exit_timeout_s is not None:
                capi.check(capi.lib.TRITONSERVER_ServerSetExitTimeout(server, exit_timeout_s))
            capi.check(capi.lib.TRITONSERVER_ServerStop(server))
        except Exception as exc:  # still delete: a stop error must not leak the server
            log.warning("Triton stop reported: %s", exc)
        finally:
            capi.check(capi.lib.TRITONSERVER_ServerDelete(server))
            stopped = UnavailableError("the Triton server stopped")
            for dispatcher in all_dispatchers():
                loop = dispatcher.loop_ref()
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(dispatcher.fail_server, self, stopped)
            _remove_shm(self.shm_prefix)
            # e.g. vLLM's executor workers, when the stub exited without ending them.
            left = end_processes(stub_trees)
            if left:
                log.warning("ended %d stub processes left after Triton stopped", len(left))

    def _stub_trees(self) -> list[Proc]:
        """This server's stubs and every process below them."""
        stubs = self.stub_processes()
        return [Proc(s.pid, s.started) for s in stubs] + descendants(s.pid for s in stubs)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        return self._server is not None

    def handle(self) -> int:
        """Address of the ``TRITONSERVER_Server`` (raises if not running)."""
        server = self._server
        if server is None:
            raise UnavailableError("the Triton server is not running")
        return server

    @property
    def capi(self) -> CApi:
        if self._capi is None or self._server is None:
            raise UnavailableError("the Triton server is not running")
        return self._capi

    # ---- health and metadata ----

    def live(self) -> bool:
        return self._flag("TRITONSERVER_ServerIsLive")

    def ready(self) -> bool:
        return self._flag("TRITONSERVER_ServerIsReady")

    def metadata(self) -> ServerMetadata:
        capi, message = self.capi, c_void_p()
        capi.check(capi.lib.TRITONSERVER_ServerMetadata(self.handle(), byref(message)))
        return ServerMetadata.model_validate(capi.message_json(message))

    def metrics(self) -> str:
        """Prometheus text of Triton's ``nv_*`` metrics."""
        return self.capi.metrics_text(self.handle())

    # ---- model control ----

    def model(self, name: str, version: int = -1) -> Model:
        return Model(self, name, version)

    def repository_index(self, *, ready_only: bool = False) -> list[ModelIndexEntry]:
        capi, message = self.capi, c_void_p()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelIndex(
                self.handle(), 1 if ready_only else 0, byref(message)
            )
        )
        return [ModelIndexEntry.model_validate(item) for item in capi.message_json(message)]

    def load(
        self,
        name: str,
        *,
        config: str | dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Model:
        """Load (or reload) ``name``; blocks until loaded and raises Triton's reason if not.

        ``config`` overrides ``config.pbtxt`` (JSON); ``files`` maps ``file:<path>``
        parameter names to content, which Triton writes into a temporary model
        directory. Callers exposing this to clients must gate ``files``.
        """
        if files:
            bad = [f for f in files if not f.startswith("file:")]
            if bad:
                raise InvalidArgumentError(f"file parameter '{bad[0]}' must start with 'file:'")
        with self._control:
            self._wait_quiescent()
            before = self.stub_processes()
            try:
                self._load(name, config, files)
            finally:
                self._retire_replaced(before)
        return self.model(name)

    def _load(
        self, name: str, config: str | dict[str, Any] | None, files: dict[str, bytes] | None
    ) -> None:
        capi, server = self.capi, self.handle()
        encoded = name.encode()
        if config is None and not files:
            capi.check(capi.lib.TRITONSERVER_ServerLoadModel(server, encoded))
            return
        params: list[int] = []
        keep: list[bytes] = []
        try:
            if config is not None:
                text = config if isinstance(config, str) else json.dumps(config)
                value = text.encode()
                keep.append(value)
                params.append(
                    capi.lib.TRITONSERVER_ParameterNew(b"config", PARAMETER_STRING, c_char_p(value))
                )
            for file_name, content in (files or {}).items():
                params.append(
                    capi.lib.TRITONSERVER_ParameterBytesNew(
                        file_name.encode(), content, len(content)
                    )
                )
            array = (c_void_p * len(params))(*params)
            capi.check(
                capi.lib.TRITONSERVER_ServerLoadModelWithParameters(
                    server, encoded, array, len(params)
                )
            )
        finally:
            for param in params:
                capi.lib.TRITONSERVER_ParameterDelete(param)

    def unload(
        self,
        name: str,
        *,
        unload_dependents: bool = False,
        wait_until_unloaded: bool = False,
        timeout: float = 60.0,
    ) -> None:
        """Unload ``name``; Triton tears it down in the background (after its requests in
        flight) unless ``wait_until_unloaded``, which returns once the model (and, with
        ``unload_dependents``, the models unloaded with it) is destroyed and its stub
        processes have exited."""
        with self._control:
            self._wait_quiescent()
            capi, server = self.capi, self.handle()
            fn = (
                capi.lib.TRITONSERVER_ServerUnloadModelAndDependents
                if unload_dependents
                else capi.lib.TRITONSERVER_ServerUnloadModel
            )
            capi.check(fn(server, name.encode()))
            if wait_until_unloaded:
                self._wait_quiescent(timeout)

    def teardowns_in_progress(self) -> list[str]:
        """Models Triton is still loading or destroying (empty when control is quiescent)."""
        index = self.repository_index()
        busy = {e.name for e in index if e.state in _IN_TRANSITION}
        ready = {e.name for e in index if e.ready}
        names = tuple({e.name for e in index})
        for stub in self.retiring_stubs():
            busy.add(model_of_instance(stub.instance, names) or stub.instance)
        for stub in self.stub_processes():
            model = model_of_instance(stub.instance, names)
            if model is not None and model not in ready:
                busy.add(model)
        return sorted(busy)

    def _wait_quiescent(self, timeout: float | None = None) -> None:
        limit = self.options.teardown_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.005
        while busy := self.teardowns_in_progress():
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"model teardown still running after {limit} s: {', '.join(busy)} "
                    "(requests in flight hold a model until they finish)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _retire_replaced(self, before: list[StubProcess]) -> None:
        """A reload starts new stubs and destroys the old version in the background,
        where the index cannot show it: remember the old stubs until they exit."""
        names = tuple({e.name for e in self.repository_index()})
        old = {s for s in before}
        renewed = {
            model_of_instance(s.instance, names) for s in self.stub_processes() if s not in old
        }
        renewed.discard(None)
        self._retiring |= {s for s in before if model_of_instance(s.instance, names) in renewed}

    def poll_repository(self) -> None:
        with self._control:
            self._wait_quiescent()
            capi = self.capi
            capi.check(capi.lib.TRITONSERVER_ServerPollModelRepository(self.handle()))

    def statistics(self, name: str = "", version: int = -1) -> list[ModelStatistics]:
        """Per-model statistics; an empty name means every model."""
        capi, message = self.capi, c_void_p()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelStatistics(
                self.handle(), name.encode(), version, byref(message)
            )
        )
        stats = capi.message_json(message).get("model_stats", [])
        return [ModelStatistics.model_validate(item) for item in stats]

    # ---- python-backend stubs ----

    def stub_processes(self) -> list[StubProcess]:
        """This server's running python-backend stub processes."""
        return running_stubs(self.shm_prefix)

    def retiring_stubs(self) -> set[StubProcess]:
        """Stubs of versions a reload replaced, still running while Triton destroys
        them in the background: they exit on their own, which is no death."""
        with self._control:
            self._retiring = {stub for stub in self._retiring if is_running(stub)}
            return set(self._retiring)

    def fail_requests(self, model_name: str, error: TritonError) -> None:
        """End the open requests of ``model_name`` with ``error``, from any thread;
        for requests Triton will never answer (their stub process died)."""
        for dispatcher in all_dispatchers():
            loop = dispatcher.loop_ref()
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(dispatcher.fail_model, self, model_name, error)

    # ---- internals ----

    def _flag(self, fn_name: str) -> bool:
        capi, value = self.capi, c_bool()
        capi.check(getattr(capi.lib, fn_name)(self.handle(), byref(value)))
        return bool(value.value)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                not_ready = [e for e in self.repository_index() if not e.ready]
                raise UnavailableError(
                    f"Triton not ready after {timeout} s; models not ready: "
                    + ", ".join(f"{e.name} ({e.state}: {e.reason})" for e in not_ready)
                )
            time.sleep(0.02)

    def _build_options(self, capi: CApi) -> int:
        opts_ptr = c_void_p()
        lib, o = capi.lib, self.options
        capi.check(lib.TRITONSERVER_ServerOptionsNew(byref(opts_ptr)))
        opts = opts_ptr.value
        backend_dir = o.backend_directory or self.install.backend_dir
        configs = {k: dict(v) for k, v in o.backend_configs.items()}
        configs.setdefault("python", {}).setdefault("shm-region-prefix-name", self.shm_prefix)
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("TRITONSERVER_ServerOptionsSetServerId", (o.server_id.encode(),)),
            ("TRITONSERVER_ServerOptionsSetModelControlMode", (int(o.model_control_mode),)),
            ("TRITONSERVER_ServerOptionsSetStrictModelConfig", (o.strict_model_config,)),
            ("TRITONSERVER_ServerOptionsSetStrictReadiness", (o.strict_readiness,)),
            ("TRITONSERVER_ServerOptionsSetExitOnError", (o.exit_on_error,)),
            ("TRITONSERVER_ServerOptionsSetExitTimeout", (o.exit_timeout_s,)),
            ("TRITONSERVER_ServerOptionsSetLogInfo", (o.log_info,)),
            ("TRITONSERVER_ServerOptionsSetLogWarn", (o.log_warn,)),
            ("TRITONSERVER_ServerOptionsSetLogError", (o.log_error,)),
            ("TRITONSERVER_ServerOptionsSetLogVerbose", (o.log_verbose,)),
            ("TRITONSERVER_ServerOptionsSetMetrics", (o.metrics,)),
            ("TRITONSERVER_ServerOptionsSetCpuMetrics", (o.cpu_metrics and o.metrics,)),
            ("TRITONSERVER_ServerOptionsSetGpuMetrics", (o.gpu_metrics and o.metrics,)),
            ("TRITONSERVER_ServerOptionsSetBackendDirectory", (str(backend_dir).encode(),)),
            ("TRITONSERVER_ServerOptionsSetModelLoadRetryCount", (o.model_load_retry_count,)),
        ]
        calls += [
            ("TRITONSERVER_ServerOptionsSetModelRepositoryPath", (str(p).encode(),))
            for p in o.model_repository
        ]
        calls += [
            ("TRITONSERVER_ServerOptionsSetStartupModel", (m.encode(),)) for m in o.startup_models
        ]
        if o.model_load_thread_count is not None:
            calls.append(
                ("TRITONSERVER_ServerOptionsSetModelLoadThreadCount", (o.model_load_thread_count,))
            )
        for backend, settings in configs.items():
            for key, value in settings.items():
                calls.append(
                    (
                        "TRITONSERVER_ServerOptionsSetBackendConfig",
                        (backend.encode(), key.encode(), str(value).encode()),
                    )
                )
        try:
            for fn_name, args in calls:
                capi.check(getattr(lib, fn_name)(opts, *args))
        except Exception:
            lib.TRITONSERVER_ServerOptionsDelete(opts)
            raise
        return int(opts or 0)


class Model:
    """A model (at a version; -1 is the policy's latest) of a running server."""

    def __init__(self, server: Server, name: str, version: int = -1) -> None:
        self.server = server
        self.name = name
        self.version = version

    def __repr__(self) -> str:
        return f"Model({self.name!r}, version={self.version})"

    def ready(self) -> bool:
        capi, value = self.server.capi, c_bool()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelIsReady(
                self.server.handle(), self.name.encode(), self.version, byref(value)
            )
        )
        return bool(value.value)

    def metadata(self) -> ModelMetadata:
        capi, message = self.server.capi, c_void_p()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelMetadata(
                self.server.handle(), self.name.encode(), self.version, byref(message)
            )
        )
        return ModelMetadata.model_validate(capi.message_json(message))

    def config(self) -> ModelConfig:
        capi, message = self.server.capi, c_void_p()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelConfig(
                self.server.handle(), self.name.encode(), self.version, 1, byref(message)
            )
        )
        return ModelConfig.model_validate(capi.message_json(message))

    def statistics(self) -> ModelStatistics:
        found = self.server.statistics(self.name, self.version)
        if not found:
            raise NotFoundError(f"no statistics for model '{self.name}'")
        return found[0]

    @property
    def decoupled(self) -> bool:
        capi, flags, voidp = self.server.capi, c_uint32(), c_void_p()
        capi.check(
            capi.lib.TRITONSERVER_ServerModelTransactionProperties(
                self.server.handle(), self.name.encode(), self.version, byref(flags), byref(voidp)
            )
        )
        return bool(flags.value & _TXN_DECOUPLED)

    def async_infer(
        self, inputs: Any = None, *, raise_on_error: bool = True, **fields: Any
    ) -> AsyncResponseIterator:
        """Submit a request; iterate the result for its responses (several if decoupled)."""
        request = InferenceRequest(
            model_name=self.name, model_version=self.version, inputs=inputs or {}, **fields
        )
        return AsyncResponseIterator(self.server, request, raise_on_error=raise_on_error)

    async def infer(self, inputs: Any = None, **fields: Any) -> InferenceResponse:
        """Submit a request and await its response (the last one with outputs if decoupled)."""
        request = InferenceRequest(
            model_name=self.name, model_version=self.version, inputs=inputs or {}, **fields
        )
        return await infer_once(self.server, request)


def _prepare_environment(install: TritonInstall) -> None:
    """What the python backend's stub processes need: Triton's libraries and our interpreter."""
    lib_dirs = [str(d) for d in install.library_dirs]
    # The stub links "libpython3.x.so" by soname; without this it may find the
    # system's copy (another patch release) and then fail on the interpreter's own
    # extension modules (``_ssl``, ``_hashlib``) that need the matching one.
    interpreter_lib = interpreter_library_dir()
    if interpreter_lib is not None:
        lib_dirs.append(interpreter_lib)
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    os.environ["LD_LIBRARY_PATH"] = ":".join(lib_dirs + [p for p in current if p not in lib_dirs])
    bin_dir = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(":") if p]
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = ":".join([bin_dir, *[p for p in path if p != bin_dir]])


def interpreter_library_dir() -> str | None:
    """The running interpreter's shared-library directory, unless it is a system one."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or libdir.startswith(("/usr/lib", "/lib", "/usr/local/lib")):
        return None
    return str(libdir)


_SHM_OWNER = re.compile(r"^tsrv(\d+)x\d+_")


def remove_orphaned_shm() -> None:
    """Remove regions of servers whose process died without stopping (SIGKILL, OOM).
    ``start()`` does; a long-lived process may repeat it for processes that die later."""
    for region in SHM_DIR.glob("tsrv*"):
        match = _SHM_OWNER.match(region.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            with contextlib.suppress(OSError):
                region.unlink()


def _remove_shm(prefix: str) -> None:
    for leftover in SHM_DIR.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def stop_all_servers() -> None:
    """Stop every server of this process that is still running (exit paths)."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_all_servers()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    """Stop servers at exit: a process that exits with Triton running crashes and leaks."""
    global _hooks_installed
    with _HOOKS_LOCK:
        if _hooks_installed:
            return
        _hooks_installed = True
        atexit.register(stop_all_servers)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(
            signal.SIGTERM
        ) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
