"""Where a usable Triton comes from: an explicit home, the NGC image, or the pytriton wheel.

Looking is cheap and has no side effects; loading happens in ``_capi``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from app.triton.errors import TritonNotFoundError

__all__ = ["TritonInstall", "locate_triton"]

NGC_HOME = Path("/opt/tritonserver")
PY_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonInstall:
    """One Triton build on this machine.

    ``library_dirs`` must be visible to the python backend's stub processes
    (``LD_LIBRARY_PATH``); ``preload`` lists libraries to open before
    ``libtritonserver`` because the wheel's copies carry no usable runpath.
    """

    source: str  # "TRITON_HOME", "ngc" or "pytriton-wheel"
    home: Path
    library: Path
    backend_dir: Path
    library_dirs: tuple[Path, ...] = ()
    preload: tuple[Path, ...] = field(default=(), repr=False)
    tritonserver_bin: Path | None = None

    def describe(self) -> str:
        return f"Triton from {self.source}: {self.library}"


def locate_triton(triton_home: str | os.PathLike[str] | None = None) -> TritonInstall:
    """Find Triton: ``triton_home`` or ``$TRITON_HOME``, then ``/opt/tritonserver``, then the wheel.

    Raises ``TritonNotFoundError`` naming every place it looked.
    """
    looked: list[str] = []
    explicit = triton_home if triton_home is not None else os.environ.get("TRITON_HOME")
    if explicit:
        found = _from_home(Path(explicit), "TRITON_HOME", looked)
        if found is None:
            raise TritonNotFoundError(
                f"TRITON_HOME={explicit} holds no lib/libtritonserver.so (looked at: "
                + "; ".join(looked)
                + ")"
            )
        return found
    found = _from_home(NGC_HOME, "ngc", looked)
    if found is not None:
        return found
    found = _from_wheel(looked)
    if found is not None:
        return found
    raise TritonNotFoundError(
        "no libtritonserver found; set TRITON_HOME, run in an NGC tritonserver image, or "
        "`pip install nvidia-pytriton`. Looked at: " + "; ".join(looked)
    )


def _from_home(home: Path, source: str, looked: list[str]) -> TritonInstall | None:
    library = home / "lib" / "libtritonserver.so"
    looked.append(str(library))
    if not library.is_file():
        return None
    binary = home / "bin" / "tritonserver"
    return TritonInstall(
        source=source,
        home=home,
        library=library,
        backend_dir=home / "backends",
        library_dirs=(home / "lib",),
        tritonserver_bin=binary if binary.is_file() else None,
    )


def _from_wheel(looked: list[str]) -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        looked.append("the nvidia-pytriton wheel (not installed)")
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    libs = package.parent / "nvidia_pytriton.libs"
    candidates = sorted(libs.glob("libtritonserver*.so"))
    looked.append(str(libs / "libtritonserver-*.so"))
    if not candidates:
        return None
    home = package / "tritonserver"
    preload = tuple(
        p for p in sorted(libs.glob("*.so*")) if "libpython" not in p.name and p != candidates[0]
    )
    binary = home / "bin" / "tritonserver"
    return TritonInstall(
        source="pytriton-wheel",
        home=home,
        library=candidates[0],
        backend_dir=_wheel_backend_dir(home, looked),
        library_dirs=(libs,),
        preload=preload,
        tritonserver_bin=binary if binary.is_file() else None,
    )


_WHEEL_BACKENDS: Path | None = None


def _wheel_backend_dir(home: Path, looked: list[str]) -> Path:
    """A backend directory for the wheel's python backend, built once per process.

    The wheel keeps one stub per Python version apart from the backend; Triton
    wants them side by side. Symlinks, not copies: the stub is found through them.
    """
    global _WHEEL_BACKENDS
    if _WHEEL_BACKENDS is not None and _WHEEL_BACKENDS.is_dir():
        return _WHEEL_BACKENDS
    python_backend = home / "backends" / "python"
    stub = home / "python_backend_stubs" / PY_TAG / "triton_python_backend_stub"
    looked.append(str(stub))
    root = Path(tempfile.mkdtemp(prefix="triton-backends-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    target = root / "python"
    target.mkdir()
    for source in (
        python_backend / "libtriton_python.so",
        python_backend / "triton_python_backend_utils.py",
        stub,
    ):
        if source.exists():
            (target / source.name).symlink_to(source)
    _WHEEL_BACKENDS = root
    return root
