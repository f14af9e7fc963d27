"""The per-GPU load lock: keys name physical GPUs, holders never overlap, a stuck
holder fails the waiter with the reason, and a dead holder frees the GPU."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.config import AppConfig
from app.placement.load_lock import gpu_keys, gpu_load_lock, load_lock_keys
from app.triton.errors import UnavailableError


def test_keys_map_indices_to_uuids_and_keep_logical_gpus() -> None:
    uuids = {"0": "GPU-aaa", "1": "GPU-bbb"}
    assert gpu_keys({"CUDA_VISIBLE_DEVICES": "1"}, uuids) == ["GPU-bbb"]
    # One GPU seen through an index in one process and its UUID in another: one key.
    assert gpu_keys({"CUDA_VISIBLE_DEVICES": "GPU-bbb"}, uuids) == ["GPU-bbb"]
    assert gpu_keys({"CUDA_VISIBLE_DEVICES": "1,0"}, uuids) == ["GPU-aaa", "GPU-bbb"]
    assert gpu_keys({"CUDA_VISIBLE_DEVICES": "0"}, {}) == ["logical-0"]
    assert gpu_keys({"CUDA_VISIBLE_DEVICES": ""}, uuids) == []
    assert gpu_keys({}, uuids) == []


def _cfg(**deployment: object) -> AppConfig:
    dep = {"name": "d", "models": ["m"], "num_gpus": 0.5, **deployment}
    return AppConfig.model_validate({"model_repository": "/r", "deployments": [dep]})


def test_only_deployments_that_use_gpu_memory_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr("app.placement.load_lock._gpu_uuids", lambda: {})
    memory = {"engine": "fixed", "weights_gb": 1}
    assert load_lock_keys(_cfg(gpu_memory=memory), "d") == ["logical-3"]
    assert load_lock_keys(_cfg(), "d") == []


def test_holders_never_overlap(tmp_path: Path) -> None:
    spans: list[tuple[float, float]] = []

    def load(i: int) -> None:
        with gpu_load_lock(["GPU-x"], f"load{i}", directory=tmp_path):
            start = time.monotonic()
            time.sleep(0.2)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_other_gpus_do_not_wait(tmp_path: Path) -> None:
    with (
        gpu_load_lock(["GPU-x"], "first", directory=tmp_path),
        gpu_load_lock(["GPU-y"], "second", directory=tmp_path, timeout_s=0.5),
    ):
        pass


def test_a_stuck_holder_fails_the_waiter_naming_it(tmp_path: Path) -> None:
    with (
        gpu_load_lock(["GPU-x"], "dep/first-model", directory=tmp_path),
        pytest.raises(UnavailableError) as info,
        gpu_load_lock(["GPU-x"], "dep/second", directory=tmp_path, timeout_s=0.3),
    ):
        pass
    assert "dep/first-model" in str(info.value) and "GPU-x" in str(info.value)


def test_a_killed_holder_frees_the_gpu(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from app.placement.load_lock import gpu_load_lock\n"
            "with gpu_load_lock(['GPU-x'], 'holder', directory=Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait()
        with gpu_load_lock(["GPU-x"], "next", directory=tmp_path, timeout_s=5):
            pass
    finally:
        holder.kill()
