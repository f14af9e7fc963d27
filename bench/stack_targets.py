"""The two targets of ``bench.stack``, one at a time, each as a context manager.

- **stack**: a private Ray cluster started in this process (``address="local"``, so
  every Ray process is a descendant of this one), Serve's HTTP and gRPC proxies on free
  ports of 127.0.0.1, and the applications of a Serve config file, as ``make serve``
  (``app.local_stack``) deploys them: by default ``serve_configs/local.yaml`` with two
  logical GPUs. ``--stack-config bench`` deploys instead one deployment per benchmarked
  model (1 CPU, 0.25 GPU, ``max_ongoing_requests`` 256; router 512) on 4 CPUs and 1 GPU.
  With ``--stack-endpoint direct`` clients go to the router replica's own ports (direct
  ingress: ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` or ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``).
- **standalone**: the ``tritonserver`` of the nvidia-pytriton wheel serving the same
  ``model_repository`` (``bench.common.standalone.StandaloneTriton``), HTTP and gRPC.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.net import free_port, http_get, wait_ok
from bench.common.paths import MODEL_REPOSITORY, REPO_ROOT
from bench.common.standalone import StandaloneTriton
from bench.hop_cpu import StackRoles, process_tree, stack_hops, standalone_hops

HOST = "127.0.0.1"
BENCH_APP = "triton"
STACK_READY_TIMEOUT_S = 300.0
SETTLE_S = 2.0  # pause after a target stops, so its processes are gone before the next
DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


@dataclass
class Target:
    """A running target: where to send requests and which processes serve them."""

    name: str
    http_url: str  # http://host:port
    grpc_address: str  # host:port ("" without gRPC)
    version: str
    cpu_root: int  # every process of the target descends from it (this one excepted)
    hops: Callable[[str], dict[str, list[int]]]  # model -> {hop: pids}
    info: dict[str, Any] = field(default_factory=dict)
    # model -> (replica calls, requests they carried) so far; None where not counted.
    coalescing: Callable[[str], tuple[float, float] | None] = lambda model: None

    @property
    def http_address(self) -> str:
        return self.http_url.removeprefix("http://")


def server_version(url: str) -> str:
    status, body = http_get(f"{url}/v2")
    if status != 200:
        return "?"
    return str(json.loads(body).get("version") or "?")


def coalescing_counts(metrics_url: str, deployment: str) -> tuple[float, float] | None:
    """(calls, requests) of the router's ``triton_serve_coalesced_requests`` histogram
    for ``deployment`` (one router replica answers: with several, one replica's)."""
    status, body = http_get(metrics_url, timeout=30.0)
    if status != 200:
        return None
    text = body.decode()
    label = re.escape(f'{{deployment="{deployment}"}}')
    found: dict[str, float] = {}
    for part in ("count", "sum"):
        match = re.search(
            rf"^triton_serve_coalesced_requests_{part}{label} (\S+)$", text, re.MULTILINE
        )
        found[part] = float(match.group(1)) if match else 0.0
    return found["count"], found["sum"]


def success_count(url: str, model: str) -> int:
    """Requests of ``model`` that Triton completed successfully (its statistics)."""
    status, body = http_get(f"{url}/v2/models/{model}/stats", timeout=30.0)
    if status != 200:
        raise RuntimeError(f"{url}: statistics of {model}: HTTP {status} {body[:300]!r}")
    stats = json.loads(body)["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


# ---- the stack ----


@dataclass(frozen=True)
class StackOptions:
    config: str  # a Serve config file, or "bench"
    num_gpus: float
    serve_env: dict[str, str]
    endpoint: str  # "proxy" or "direct"


def bench_app_args(models: Sequence[str]) -> dict[str, Any]:
    """``build_app`` args of ``--stack-config bench``: one deployment per model."""
    return {
        "model_repository": str(MODEL_REPOSITORY),
        "triton": {"log_info": False},
        "router": {"max_ongoing_requests": 512},
        "deployments": [
            {
                "name": model,
                "models": [model],
                "num_cpus": 1,
                "num_gpus": 0.25,
                "max_ongoing_requests": 256,
            }
            for model in models
        ],
    }


@dataclass
class _App:
    name: str
    route_prefix: str | None
    import_path: str
    args: dict[str, Any]

    def deployment_of(self, model: str) -> str | None:
        for dep in self.args.get("deployments", []):
            if model in dep.get("models", []):
                return str(dep["name"])
        return None

    def model_deployments(self) -> frozenset[str]:
        return frozenset(str(d["name"]) for d in self.args.get("deployments", []))


def _apps(options: StackOptions, models: Sequence[str]) -> tuple[list[_App], dict[str, Any]]:
    """The applications to deploy and Serve's gRPC options (servicer functions)."""
    if options.config == "bench":
        grpc = {"grpc_servicer_functions": ["app.grpc.servicer.add_inference_service_to_server"]}
        app = _App(BENCH_APP, "/", "app.builders:build_app", bench_app_args(models))
        return [app], grpc
    import yaml
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(Path(options.config).read_text()))
    apps = []
    for spec in schema.applications:
        args = dict(spec.args or {})
        repo = args.get("model_repository")
        if isinstance(repo, str) and not Path(repo).is_absolute():
            args["model_repository"] = str(REPO_ROOT / repo)
        apps.append(_App(spec.name, spec.route_prefix, spec.import_path, args))
    functions = list(schema.grpc_options.grpc_servicer_functions or [])
    return apps, ({"grpc_servicer_functions": functions} if functions else {})


def _wait_ready(url: str, models: Sequence[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for model in models:
        wait_ok(f"{url}/v2/models/{model}/ready", max(1.0, deadline - time.monotonic()))


def _direct_ingress(app: str, serve_ports: Sequence[int]) -> dict[str, str]:
    """The router replica's own ports (direct ingress) by protocol, from the controller.

    The controller reports the node's IP, but the replica binds the host of Serve's
    ``http_options`` (127.0.0.1 here), so only the port is taken from it.
    """
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running")
    controller: Any = client._controller
    found: dict[str, str] = {}
    for group in ray.get(controller.get_target_groups.remote(app), timeout=30):
        protocol = str(getattr(group.protocol, "value", group.protocol)).lower()
        for target in group.targets:
            if int(target.port) not in serve_ports:
                found.setdefault(protocol, f"{HOST}:{target.port}")
    if "http" not in found:
        raise RuntimeError(
            "no direct-ingress HTTP target: set --serve-env RAY_SERVE_ENABLE_DIRECT_INGRESS=1 "
            "(or RAY_SERVE_THROUGHPUT_OPTIMIZED=1)"
        )
    return found


def direct_ingress_on(env: dict[str, str]) -> bool:
    """Whether Serve will run direct ingress with ``env`` (as its constants decide)."""
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        return True
    if "RAY_SERVE_ENABLE_DIRECT_INGRESS" in env:
        return env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    return env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"


def serve_env_with_defaults(serve_env: dict[str, str]) -> dict[str, str]:
    """``--serve-env`` plus the bench's defaults: with direct ingress, no 30 s drain of
    the ingress replica at shutdown (Serve's default outlasts ``serve.shutdown``'s own
    30 s, and Ray then kills the replicas before Triton is stopped)."""
    env = dict(serve_env)
    if direct_ingress_on({**os.environ, **env}) and DRAIN_ENV not in os.environ:
        env.setdefault(DRAIN_ENV, "0")
    return env


def _leftover_shm(pids: Sequence[int]) -> list[Path]:
    """In-process Triton shm regions (``tsrv<pid>x0_*``) of processes that are gone."""
    return [
        region
        for pid in pids
        if not Path(f"/proc/{pid}").exists()
        for region in Path("/dev/shm").glob(f"tsrv{pid}x0_*")
    ]


@contextlib.contextmanager
def stack(options: StackOptions, models: Sequence[str]) -> Iterator[Target]:
    """Ray in this process, the applications, both proxies; all shut down on exit."""
    os.environ.update(options.serve_env)  # before Ray starts: the raylet passes them on
    import ray
    from ray import serve

    from app.local_stack import _builder

    apps, grpc = _apps(options, models)
    owner = {m: next((a for a in apps if a.deployment_of(m)), None) for m in models}
    missing = [m for m, a in owner.items() if a is None]
    if missing:
        raise RuntimeError(f"{options.config} serves no deployment of {', '.join(missing)}")
    http_port, grpc_port = free_port(), free_port()
    bench = options.config == "bench"
    num_gpus: Any = 1 if bench else options.num_gpus  # fractional GPUs: Ray's hint says int
    ray.init(
        address="local",
        num_cpus=4 if bench else None,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    names: list[str] = []
    try:
        serve.start(
            http_options={"host": HOST, "port": http_port},
            grpc_options={"port": grpc_port, **grpc} if grpc else None,
        )
        for app in apps:
            serve._run(
                _builder(app.import_path)(app.args),
                name=app.name,
                route_prefix=app.route_prefix,
                _blocking=False,
            )
            names.append(app.name)
        http_url, grpc_address = f"http://{HOST}:{http_port}", f"{HOST}:{grpc_port}"
        _wait_ready(http_url, models, STACK_READY_TIMEOUT_S)
        version = server_version(http_url)
        if options.endpoint == "direct":
            direct = _direct_ingress(names[0], [http_port, grpc_port])
            http_url = f"http://{direct['http']}"
            grpc_address = direct.get("grpc", "")
            _wait_ready(http_url, models, 60.0)
        if not grpc:
            grpc_address = ""

        def hops(model: str) -> dict[str, list[int]]:
            app = owner[model]
            assert app is not None
            roles = StackRoles(app.name, app.model_deployments())
            return stack_hops(os.getpid(), os.getpid(), roles, app.deployment_of(model) or "")

        def coalescing(model: str) -> tuple[float, float] | None:
            app = owner[model]
            assert app is not None
            prefix = (app.route_prefix or "").rstrip("/")
            return coalescing_counts(f"{http_url}{prefix}/metrics", app.deployment_of(model) or "")

        info = {"config": options.config, "apps": [a.name for a in apps], "num_gpus": num_gpus}
        # Ray's processes (GCS, raylet, Serve's actors, Triton's stubs) descend from this
        # one (address="local"), so the CPU they use is counted from here.
        yield Target("stack", http_url, grpc_address, version, os.getpid(), hops, info, coalescing)
    finally:
        ray_pids = process_tree(os.getpid(), exclude=-1)
        # Deleting the applications drains them (each replica stops its Triton), as
        # app.local_stack does; serve.shutdown() alone cuts the proxies at once.
        for name in names:
            with contextlib.suppress(Exception):
                serve.delete(name, _blocking=True)
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        time.sleep(SETTLE_S)
        leftover = _leftover_shm(ray_pids)
        if leftover:
            print(
                f"warning: the stack left {len(leftover)} Triton shm region(s) in /dev/shm "
                "(a replica was killed before it stopped Triton); removing them",
                file=sys.stderr,
            )
            for region in leftover:
                with contextlib.suppress(OSError):
                    region.unlink()


@contextlib.contextmanager
def standalone(models: Sequence[str]) -> Iterator[Target]:
    with StandaloneTriton(MODEL_REPOSITORY, models) as server:
        pid = server.pid or 0
        url = f"http://127.0.0.1:{server.http_port}"
        yield Target(
            "standalone",
            url,
            f"127.0.0.1:{server.grpc_port}",
            server_version(url),
            pid,
            lambda _model: standalone_hops(pid),
        )
