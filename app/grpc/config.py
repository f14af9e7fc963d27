"""Configuration of Triton's gRPC protocol on the router (``AppConfig.grpc``).

The port is Serve's (``grpc_options`` of the Serve config, where
``grpc_servicer_functions`` names ``app.grpc.servicer.add_inference_service_to_server``);
these are the router's own limits for ``ModelStreamInfer``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GrpcConfig"]


class GrpcConfig(BaseModel):
    """Limits of the gRPC ``ModelStreamInfer`` streams the router serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_stream_requests_in_flight: int = Field(
        default=64,
        ge=1,
        description="Requests of one ModelStreamInfer stream running at once; the stream's "
        "further requests are read when one finishes.",
    )
    stream_response_buffer: int = Field(
        default=64,
        ge=1,
        description="Responses of one stream waiting to be sent; a full buffer pauses that "
        "stream's requests until the client reads.",
    )
