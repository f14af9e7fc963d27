"""The API key file and the in-memory key ring (SHA-256 digests only, never the keys).

Key file (YAML or JSON)::

    keys:
      - name: team-a              # shows in logs and errors; never the key itself
        key: "s3cr3t-..."          # the key, or instead:
        # sha256: "<hex digest>"  # its SHA-256, so the Secret need not hold keys
        models: [echo, minilm]    # models it may use, or "*"
        repository: false         # load / unload / index (default false)
        requests_per_s: 20        # optional limits (else security.default_limits)
        burst: 40
        max_concurrent: 8
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.config import validate_model_name
from app.security.config import KeyLimits

__all__ = ["ApiKey", "KeyFile", "KeyRing", "digest_of", "load_key_file"]

MIN_KEY_LENGTH = 16
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(key: str) -> str:
    """The SHA-256 hex digest a key is stored and looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One key of the key file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="Label for logs and errors.")
    key: str | None = Field(
        default=None, min_length=MIN_KEY_LENGTH, description="The key (plain text)."
    )
    sha256: str | None = Field(default=None, description="SHA-256 hex digest of the key.")
    models: list[str] | Literal["*"] = Field(
        default_factory=list, description='Models the key may use, or "*" for all.'
    )
    repository: bool = Field(
        default=False, description="Whether the key may use the repository API."
    )
    requests_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    burst: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_DIGEST.match(value.lower()):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value.lower() if value is not None else None

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | Literal["*"]) -> list[str] | Literal["*"]:
        if isinstance(value, list):
            for i, name in enumerate(value):
                try:
                    validate_model_name(name)
                except ValueError as exc:
                    raise ValueError(f"models[{i}]: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r}: set exactly one of 'key' and 'sha256'")
        return self


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[KeyEntry] = Field(description="The API keys.")

    @field_validator("keys")
    @classmethod
    def _unique(cls, value: list[KeyEntry]) -> list[KeyEntry]:
        names: set[str] = set()
        digests: set[str] = set()
        for i, entry in enumerate(value):
            digest = entry.sha256 or digest_of(entry.key or "")
            if entry.name in names:
                raise ValueError(f"keys[{i}].name: {entry.name!r} is used twice")
            if digest in digests:
                raise ValueError(f"keys[{i}]: the same key is listed twice")
            names.add(entry.name)
            digests.add(digest)
        return value


@dataclass(frozen=True)
class ApiKey:
    """An authenticated caller: what it may use and its limits."""

    name: str
    models: frozenset[str] | None  # None: every model
    repository: bool
    limits: KeyLimits

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


class KeyRing:
    """Keys by digest; ``lookup`` hashes the presented key and compares digests."""

    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._by_digest = dict(keys)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._by_digest.values())

    def lookup(self, presented: str) -> ApiKey | None:
        """The key whose digest matches. Timing can reveal at most digest prefixes
        (dict lookup), which says nothing about the key itself."""
        return self._by_digest.get(digest_of(presented))

    @classmethod
    def from_document(cls, document: Any, defaults: KeyLimits) -> KeyRing:
        parsed = KeyFile.model_validate(document)
        keys: dict[str, ApiKey] = {}
        for entry in parsed.keys:
            own = {
                k: getattr(entry, k)
                for k in ("requests_per_s", "burst", "max_concurrent")
                if getattr(entry, k) is not None
            }
            limits = defaults.model_copy(update=own) if own else defaults
            keys[entry.sha256 or digest_of(entry.key or "")] = ApiKey(
                name=entry.name,
                models=None if entry.models == "*" else frozenset(entry.models),
                repository=entry.repository,
                limits=limits,
            )
        return cls(keys)


def load_key_file(path: str, defaults: KeyLimits) -> KeyRing:
    """Read and validate a key file; ``ValueError`` naming the file and the field."""
    where = f"security.api_keys_file ({path!r})"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    try:
        document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(
            f"{where}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}"
        ) from None
    try:
        return KeyRing.from_document(document, defaults)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: {problems}") from None
