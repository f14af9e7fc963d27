"""GPU smoke check for the borrowed GPU machine (``make gpu-smoke``).

The machine has Python 3.12, torch (CUDA), transformers; no Ray, no network, no NGC
image. ``make gpu-wheels`` (run where there is a network) puts what else is needed under
``.whl/``: cp312 wheels (nvidia-pytriton's Triton, pydantic, ml-dtypes) and MiniLM's
small files with the names and shapes of its weights (the 90 MB of weights do not fit
the 64 MiB carried; seeded random weights of the same shapes stand in, which is enough
to compare a GPU instance with a CPU one).

One run proves, each step printing PASS/FAIL/SKIP:
1. the C extension was built and imports on this Python;
2. ``minilm-gpu`` loads as a KIND_GPU instance and its embeddings match a KIND_CPU twin;
3. two in-process servers (two fractional replicas) share the GPU: each process tree's
   GPU memory (nvidia-smi) is printed beside the placement arithmetic's ``overhead_gb``,
   with the value the reading says it should be;
4. the engine's leak counters (``_shim.stats()``) are flat over a few thousand requests.

``--cpu`` is the dry run (no GPU): both instances KIND_CPU, step 3 without readings.
Exit status 1 if any step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MINILM_FILES = ROOT / ".whl" / "minilm-model"
TEXTS = ["The quick brown fox", "GPU smoke test", "ünïcödé text", "a"]
REQUESTS = 3000
results: list[tuple[str, str, str]] = []


def report(step: str, status: str, detail: str) -> None:
    results.append((step, status, detail))
    print(f"[{status}] {step}: {detail}", flush=True)


def random_weights(target: Path, seed: int = 0) -> None:
    """MiniLM's small files plus seeded random weights of its shapes (``shapes.json``)."""
    import torch
    from safetensors.torch import save_file

    shutil.copytree(MINILM_FILES, target, ignore=shutil.ignore_patterns("shapes.json"))
    shapes = json.loads((MINILM_FILES / "shapes.json").read_text())
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith("LayerNorm.weight"):
            tensors[name] = torch.ones(shape)
        elif name.endswith("bias"):
            tensors[name] = torch.zeros(shape)
        else:
            tensors[name] = torch.randn(shape, generator=generator) * 0.02
    save_file(tensors, str(target / "model.safetensors"))


def repository(root: Path, weights: Path, gpu: bool) -> Path:
    """minilm-gpu (KIND_GPU, or KIND_CPU in a dry run), its KIND_CPU twin, and minilm's
    code they import."""
    repo = root / "repo"
    shutil.copytree(ROOT / "model_repository" / "minilm", repo / "minilm")
    kinds = (("minilm-gpu", "KIND_GPU" if gpu else "KIND_CPU"), ("minilm-cpu", "KIND_CPU"))
    for name, kind in kinds:
        shutil.copytree(ROOT / "model_repository" / "minilm-gpu", repo / name)
        text = (repo / name / "config.pbtxt").read_text()
        text = text.replace('name: "minilm-gpu"', f'name: "{name}"')
        text = text.replace("kind: KIND_GPU", f"kind: {kind}")
        text = text.replace('string_value: ""', f'string_value: "{weights}"')
        (repo / name / "config.pbtxt").write_text(text)
    return repo


async def embed(server: Any, model: str, texts: list[str]) -> np.ndarray[Any, Any]:
    values = np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)
    response = await server.model(model).infer({"TEXT": values})
    return np.asarray(response.outputs["EMBEDDING"])


def step_extension() -> None:
    try:
        from app.triton import _shim

        report(
            "C extension",
            "PASS",
            f"python {sys.version.split()[0]}, {Path(_shim.__file__).name}",
        )
    except ImportError as exc:
        report("C extension", "FAIL", f"{exc} (make gpu-smoke builds it first)")


def step_twin(repo: Path, gpu: bool) -> None:
    from app.triton import Options, Server

    with Server(Options(model_repository=str(repo), log_info=False)) as server:
        server.load("minilm-gpu")
        server.load("minilm-cpu")
        kind = server.model("minilm-gpu").config().model_dump().get("instance_group", [{}])
        on_gpu, on_cpu = asyncio.run(_both(server))
    diff = float(np.abs(on_gpu - on_cpu).max())
    cosine = float((on_gpu * on_cpu).sum(axis=1).min())
    status = "PASS" if diff < 1e-3 and cosine > 0.9999 else "FAIL"
    where = "KIND_GPU" if gpu else "KIND_CPU (dry run)"
    detail = f"{where} {kind}; max |diff| {diff:.2e}, min cos {cosine:.6f}"
    report("minilm-gpu vs KIND_CPU twin", status, detail)


async def _both(server: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return await embed(server, "minilm-gpu", TEXTS), await embed(server, "minilm-cpu", TEXTS)


_REPLICA = """
import asyncio, os, sys, time
import numpy as np
from app.triton import Options, Server
server = Server(Options(model_repository=sys.argv[1], log_info=False)).start()
server.load("minilm-gpu")
values = np.array([b"warm up"], dtype=object).reshape(-1, 1)
asyncio.run(server.model("minilm-gpu").infer({"TEXT": values}))
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
server.stop()
"""


def gpu_memory_by_pid() -> dict[int, float]:
    """pid -> GB used on the GPU, from nvidia-smi (compute processes)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    used: dict[int, float] = {}
    for line in out.splitlines():
        pid, mib = (part.strip() for part in line.split(","))
        used[int(pid)] = used.get(int(pid), 0.0) + float(mib) / 1024
    return used


def step_two_servers(repo: Path, gpu: bool) -> None:
    """Two replica processes on one GPU; memory per process tree beside overhead_gb."""
    import yaml

    from app.config import AppConfig
    from app.placement.shares import derive_share
    from app.triton.process_tree import descendants

    prod = yaml.safe_load((ROOT / "serve_configs" / "prod.yaml").read_text())
    cfg = AppConfig.model_validate(prod["applications"][0]["args"])
    dep = next(d for d in cfg.deployments if d.name == "embedding-gpu")
    assert dep.gpu_memory is not None and cfg.gpus is not None
    share = derive_share(dep, cfg.gpus.memory_gb, "embedding-gpu")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, str(repo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        pids = []
        for replica in replicas:
            assert replica.stdout is not None
            line = replica.stdout.readline().split()
            if line[:1] != ["ready"]:
                report("two servers on one GPU", "FAIL", "a replica did not start")
                return
            pids.append(int(line[1]))
        if not gpu:
            report("two servers on one GPU", "SKIP", f"both started (pids {pids}); no GPU to read")
            return
        used = gpu_memory_by_pid()
        readings = []
        for pid in pids:
            tree = [pid, *(p.pid for p in descendants([pid]))]
            readings.append(sum(used.get(p, 0.0) for p in tree))
        print(share.arithmetic())
        for pid, gb in zip(pids, readings, strict=True):
            suggested = max(0.0, gb - share.weights_gb)
            print(
                f"  replica pid {pid}: {gb:.2f} GB on the GPU (its tree); config says weights "
                f"{share.weights_gb} + overhead_gb {share.overhead_gb} = "
                f"{share.weights_gb + share.overhead_gb:.2f} GB; reading says overhead_gb "
                f"~{suggested:.2f} (+ margin)"
            )
        ok = all(0 < gb <= share.share_gb for gb in readings)
        report(
            "two servers on one GPU",
            "PASS" if ok else "FAIL",
            f"{[round(g, 2) for g in readings]} GB vs share {share.share_gb:.1f} GB each",
        )
    finally:
        for replica in replicas:
            if replica.stdin is not None:
                replica.stdin.close()
        for replica in replicas:
            try:
                replica.wait(timeout=60)
            except subprocess.TimeoutExpired:
                replica.kill()


def step_leaks(repo: Path, requests: int) -> None:
    import gc

    from app.triton import Options, Server, _shim

    with Server(Options(model_repository=str(repo), log_info=False)) as server:
        server.load("minilm-gpu")

        async def drive(n: int) -> None:
            semaphore = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with semaphore:
                    await embed(server, "minilm-gpu", [TEXTS[i % len(TEXTS)]])

            await asyncio.gather(*(one(i) for i in range(n)))

        asyncio.run(drive(200))  # warm up
        gc.collect()
        before = _shim.stats()
        started = time.monotonic()
        asyncio.run(drive(requests))
        time.sleep(0.2)
        gc.collect()
        after = _shim.stats()
    rate = requests / (time.monotonic() - started)
    report(
        "leak counters",
        "PASS" if after == before else "FAIL",
        f"{requests} requests ({rate:.0f}/s): before {before}, after {after}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="dry run without a GPU")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args(argv)
    gpu = not args.cpu
    step_extension()
    if not (MINILM_FILES / "shapes.json").is_file():
        report("setup", "FAIL", f"{MINILM_FILES}/shapes.json missing: run `make gpu-wheels`")
        return 1
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        weights = Path(tmp) / "weights"
        random_weights(weights)
        repo = repository(Path(tmp), weights, gpu)
        for step in (
            lambda: step_twin(repo, gpu),
            lambda: step_two_servers(repo, gpu),
            lambda: step_leaks(repo, args.requests),
        ):
            try:
                step()
            except Exception as exc:  # one step's failure must not hide the others
                report(getattr(step, "__name__", "step"), "FAIL", f"{type(exc).__name__}: {exc}")
    failed = [r for r in results if r[1] == "FAIL"]
    print(f"\n{len(results) - len(failed)}/{len(results)} steps passed or skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
