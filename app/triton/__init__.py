"""In-process NVIDIA Triton: a Python API over Triton's C API (``tritonserver.h``).

The vocabulary follows Triton's official in-process API (``tritonserver``),
which cannot load on every platform; this package binds the stable C API of
whichever ``libtritonserver`` it finds (see ``locate_triton``).
"""

from app.triton.errors import (
    AlreadyExistsError,
    CancelledError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TritonError,
    TritonNotFoundError,
    UnavailableError,
    UnknownError,
    UnsupportedError,
)
from app.triton.inference import AsyncResponseIterator, InferenceRequest, InferenceResponse
from app.triton.install import TritonInstall, locate_triton
from app.triton.model_info import (
    ModelConfig,
    ModelIndexEntry,
    ModelMetadata,
    ModelState,
    ModelStatistics,
    ServerMetadata,
    TensorMetadata,
)
from app.triton.options import ModelControlMode, Options
from app.triton.server import Model, Server
from app.triton.tensors import DataType, Tensor

__all__ = [
    "AlreadyExistsError",
    "AsyncResponseIterator",
    "CancelledError",
    "DataType",
    "InferenceRequest",
    "InferenceResponse",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "ModelConfig",
    "ModelControlMode",
    "ModelIndexEntry",
    "ModelMetadata",
    "ModelState",
    "ModelStatistics",
    "NotFoundError",
    "Options",
    "Server",
    "ServerMetadata",
    "Tensor",
    "TensorMetadata",
    "TritonError",
    "TritonInstall",
    "TritonNotFoundError",
    "UnavailableError",
    "UnknownError",
    "UnsupportedError",
    "locate_triton",
]
