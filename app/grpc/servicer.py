"""The servicer function Serve's gRPC proxy imports (``grpc_options.grpc_servicer_functions``).

Use ``app.grpc.servicer.add_inference_service_to_server``, not tritonclient's
``add_GRPCInferenceServiceServicer_to_server`` directly: the proxy pickles each
request message to hand it to the router replica, and tritonclient's generated
classes say they live in modules named ``grpc_service_pb2`` and
``model_config_pb2`` (the ``.proto`` files' names), which do not exist, so every
call would fail with ``PicklingError`` (measured: ``UNKNOWN`` status on
``ServerLive``). Registering those names as aliases of tritonclient's modules, in
the proxy here and in the router (``TritonGrpcMethods.init_grpc``), lets the
messages pickle by reference.

It also makes the client's deadline reach the router (``app.grpc.deadline``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["add_inference_service_to_server", "register_proto_modules"]

# tritonclient's generated classes name the modules they were compiled from
# (``grpc_service_pb2``, ``model_config_pb2``), not the package they live in.
_PROTO_MODULES = {
    "grpc_service_pb2": "tritonclient.grpc.service_pb2",
    "model_config_pb2": "tritonclient.grpc.model_config_pb2",
}


def register_proto_modules() -> None:
    """Make tritonclient's messages picklable in this process (idempotent)."""
    import importlib

    for alias, real in _PROTO_MODULES.items():
        module = importlib.import_module(real)
        existing = sys.modules.setdefault(alias, module)
        if existing is not module:
            raise RuntimeError(f"module {alias!r} is already {existing!r}, not {real}")


def add_inference_service_to_server(servicer: Any, server: Any) -> None:
    """Register ``inference.GRPCInferenceService`` on Serve's gRPC server."""
    from tritonclient.grpc import service_pb2_grpc

    from app.grpc.deadline import carry_deadlines

    register_proto_modules()
    carry_deadlines(server)  # before the handlers are built
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
