"""``make gpu-wheels``: MiniLM's small files and its weights' names and shapes, for the
GPU smoke check's stand-in weights (the real 90 MB do not fit what the GPU machine is
carried). ``python -m bench.gpu_smoke_files DIR``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from safetensors import safe_open

    minilm = Path(__file__).resolve().parents[1] / "model_repository" / "minilm" / "1"
    sys.path.insert(0, str(minilm))
    from minilm_text import model_dir

    source, target = model_dir(), Path(argv[0])
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "model.safetensors":
            continue
        copy = shutil.copytree if item.is_dir() else shutil.copy
        copy(item, target / item.name)
    with safe_open(str(source / "model.safetensors"), "np") as weights:
        shapes = {k: list(weights.get_slice(k).get_shape()) for k in weights.keys()}  # noqa: SIM118
    (target / "shapes.json").write_text(json.dumps(shapes, indent=1))
    print(f"{len(shapes)} weight shapes and {source}'s small files -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
