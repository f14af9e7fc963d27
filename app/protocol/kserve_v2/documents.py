"""Pydantic models of the KServe v2 JSON documents, as Triton's HTTP server speaks them.

Request models are strict (``extra="forbid"``, no coercion): a client that sends
``"shape": ["3"]`` gets a 400 naming the field instead of a silent guess. Only
``parameters`` objects are open, because the protocol lets clients put any
scalar there.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, TypeVar

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
)

from app.errors import BadRequest

__all__ = [
    "ErrorResponse",
    "InferInputTensor",
    "InferOutputTensor",
    "InferRequest",
    "InferRequestedOutput",
    "InferResponse",
    "LoadRequest",
    "MetadataTensor",
    "ModelMetadata",
    "ParameterValue",
    "Parameters",
    "RepositoryIndexEntry",
    "RepositoryIndexRequest",
    "ServerMetadata",
    "UnloadParameters",
    "UnloadRequest",
    "format_validation_error",
    "load_json",
    "parse_body",
]

ParameterValue = bool | int | float | str


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", type(None): "null", str: "string"}
    return names.get(type(value), type(value).__name__)


def _scalar(value: Any) -> ParameterValue:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"a parameter must be a bool, int, float or string, got {_json_type(value)}")


# One readable error instead of one per union member.
Parameters = dict[
    str, Annotated[ParameterValue, PlainValidator(_scalar, json_schema_input_type=ParameterValue)]
]

_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferInputTensor(_Strict):
    name: str = Field(min_length=1, description="Input tensor name.")
    shape: list[int] = Field(description="Tensor shape; every dimension >= 0.")
    datatype: str = Field(description='KServe datatype, e.g. "FP32", "BYTES".')
    parameters: Parameters | None = Field(
        default=None, description="Per-input parameters, e.g. binary_data_size."
    )
    data: Any = Field(
        default=None, description="Row-major elements, flat or nested lists (JSON inputs)."
    )


class InferRequestedOutput(_Strict):
    name: str = Field(min_length=1, description="Output tensor name.")
    parameters: Parameters | None = Field(
        default=None, description="Per-output parameters: binary_data, classification."
    )


class InferRequest(_Strict):
    id: str | None = Field(default=None, description="Request id echoed in the response.")
    parameters: Parameters | None = Field(default=None, description="Request parameters.")
    inputs: list[InferInputTensor] = Field(description="Input tensors.")
    outputs: list[InferRequestedOutput] | None = Field(
        default=None, description="Outputs to return; all of them when absent."
    )


class InferOutputTensor(_Document):
    name: str = Field(description="Output tensor name.")
    datatype: str = Field(description="KServe datatype of the output.")
    shape: list[int] = Field(description="Output shape.")
    parameters: Parameters | None = Field(
        default=None, description="binary_data_size when the data follows the JSON."
    )
    data: list[Any] | None = Field(default=None, description="Flat row-major elements.")


class InferResponse(_Document):
    id: str | None = Field(default=None, description="The request's id, when it had one.")
    model_name: str = Field(description="Model that produced the response.")
    model_version: str | None = Field(default=None, description="Version that ran.")
    parameters: Parameters | None = Field(default=None, description="Response parameters.")
    outputs: list[InferOutputTensor] = Field(description="Output tensors.")


class ErrorResponse(_Document):
    error: str = Field(description="Human-readable error message.")


class ServerMetadata(_Document):
    name: str = Field(description='Server name ("triton").')
    version: str = Field(description="Server version.")
    extensions: list[str] = Field(default_factory=list, description="Supported extensions.")


class MetadataTensor(_Document):
    name: str = Field(description="Tensor name.")
    datatype: str = Field(description="KServe datatype.")
    shape: list[int] = Field(description="Shape; -1 for variable dimensions (and batch).")


class ModelMetadata(_Document):
    name: str = Field(description="Model name.")
    versions: list[str] = Field(default_factory=list, description="Available versions.")
    platform: str = Field(description='Backend platform, e.g. "onnxruntime_onnx".')
    inputs: list[MetadataTensor] = Field(default_factory=list, description="Model inputs.")
    outputs: list[MetadataTensor] = Field(default_factory=list, description="Model outputs.")


class RepositoryIndexRequest(_Strict):
    ready: bool = Field(default=False, description="List only models that are ready.")


class RepositoryIndexEntry(_Document):
    name: str = Field(description="Model name.")
    version: str | None = Field(default=None, description="Model version.")
    state: str | None = Field(default=None, description="READY, UNAVAILABLE, LOADING, ...")
    reason: str | None = Field(default=None, description="Why the model is in that state.")


def _check_file_key(key: str) -> None:
    """``file:<relative path>`` must stay inside the model directory."""
    path = key[len("file:") :]
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(f"key {key!r} must name a relative path inside the model")


class LoadRequest(_Strict):
    """Body of ``POST /v2/repository/models/{m}/load``.

    ``config`` overrides the model configuration (JSON text); ``file:<path>``
    keys carry base64 file contents that replace the repository's files.
    """

    parameters: dict[str, str] = Field(
        default_factory=dict, description='"config" (JSON text) and "file:<path>" (base64).'
    )

    @field_validator("parameters")
    @classmethod
    def _known_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key == "config":
                try:
                    doc = json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"'config' is not valid JSON: {exc}") from None
                if not isinstance(doc, dict):
                    raise ValueError("'config' must be a JSON object")
            elif key.startswith("file:"):
                _check_file_key(key)
            else:
                raise ValueError(f"unknown key {key!r}; expected 'config' or 'file:<path>'")
        return value

    def names_files(self) -> bool:
        """Whether the request overrides repository files (needs operator consent)."""
        return any(key.startswith("file:") for key in self.parameters)

    @property
    def config(self) -> str | None:
        """The configuration override as JSON text, if any."""
        return self.parameters.get("config")

    def files(self) -> dict[str, bytes]:
        """Decoded ``file:`` parameters, keyed as sent; ``BadRequest`` on bad base64."""
        out: dict[str, bytes] = {}
        for key, text in self.parameters.items():
            if key.startswith("file:"):
                try:
                    out[key] = base64.b64decode(text, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(
                        f"parameters: {key!r} is not valid base64", param=f"parameters.{key}"
                    ) from None
        return out


class UnloadParameters(_Strict):
    unload_dependents: bool = Field(
        default=False, description="Also unload models that depend on this one."
    )


class UnloadRequest(_Strict):
    parameters: UnloadParameters = Field(
        default_factory=UnloadParameters, description="Unload options."
    )


def _loc_text(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_validation_error(exc: ValidationError, document: Any = None) -> str:
    """One line naming the first failing field; inputs/outputs are named by tensor name."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    if (
        len(loc) >= 2
        and loc[0] in ("inputs", "outputs")
        and isinstance(loc[1], int)
        and isinstance(document, dict)
    ):
        items = document.get(loc[0])
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            kind = "input" if loc[0] == "inputs" else "output"
            field = _loc_text(loc[2:]) or "(tensor)"
            return f"{kind} '{name}': field '{field}': {msg}"
    return f"field '{_loc_text(loc) or '(body)'}': {msg}"


def load_json(body: bytes | bytearray | memoryview | str, what: str = "request body") -> Any:
    """Parse JSON text; ``BadRequest`` for anything that is not JSON."""
    try:
        return pydantic_core.from_json(bytes(body) if isinstance(body, memoryview) else body)
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def parse_body(model: type[_M], body: bytes, *, allow_empty: bool = False) -> _M:
    """Validate a JSON body against ``model``; ``BadRequest`` names the field at fault.

    ``allow_empty``: an empty (or all-whitespace) body means ``{}``, as Triton
    accepts for repository and load requests.
    """
    if allow_empty and not body.strip():
        document: Any = {}
    else:
        document = load_json(body)
    if not isinstance(document, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BadRequest(format_validation_error(exc, document)) from None
