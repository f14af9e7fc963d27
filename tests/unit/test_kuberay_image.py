"""The image installs the project with --no-deps (the NGC image's torch and CUDA stay), so
its own pip list must name every runtime dependency of pyproject.toml but those two."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Provided by the NGC image (torch with CUDA) or replaced by it (Triton itself).
FROM_THE_IMAGE = {"torch", "nvidia-pytriton"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=;! ]", requirement.strip(), maxsplit=1)[0].lower()


def test_dockerfile_installs_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in project["dependencies"]} - FROM_THE_IMAGE
    dockerfile = (ROOT / "kuberay" / "image" / "Dockerfile").read_text()
    installed = {
        _name(q) for q in re.findall(r'"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?[^"]*)"', dockerfile)
    }
    assert needed <= installed, (
        f"missing from the Dockerfile's pip install: {sorted(needed - installed)}"
    )


def _dockerfile() -> str:
    return (ROOT / "kuberay" / "image" / "Dockerfile").read_text()


def test_image_runs_as_the_non_root_user_the_pods_ask_for() -> None:
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), re.MULTILINE)
    assert users, "no USER line"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can verify it
    rayservice = (ROOT / "kuberay" / "base" / "rayservice.yaml").read_text()
    assert set(re.findall(r"runAsUser: (\d+)", rayservice)) == {uid}


def test_base_image_is_pinned_by_a_digest_with_no_default() -> None:
    text = _dockerfile()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert base.endswith("@${BASE_DIGEST}")
    assert re.search(r"^ARG BASE_DIGEST$", text, re.MULTILINE)  # no default: a build must pin


def _run_steps(dockerfile: str) -> list[str]:
    """RUN instructions, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line for line in joined.splitlines() if line.startswith("RUN ")]


def test_build_runs_pip_check_and_each_flavours_import_smoke() -> None:
    dockerfile = (ROOT / "kuberay" / "image" / "Dockerfile").read_text()
    after_install = _run_steps(dockerfile.split("pip install --no-deps", 1)[1])
    smoke = next((r for r in after_install if "pip check" in r), "")
    assert "python3 -m pip check" in smoke
    assert "import app.triton._shim" in smoke
    assert re.search(r"vllm\)\s+python3 -c \"import vllm\.entrypoints\.openai\.api_server\"", smoke)
    assert re.search(r"trtllm\)\s+python3 -c \"import tensorrt_llm\"", smoke)
    # FLAVOUR is visible to the smoke step only when re-declared after FROM.
    assert re.search(r"^FROM .*\n(?:.*\n)*?ARG FLAVOUR$", dockerfile, re.MULTILINE)


def test_dockerfile_states_cuda_and_driver_of_its_ngc_tag() -> None:
    dockerfile = (ROOT / "kuberay" / "image" / "Dockerfile").read_text()
    tag = re.search(r"ARG TRITON_VERSION=(\S+)", dockerfile)
    assert tag is not None
    assert re.search(rf"{re.escape(tag.group(1))} .*CUDA [0-9.]+; NVIDIA driver \d+", dockerfile)
