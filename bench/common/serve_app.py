"""Ray and one Serve application in this process, for benchmarks that measure the
stack through Serve's HTTP proxy: a private cluster (``address="local"``) with
logical GPUs, so it runs on a machine without any."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bench.common.net import free_port, wait_ok


@contextlib.contextmanager
def serve_app(
    app_args: dict[str, Any],
    name: str,
    ready_model: str,
    *,
    num_cpus: int = 4,
    num_gpus: int = 1,
    timeout_s: float = 300.0,
) -> Iterator[str]:
    """``app.builders.build_app(app_args)`` as application ``name``; yields the proxy's
    base URL once ``ready_model`` is ready, and shuts Serve and Ray down on exit."""
    import ray
    from ray import serve

    from app.builders import build_app

    port = free_port()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve._run(build_app(app_args), _blocking=False, name=name)
        url = f"http://127.0.0.1:{port}"
        wait_ok(f"{url}/v2/models/{ready_model}/ready", timeout_s)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
