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
