"""Serve replicas and GPU nodes scaling together, on Ray's fake multinode autoscaler.

Run with ``python -m bench.autoscaling`` (about 3 minutes on 2 cores). The real Ray
autoscaler (v2) runs against the ``fake_multinode`` node provider, with node types
that Ray's own KubeRay reader makes of ``kuberay/`` (``tests.support.fake_gpu_cluster``),
and one model scales from zero to two replicas on two GPU nodes and back
(``tests.support.autoscaling_scenario``, the same scenario
``tests/integration/autoscaling`` asserts on). ``--max-gpu-nodes`` caps the GPU
groups, ``--time-scale`` multiplies every ``idleTimeoutSeconds`` (1/60: 600 s become
10 s).

The script prints the timeline (requests, replicas, nodes per second) as a table and
writes ``bench/out/autoscaling.png`` and ``bench/out/autoscaling.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common.paths import OUT_DIR
from tests.support.autoscaling_scenario import (
    Scenario,
    Timeline,
    run_scenario,
    summary,
    timeline_table,
)


def plot(timeline: Timeline, path: Path) -> None:
    """Requests per second, replicas and GPU nodes over time, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_count) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    horizon = int(max((s.t_s for s in timeline.samples), default=0)) + 1
    ok_per_s = [0] * (horizon + 1)
    failed_per_s = [0] * (horizon + 1)
    for r in timeline.requests:
        slot = min(int(r.end_s), horizon)
        if r.status == 200:
            ok_per_s[slot] += 1
        else:
            failed_per_s[slot] += 1
    ax_rps.plot(range(horizon + 1), ok_per_s, label="ok / s")
    ax_rps.plot(range(horizon + 1), failed_per_s, label="failed / s", color="red")
    ax_rps.set_ylabel("requests")
    ax_rps.legend(loc="upper right")
    ts = [s.t_s for s in timeline.samples]
    ax_count.step(ts, [s.replicas for s in timeline.samples], where="post", label="replicas")
    ax_count.step(ts, [s.gpu_nodes for s in timeline.samples], where="post", label="GPU nodes")
    ax_count.set_ylabel("count")
    ax_count.set_xlabel("seconds")
    ax_count.legend(loc="upper right")
    for phase, start in timeline.phase_start_s.items():
        for ax in (ax_rps, ax_count):
            ax.axvline(start, color="grey", linestyle=":")
        ax_rps.annotate(phase, (start, 0), textcoords="offset points", xytext=(2, 2))
    fig.suptitle(
        f"echo on fake '{timeline.scenario.group}' nodes: cold start {timeline.cold_start_s} s"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", default=Scenario.group)
    parser.add_argument("--max-gpu-nodes", type=int, default=Scenario.max_gpu_nodes)
    parser.add_argument("--time-scale", type=float, default=Scenario.time_scale)
    parser.add_argument("--concurrency", type=int, default=Scenario.concurrency)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    scenario = Scenario(
        group=args.group,
        max_gpu_nodes=args.max_gpu_nodes,
        time_scale=args.time_scale,
        concurrency=args.concurrency,
    )
    started = time.monotonic()
    print(f"running {scenario}", flush=True)
    timeline = run_scenario(scenario)
    print(timeline_table(timeline))
    print(summary(timeline))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoscaling.json").write_text(json.dumps(timeline.to_json(), indent=1))
    plot(timeline, args.out / "autoscaling.png")
    print(f"wrote {args.out / 'autoscaling.png'} ({time.monotonic() - started:.0f} s in all)")
    return 0 if not timeline.failures() and timeline.cold_start_s is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
