"""Where the repository, its model repository and the benchmarks' output are."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
OUT_DIR = REPO_ROOT / "bench" / "out"
