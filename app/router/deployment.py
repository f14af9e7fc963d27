"""The ingress deployment: HTTP in, model deployments' handles out."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from app.config import AppConfig
from app.grpc.service import TritonGrpcMethods
from app.http.app import create_http_app
from app.observability import RouterMetrics
from app.router.dataplane import DataPlane
from app.router.traffic_config import parse_traffic
from app.security.guard import Guard
from app.state_store import current_app_name

__all__ = ["Router"]

log = logging.getLogger(__name__)


@serve.ingress()
class Router(TritonGrpcMethods):
    """Holds the handles; routes reach them through ``app.state.dataplane``. Triton's
    gRPC RPCs (``TritonGrpcMethods``) arrive through Serve's gRPC proxy."""

    def __init__(self, app_config: dict[str, Any], handles: dict[str, Any]) -> None:
        cfg = AppConfig.model_validate(app_config)
        self.dataplane = DataPlane(cfg, handles, current_app_name())
        # Reads the key file here, so a missing or malformed one fails the replica
        # at start with the reason, not its first request.
        self.guard = Guard(cfg.security, router_replicas=cfg.router.num_replicas)
        self.router_metrics = RouterMetrics()  # HTTP and gRPC requests alike
        self.init_grpc(cfg)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config: the ``traffic`` section, applied to this running
        replica (calls already routed finish where they went). An invalid one is
        logged and counted, and the current routes stay: raising here would make
        Serve stop the router, and with it every model behind it."""
        replicas = self.dataplane.replicas
        try:
            replicas.set_routes(parse_traffic(user_config))
        except ValueError as exc:
            replicas.traffic_metrics.config_rejected()
            log.error("traffic config refused, the current routes stay: %s", exc)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this on the replica after ``__init__``: the app is built here,
        not pickled, and gets this replica's state."""
        app = create_http_app()
        app.state.dataplane = self.dataplane
        app.state.router_metrics = self.router_metrics
        app.state.guard = self.guard
        return app
