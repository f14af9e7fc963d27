"""Long-tail traffic on a model pool: hit rate, warm-hit overhead, cold loads.

Run with ``python -m bench.longtail`` (about 5 minutes on 2 cores with the defaults).
It starts the stack in this process (Ray with 4 logical CPUs) on a repository of
``--models`` generated CPU models (``tests/support/longtail_models.py``) with two deployments:
``pool`` (every model, ``residency`` with ``--budget-gb`` and ``pool-00`` pinned) and
``always`` (a copy of ``pool-00``, a plain deployment), then:

1. warm hits: ``--warm`` sequential requests each to the pinned pool model and to
   ``always``, interleaved: the p50/p99 the residency path adds to a hit;
2. Zipf(``--zipf``) traffic: ``--requests`` requests from ``--concurrency`` clients over
   the models in a shuffled popularity order; every answer is checked (value and
   status); the router's ``/metrics`` is sampled every second for the accounted
   resident bytes (must stay within the budget);
3. the same request sequence replayed through two policies (pure simulation, sizes
   from this run's measurement): LRU by bytes within the budget (this pool's policy,
   without its concurrency and min_resident_s) and LRU by count, the policy of Serve's
   model multiplexing (``max_num_models_per_replica``), the budget turned into a count
   by the mean model size.

Printed: hit rate (live, and both simulated), warm-hit p50/p99 of both models and the
added p99, cold requests' p50/p99 (requests slower than ``max(0.5 s, 10 x`` the warm
p99)), the replica's mean load time, loads and evictions per minute, the largest
resident bytes sampled against the budget. ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.longtail_models import model_name, payload_mb, write_repository
from tests.support.longtail_traffic import (
    bytes_lru_hits,
    count_lru_hits,
    count_lru_peak_bytes,
    zipf_trace,
)

__all__ = ["main"]

MiB = 1 << 20


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _metric(text: str, name: str) -> float:
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def _infer(client: httpx.Client, url: str, model: str, value: float) -> tuple[float, bool]:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [value]}]}
    started = time.perf_counter()
    response = client.post(f"{url}/v2/models/{model}/infer", json=body)
    seconds = time.perf_counter() - started
    return seconds, response.status_code == 200


def _start(repository: Path, budget_gb: float, min_resident_s: float) -> str:
    import socket

    import ray
    from ray import serve

    from app.builders import build_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ray.init(address="local", num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "model_repository": str(repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1, "request_timeout_s": 300},
        "deployments": [
            {
                "name": "pool",
                "models": ["pool-*"],
                "num_cpus": 0.5,
                "residency": {
                    "memory_budget_gb": budget_gb,
                    "pinned": [model_name(0)],
                    "min_resident_s": min_resident_s,
                },
            },
            {"name": "always", "models": ["always"], "num_cpus": 0.25},
        ],
    }
    serve._run(build_app(args), _blocking=False, name="longtail")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200:
                return url
        if time.monotonic() > deadline:
            raise TimeoutError("the stack did not become ready")
        time.sleep(1)


def run(options: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="longtail-"))
    repository = workdir / "repository"
    write_repository(repository, options.models)
    always = repository / "always"
    shutil.copytree(repository / model_name(0), always)
    config = always / "config.pbtxt"
    config.write_text(config.read_text().replace(f'"{model_name(0)}"', '"always"'))
    budget = int(options.budget_gb * (1 << 30))
    url = _start(repository, options.budget_gb, options.min_resident_s)
    try:
        client = httpx.Client(timeout=600)
        # 1. warm hits: the pinned pool model against a plain deployment's twin
        warm: dict[str, list[float]] = {model_name(0): [], "always": []}
        for i in range(options.warm + 20):
            for model in warm:
                seconds, ok = _infer(client, url, model, 1.0)
                assert ok, f"warm request to {model} failed"
                if i >= 20:
                    warm[model].append(seconds)
        # 2. Zipf traffic
        before = client.get(f"{url}/metrics").text
        trace = zipf_trace(options.models, options.requests, options.zipf, options.seed)
        results: list[tuple[int, float, bool]] = []
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            with httpx.Client(timeout=10) as sampler:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        text = sampler.get(f"{url}/metrics").text
                        samples.append(_metric(text, "triton_serve_resident_bytes"))
                    stop.wait(1.0)

        def one(model: int) -> tuple[int, float, bool]:
            with httpx.Client(timeout=600) as own:
                seconds, ok = _infer(own, url, model_name(model), 2.0)
            return model, seconds, ok

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(options.concurrency) as pool:
            results = list(pool.map(one, trace))
        minutes = (time.monotonic() - started) / 60
        time.sleep(3)  # one report period, for the last loads' counters
        stop.set()
        sampler.join()
        after = client.get(f"{url}/metrics").text
        index = client.post(f"{url}/v2/repository/index", json={}).json()
    finally:
        import ray
        from ray import serve

        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    loads = _metric(after, "triton_serve_model_loads_total") - _metric(
        before, "triton_serve_model_loads_total"
    )
    evictions = _metric(after, "triton_serve_model_evictions_total") - _metric(
        before, "triton_serve_model_evictions_total"
    )
    load_mean = (
        _metric(after, "triton_serve_model_load_seconds_sum")
        - _metric(before, "triton_serve_model_load_seconds_sum")
    ) / max(1.0, loads)
    # sizes: each model's payload plus the per-model base this run measured
    resident = [
        int(e["name"].split("-")[1])
        for e in index
        if e["name"].startswith("pool-") and e["state"] == "READY"
    ]
    resident_bytes = _metric(after, "triton_serve_resident_bytes")
    base = (resident_bytes - sum(payload_mb(i) * MiB for i in resident)) / max(1, len(resident))
    sizes = {i: int(payload_mb(i) * MiB + base) for i in range(options.models)}
    mean_size = statistics.mean(sizes.values())
    capacity = max(1, int(budget // mean_size))
    pinned = frozenset({0})
    warm_p99 = {m: _percentile(v, 0.99) for m, v in warm.items()}
    threshold = max(0.5, 10 * max(warm_p99.values()))
    cold = [s for _, s, ok in results if ok and s > threshold]
    report = {
        "models": options.models,
        "requests": len(results),
        "failed": sum(1 for _, _, ok in results if not ok),
        "budget_bytes": budget,
        "max_resident_bytes_sampled": max(samples) if samples else None,
        "hit_rate_live": 1 - loads / len(results),
        "hit_rate_bytes_lru_simulated": bytes_lru_hits(trace, sizes, budget, pinned) / len(trace),
        "hit_rate_count_lru_simulated": count_lru_hits(trace, capacity, pinned) / len(trace),
        "count_lru_capacity": capacity,
        "count_lru_peak_bytes_simulated": count_lru_peak_bytes(trace, capacity, pinned, sizes),
        "mean_model_bytes": int(mean_size),
        "warm_p50_ms": {m: 1000 * _percentile(v, 0.5) for m, v in warm.items()},
        "warm_p99_ms": {m: 1000 * p for m, p in warm_p99.items()},
        "warm_added_p99_ms": 1000 * (warm_p99[model_name(0)] - warm_p99["always"]),
        "cold_requests": len(cold),
        "cold_p50_s": _percentile(cold, 0.5),
        "cold_p99_s": _percentile(cold, 0.99),
        "load_mean_s": load_mean,
        "loads_per_min": loads / minutes,
        "evictions_per_min": evictions / minutes,
        "minutes": minutes,
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--budget-gb", type=float, default=0.35)
    parser.add_argument("--min-resident-s", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args(argv)
    report = run(options)
    for key, value in report.items():
        print(f"{key:32} {value:.4g}" if isinstance(value, float) else f"{key:32} {value}")
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
    within = report["max_resident_bytes_sampled"] is None or (
        report["max_resident_bytes_sampled"] <= report["budget_bytes"]
    )
    return 0 if report["failed"] == 0 and within else 1


if __name__ == "__main__":
    raise SystemExit(main())
