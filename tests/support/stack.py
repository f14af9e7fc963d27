"""The one way tests start a local stack: a private Ray cluster (logical GPUs, so
placement is real without hardware), Serve's HTTP and gRPC proxies on free ports, and
the application ``app.builders.build_app`` makes of the given arguments.

Ingress mode (Serve's proxy or HAProxy) follows ``TEST_INGRESS``, which
``tests/conftest.py`` applies before Ray is imported. The multi-raylet cluster of the
fault and soak tests is ``tests.support.serving.start_multiraylet_cluster``, on which
they call ``start_serving`` themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import ray
from ray import serve

from app.builders import build_app
from tests.support.ports import free_port
from tests.support.serving import GRPC_SERVICER
from tests.support.waiting import wait_for_models, wait_until


@dataclass(frozen=True)
class LocalStack:
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_host(self) -> str:
        """``host:port`` of Serve's gRPC proxy, as ``tritonclient.grpc`` wants it."""
        return f"127.0.0.1:{self.grpc_port}"


def deploy(args: dict[str, Any], name: str, route_prefix: str = "/") -> None:
    """Run ``build_app(args)`` as application ``name`` under ``route_prefix`` without
    waiting for it."""
    serve._run(build_app(args), _blocking=False, name=name, route_prefix=route_prefix)


def run_deployment(app: Any, name: str) -> Any:
    """Run a bound deployment that is not ``build_app``'s (a test's own) as application
    ``name``, without a route; returns its handle once its replicas are up."""
    return serve.run(app, name=name, route_prefix=None)


def wait_healthy(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    """Seconds until ``url``'s ``/v2/health/ready`` answers 200."""

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/v2/health/ready", headers=headers, timeout=10)
            return response.status_code == 200
        return False

    return wait_until(ready, timeout, f"{url} ready")


def start_serving(
    stack: LocalStack,
    args: dict[str, Any] | None,
    name: str,
    *,
    ready_models: list[str] | None = None,
    ready_timeout: float = 180,
    proxy_location: str | None = None,
    deploy_app: Callable[[], None] | None = None,
) -> None:
    """Serve's HTTP and gRPC proxies on the stack's ports (on an already started Ray),
    then ``build_app(args)`` as ``name`` (or ``deploy_app()``), ready when every
    ``ready_models`` answers ready or, without them, the router's health."""
    serve.start(
        proxy_location=proxy_location,
        http_options={"host": "127.0.0.1", "port": stack.http_port},
        grpc_options={"port": stack.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]},
    )
    if deploy_app is not None:
        deploy_app()
    elif args is not None:
        deploy(args, name)
    else:
        return
    if ready_models:
        wait_for_models(stack.url, ready_models, ready_timeout)
    else:
        wait_healthy(stack.url, ready_timeout)


@contextlib.contextmanager
def local_stack(
    args: dict[str, Any] | None,
    *,
    name: str = "triton",
    num_cpus: int = 4,
    num_gpus: int = 0,
    ready_models: list[str] | None = None,
    ready_timeout: float = 180,
    grpc_port: int | None = None,
    runtime_env: dict[str, Any] | None = None,
    deploy_app: Callable[[], None] | None = None,
) -> Iterator[LocalStack]:
    """Ray (``num_gpus`` logical GPUs) + Serve + ``build_app(args)`` as ``name``, ready
    when every ``ready_models`` answers ready (or, without them, the router's health);
    everything is shut down on exit. ``args=None`` starts Ray and Serve only (the test
    deploys); ``deploy_app`` deploys another way (a ``serve deploy`` config)."""
    stack = LocalStack(free_port(), grpc_port or free_port())
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=runtime_env,
    )
    try:
        start_serving(
            stack,
            args,
            name,
            ready_models=ready_models,
            ready_timeout=ready_timeout,
            deploy_app=deploy_app,
        )
        yield stack
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def extra_application(
    args: dict[str, Any],
    name: str,
    route_prefix: str,
    ready: Callable[[], bool],
    ready_timeout: float = 180,
) -> Iterator[None]:
    """Another application beside a stack's own, under ``route_prefix``, until ``ready()``;
    deleted (and waited for) on exit, so later tests see the cluster as it was."""
    deploy(args, name, route_prefix)
    try:
        wait_until(ready, ready_timeout, f"application {name} ready")
        yield
    finally:
        serve.delete(name, _blocking=True)
