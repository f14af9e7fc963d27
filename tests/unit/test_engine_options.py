"""``Options`` validation and ``locate_triton`` (no Triton is started)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pydantic
import pytest

import app.triton.install as install
from app.triton import (
    ModelControlMode,
    Options,
    TritonError,
    TritonNotFoundError,
    locate_triton,
)

# ---- Options ----


def test_defaults(tmp_path: Path) -> None:
    options = Options(model_repository=tmp_path)
    assert options.model_repository == [tmp_path.resolve()]
    assert options.model_control_mode is ModelControlMode.EXPLICIT
    assert options.model_load_retry_count == 0  # the C API's own default retries forever
    assert options.strict_readiness and not options.exit_on_error
    assert options.triton_home is None


def test_repositories_one_or_many_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    options = Options(model_repository=["a", tmp_path / "b"])
    assert options.model_repository == [tmp_path / "a", tmp_path / "b"]
    assert all(p.is_absolute() for p in options.model_repository)
    assert Options(model_repository="a").model_repository == [tmp_path / "a"]


def test_missing_repository_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(pydantic.ValidationError, match="is not a directory") as info:
        Options(model_repository=missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ValueError, match="is not a directory"):  # a ValueError too
        Options(model_repository=[tmp_path, missing])


def test_repository_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "config.pbtxt"
    file.write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        Options(model_repository=file)


def test_repository_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_repository"):
        Options(model_repository=[])
    with pytest.raises(ValueError, match="model_repository"):
        Options()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exit_timeout_s", -1),
        ("log_verbose", -1),
        ("model_load_retry_count", -1),
        ("model_load_thread_count", 0),
        ("model_load_thread_count", -4),
        ("startup_timeout_s", 0),
        ("startup_timeout_s", -1.5),
    ],
)
def test_negative_values_are_rejected(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        Options(model_repository=tmp_path, **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exit_timeout_s", 0),
        ("log_verbose", 2),
        ("model_load_retry_count", 3),
        ("model_load_thread_count", 1),
        ("startup_timeout_s", 0.5),
    ],
)
def test_boundary_values_are_accepted(tmp_path: Path, field: str, value: float) -> None:
    assert getattr(Options(model_repository=tmp_path, **{field: value}), field) == value


@pytest.mark.parametrize(
    "configs",
    [
        {"": {"shm-default-byte-size": "1048576"}},
        {"python": {"": "1"}},
        {"python": {"shm-growth-byte-size": "1", "": "2"}},
    ],
)
def test_empty_backend_names_are_rejected(tmp_path: Path, configs: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="must be non-empty"):
        Options(model_repository=tmp_path, backend_configs=configs)


def test_backend_configs_accepted(tmp_path: Path) -> None:
    configs = {"python": {"shm-default-byte-size": "4194304"}, "onnxruntime": {}}
    assert Options(model_repository=tmp_path, backend_configs=configs).backend_configs == configs


def test_other_invalid_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server_id"):
        Options(model_repository=tmp_path, server_id="")
    with pytest.raises(ValueError, match="model_control_mode"):
        Options(model_repository=tmp_path, model_control_mode=7)
    with pytest.raises(ValueError, match="unknown_flag"):  # typos are errors, not ignored
        Options(model_repository=tmp_path, unknown_flag=True)  # type: ignore[call-arg]


def test_options_are_frozen(tmp_path: Path) -> None:
    options = Options(model_repository=tmp_path)
    with pytest.raises(pydantic.ValidationError):
        options.exit_timeout_s = 5  # type: ignore[misc]


# ---- locate_triton ----


def _fake_home(root: Path, *, with_binary: bool = False) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libtritonserver.so").write_bytes(b"")  # locating does not open it
    if with_binary:
        (root / "bin").mkdir()
        (root / "bin" / "tritonserver").write_bytes(b"")
    return root


@pytest.fixture
def no_ngc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither $TRITON_HOME nor /opt/tritonserver: only the wheel is left."""
    monkeypatch.delenv("TRITON_HOME", raising=False)
    monkeypatch.setattr(install, "NGC_HOME", tmp_path / "no-ngc-here")


def test_explicit_home_that_is_empty(tmp_path: Path, no_ngc: None) -> None:
    home = tmp_path / "empty"
    home.mkdir()
    with pytest.raises(TritonNotFoundError) as info:
        locate_triton(home)
    message = str(info.value)
    assert str(home / "lib" / "libtritonserver.so") in message
    assert "TRITON_HOME" in message
    assert isinstance(info.value, TritonError)  # one error tree


def test_explicit_home_does_not_fall_back(tmp_path: Path, no_ngc: None) -> None:
    """A wrong explicit home is an error, even though the wheel is installed."""
    with pytest.raises(TritonNotFoundError, match="does-not-exist"):
        locate_triton(str(tmp_path / "does-not-exist"))


def test_env_home_that_is_empty(
    tmp_path: Path, no_ngc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRITON_HOME", str(tmp_path))
    with pytest.raises(TritonNotFoundError) as info:
        locate_triton()
    assert str(tmp_path / "lib" / "libtritonserver.so") in str(info.value)


def test_fake_home_is_found(tmp_path: Path, no_ngc: None) -> None:
    home = _fake_home(tmp_path / "triton")
    found = locate_triton(home)
    assert found.source == "TRITON_HOME"
    assert found.home == home
    assert found.library == home / "lib" / "libtritonserver.so"
    assert found.backend_dir == home / "backends"
    assert found.library_dirs == (home / "lib",)
    assert found.tritonserver_bin is None
    assert str(found.library) in found.describe()


def test_fake_home_from_the_environment(
    tmp_path: Path, no_ngc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _fake_home(tmp_path / "triton", with_binary=True)
    monkeypatch.setenv("TRITON_HOME", str(home))
    found = locate_triton()
    assert found.source == "TRITON_HOME"
    assert found.tritonserver_bin == home / "bin" / "tritonserver"


def test_explicit_argument_beats_the_environment(
    tmp_path: Path, no_ngc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRITON_HOME", str(tmp_path / "elsewhere"))
    home = _fake_home(tmp_path / "triton")
    assert locate_triton(home).home == home


def test_ngc_image_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_HOME", raising=False)
    home = _fake_home(tmp_path / "opt-tritonserver")
    monkeypatch.setattr(install, "NGC_HOME", home)
    found = locate_triton()
    assert found.source == "ngc"
    assert found.library == home / "lib" / "libtritonserver.so"


def test_wheel_is_found_when_nothing_else_is(no_ngc: None) -> None:
    found = locate_triton()
    assert found.source == "pytriton-wheel"
    assert found.library.is_file()
    assert found.library.name.startswith("libtritonserver")
    assert found.library.parent in found.library_dirs
    python_backend = found.backend_dir / "python"
    assert (python_backend / "libtriton_python.so").exists()
    stub = python_backend / "triton_python_backend_stub"
    assert stub.is_symlink() and stub.exists()  # symlinked: the stub is found through it
    assert found.tritonserver_bin is not None and found.tritonserver_bin.is_file()
    assert all(p.exists() and "libpython" not in p.name for p in found.preload)


def test_nothing_found_lists_every_place(
    tmp_path: Path, no_ngc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "pytriton" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(install.importlib.util, "find_spec", find_spec)
    with pytest.raises(TritonNotFoundError) as info:
        locate_triton()
    message = str(info.value)
    assert str(tmp_path / "no-ngc-here" / "lib" / "libtritonserver.so") in message
    assert "nvidia-pytriton" in message
