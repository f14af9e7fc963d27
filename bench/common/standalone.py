"""Start the standalone ``tritonserver`` shipped in the nvidia-pytriton wheel.

The benchmarks' reference point next to the in-process engine and the stack: same
Triton build, same model repository, but a separate server process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from app.triton.server import interpreter_library_dir
from bench.common.net import free_port, http_get

__all__ = ["StandaloneTriton", "wheel_paths"]

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_LOG_TAIL_CHARS = 4000
_SHM_DIR = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1


def wheel_paths() -> dict[str, Path]:
    """Locate the Triton build inside the installed pytriton wheel (no hardcoded venv)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed; it ships the tritonserver binary")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    server_root = pkg / "tritonserver"
    py_tag = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {
        "tritonserver": server_root / "bin" / "tritonserver",
        "libs": pkg.parent / "nvidia_pytriton.libs",
        "python_backend": server_root / "backends" / "python",
        "stub": server_root / "python_backend_stubs" / py_tag / "triton_python_backend_stub",
    }
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"pytriton wheel is missing expected files: {missing}")
    return paths


def _die_with_parent() -> Callable[[], None] | None:
    """preexec hook: SIGTERM the server if this process dies without running __exit__.

    Linux ties the signal to the thread that started the server, so start it from a
    thread that outlives it (normally the main thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def _kill_group(pgid: int, timeout_s: float = 2.0) -> None:
    """SIGKILL stubs left in the server's process group and wait until init reaped them."""
    deadline = time.monotonic() + timeout_s
    try:
        os.killpg(pgid, signal.SIGKILL)
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # raises ProcessLookupError once the group is gone
            time.sleep(0.02)
    except (ProcessLookupError, PermissionError):
        return


class StandaloneTriton:
    """Context manager running ``tritonserver`` in explicit model-control mode.

    The python backend only works when its files are *symlinked* into one backend
    directory (copies break stub discovery), so a temporary one is built per server.
    ``exit_timeout_s`` bounds Triton's own graceful shutdown; it must stay below the
    15 s SIGKILL deadline, because idle client keep-alive connections hold shutdown
    for the whole timeout. ``extra_args`` are appended to the command line; a model
    in ``models`` that fails to load needs
    ``["--exit-on-error=false", "--strict-readiness=false"]`` for the server to come up.
    """

    def __init__(
        self,
        model_repository: Path,
        models: Sequence[str],
        http_port: int | None = None,
        grpc_port: int | None = None,
        *,
        exit_timeout_s: int = 5,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models)
        self.http_port = http_port if http_port is not None else free_port()
        self.grpc_port = grpc_port if grpc_port is not None else free_port()
        self.metrics_port = free_port()
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        # Unique per server so parallel servers never share python-backend shm regions.
        self.shm_prefix = f"standalone_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def http_url(self) -> str:
        """``host:port`` form, as tritonclient.http expects."""
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` form, as tritonclient.grpc expects."""
        return f"localhost:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        """Server process id while running (its python stubs share its process group)."""
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> StandaloneTriton:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _build_backend_dir(root: Path, paths: dict[str, Path]) -> Path:
        """Symlink the python backend pieces; Triton looks for the stub next to the .so."""
        backends = root / "backends"
        py_dir = backends / "python"
        py_dir.mkdir(parents=True)
        src = paths["python_backend"]
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            (py_dir / name).symlink_to(src / name)
        (py_dir / "triton_python_backend_stub").symlink_to(paths["stub"])
        return backends

    def _command(self, paths: dict[str, Path], backends: Path) -> list[str]:
        """Server command line: explicit mode, only the requested models loaded."""
        cmd = [
            str(paths["tritonserver"]),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false",
            "--log-info=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        cmd += [f"--load-model={name}" for name in self.models]
        return cmd + self.extra_args

    @staticmethod
    def _env(paths: dict[str, Path]) -> dict[str, str]:
        """Bundled libs on LD_LIBRARY_PATH; this interpreter's bin first so model.py finds numpy."""
        env = dict(os.environ)
        libs = str(paths["libs"])
        # As for the in-process engine: the stub must link this interpreter's libpython.
        interpreter_lib = interpreter_library_dir() or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libs, interpreter_lib, env.get("LD_LIBRARY_PATH", "")) if p
        )
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
        return env

    def start(self) -> None:
        """Launch the server and block until it reports ready."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        paths = wheel_paths()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="standalone_triton_")
        root = Path(self._tmpdir.name)
        backends = self._build_backend_dir(root, paths)
        self._log_path = root / "server.log"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self._command(paths, backends),
                env=self._env(paths),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, so stop() can reap the stubs
                preexec_fn=_die_with_parent(),
            )
        self._wait_ready()

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """Last part of the server's combined stdout/stderr, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()
        return data[-chars:].decode("utf-8", errors="replace")

    def _wait_ready(self) -> None:
        """Poll ``/v2/health/ready``; fail fast with the log tail if the process exits."""
        assert self._proc is not None
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {code} before ready:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                if http_get(url, timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(
            f"tritonserver not ready after {_READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, wait up to 15 s, then SIGKILL; reap stubs and leftover shm regions."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            _kill_group(proc.pid)
            # A server that hit its exit timeout (or SIGKILL) leaves its shm regions behind.
            for region in _SHM_DIR.glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    region.unlink()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
