"""Random interleavings of model control with inference running, in one Server.

Run as a child process (``python -m tests.integration.engine.control_stress SECONDS``) so
that a crash of the engine fails the test instead of killing pytest. Prints one line of
counts and exits 0 when every call either succeeded or failed with a Triton error.
``... control_stress loop N`` repeats, N times, the load/unload sequence that once
crashed Triton's model teardown; ``... control_stress unload-check`` checks that
``wait_until_unloaded`` means the processes are gone.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from app.triton import Options, Server, TritonError

REPOSITORY = Path(__file__).resolve().parents[3] / "model_repository"
ONE_VERSION = {"version_policy": {"specific": {"versions": [1]}}}


def control_step(server: Server, rng: random.Random) -> str:
    """One control call drawn at random; returns its name for the tally."""
    choice = rng.randrange(8)
    if choice == 0:
        server.load("ensemble_pipeline")
        return "load ensemble"
    if choice == 1:
        server.unload("ensemble_pipeline", unload_dependents=True, wait_until_unloaded=True)
        return "unload ensemble+dependents"
    if choice == 2:
        server.load("versioned", config=ONE_VERSION)
        return "load versioned override"
    if choice == 3:
        server.load("versioned")
        return "load versioned"
    if choice == 4:
        server.unload("versioned", wait_until_unloaded=rng.random() < 0.5)
        return "unload versioned"
    if choice == 5:
        config = server.model("echo").config().model_dump()
        batching = {**(config.get("dynamic_batching") or {}), "preferred_batch_size": []}
        size = rng.choice([64, 128])
        server.load("echo", config={**config, "max_batch_size": size, "dynamic_batching": batching})
        return "reload echo override"
    if choice == 6:
        server.unload("ens_scale")
        return "unload ens_scale"
    server.load("streamer")
    return "load streamer"


def controller(server: Server, seed: int, deadline: float, tally: Counter[str]) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            tally[control_step(server, rng)] += 1
        except TritonError as exc:
            tally[f"control error {type(exc).__name__}"] += 1


async def inference(server: Server, deadline: float, tally: Counter[str]) -> None:
    batch = {"INPUT_FP32": np.ones((1, 4), np.float32)}
    vector = {"INPUT0": np.ones(4, np.float32)}
    while time.monotonic() < deadline:
        for name, inputs in (("echo", batch), ("versioned", vector), ("ensemble_pipeline", vector)):
            try:
                await server.model(name).infer(inputs)
                tally["infer ok"] += 1
            except TritonError:
                tally["infer refused"] += 1
        await asyncio.sleep(0.002)


def check_wait_until_unloaded() -> None:
    """``wait_until_unloaded`` returns once the processes are gone, reloads included.

    Runs alone in its process: the python backend takes its shared-memory prefix from
    the first server of a process, so a second server cannot tell its stubs apart."""
    with Server(Options(model_repository=REPOSITORY)) as server:
        server.load("ensemble_pipeline")
        parts = ("ens_scale_", "ens_offset_")
        assert [s for s in server.stub_processes() if s.instance.startswith(parts)]
        server.unload("ensemble_pipeline", unload_dependents=True, wait_until_unloaded=True)
        # Dependents are destroyed too, not merely marked: their stubs have exited.
        assert not [s for s in server.stub_processes() if s.instance.startswith(parts)]
        assert server.teardowns_in_progress() == []

        server.load("echo")
        old = set(server.stub_processes())
        config = server.model("echo").config().model_dump()
        server.load("echo", config={**config, "max_batch_size": 128})  # a full reload
        assert set(server.stub_processes()) - old
        # The old version's stubs exit in the background: until they do, they are
        # retiring, so a watch that leaves those out never takes their exit for a death.
        assert not (set(server.stub_processes()) - server.retiring_stubs()) & old
        server.unload("echo", wait_until_unloaded=True)
        # The reload's old instances were destroyed before the unload began, and the
        # unload's own before it returned.
        assert not [s for s in server.stub_processes() if s.instance.startswith("echo_")]
        assert server.teardowns_in_progress() == []
    print("unload check: ok", flush=True)


def overlap_loop(iterations: int) -> int:
    """The sequence that once crashed Triton's model teardown, repeated in one Server:
    an ensemble unloaded with its dependents, then a model loaded with a config
    override and unloaded, each waiting until unloaded."""
    started = time.monotonic()
    with Server(Options(model_repository=REPOSITORY)) as server:
        for done in range(1, iterations + 1):
            server.load("ensemble_pipeline")
            server.unload("ensemble_pipeline", unload_dependents=True, wait_until_unloaded=True)
            server.load("versioned", config=ONE_VERSION)
            server.unload("versioned", wait_until_unloaded=True)
            if done % 50 == 0 or done == iterations:
                print(f"loop: {done} iterations, {time.monotonic() - started:.0f} s", flush=True)
        left = server.teardowns_in_progress()
    print(f"loop: ok, {iterations} iterations, in progress at end: {left}", flush=True)
    return 0


def main(seconds: float) -> int:
    tally: Counter[str] = Counter()
    with Server(Options(model_repository=REPOSITORY)) as server:
        server.load("echo")
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=controller, args=(server, seed, deadline, tally))
            for seed in (1, 2)
        ]
        for thread in threads:
            thread.start()
        asyncio.run(inference(server, deadline, tally))
        for thread in threads:
            thread.join()
        left = server.teardowns_in_progress()
    print("stress:", dict(sorted(tally.items())), "in progress at end:", left, flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["unload-check"]:
        check_wait_until_unloaded()
        sys.exit(0)
    if sys.argv[1:2] == ["loop"]:
        sys.exit(overlap_loop(int(sys.argv[2]) if len(sys.argv) > 2 else 500))
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
