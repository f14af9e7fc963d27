"""The ``traffic`` section: public model names routed to weighted targets.

Parsing is pure. ``check_traffic`` does the checks that need the rest of the
application (which models exist, which are on ``/v1``); ``AppConfig`` runs it at
build and the router again when Serve hands it new weights. Every error names the
field path at fault.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "MirrorConfig",
    "StickyConfig",
    "TargetConfig",
    "TrafficRouteConfig",
    "check_traffic",
    "parse_traffic",
    "target_label",
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Versioned(_Config):
    """A model and an optional version, as a path segment of Triton's URLs."""

    @field_validator("version", mode="before", check_fields=False)
    @classmethod
    def _as_text(cls, value: object) -> object:
        """YAML reads ``version: 2`` as a number; Triton's versions are path segments."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("version", check_fields=False)
    @classmethod
    def _positive(cls, value: str | None) -> str | None:
        if value is not None and not (value.isdigit() and int(value) > 0):
            raise ValueError(f"version {value!r} must be a positive whole number")
        return value


def target_label(model: str, version: str | None) -> str:
    """How a target is shown: ``model/version``, or ``model`` when Triton picks the version."""
    return f"{model}/{version}" if version else model


class TargetConfig(_Versioned):
    """One model (optionally one version of it) and its share of the traffic."""

    model: str = Field(min_length=1, description="A model served by this application.")
    version: str | None = Field(
        default=None, description="A version of the model (default: Triton's policy picks)."
    )
    weight: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="Relative share; 0 takes none (kept for failover and later updates).",
    )


class MirrorConfig(_Versioned):
    """Shadow traffic: a copy of some requests, answered and discarded."""

    model: str = Field(min_length=1, description="A model served by this application.")
    version: str | None = Field(default=None, description="A version of the mirror model.")
    percent: float = Field(
        gt=0, le=100, allow_inf_nan=False, description="Share of requests copied (0 < p <= 100)."
    )
    max_in_flight: int = Field(
        default=32,
        ge=1,
        description="Copies in flight per router replica; beyond it copies are dropped "
        "(and counted), as they are when the mirror's deployment is busy.",
    )


class StickyConfig(_Config):
    """Which request property keeps a client on one target while weights are unchanged."""

    header: str | None = Field(
        default=None,
        min_length=1,
        description="Request header (gRPC: metadata) whose value is the session key.",
    )
    api_key: bool = Field(
        default=False,
        description="Use the caller's API key (its name) as the key when the header is "
        "absent or not configured.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> StickyConfig:
        if self.header is None and not self.api_key:
            raise ValueError("set header, api_key: true, or both")
        return self

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"header {value!r} must be letters, digits, '-' or '_'")
        return value.lower() if value is not None else None


class TrafficRouteConfig(_Config):
    """A public model name and where its requests go."""

    targets: list[TargetConfig] = Field(
        min_length=1, description="Weighted targets; the first also answers metadata/config."
    )
    mirror: MirrorConfig | None = Field(default=None, description="Shadow traffic, if any.")
    sticky: StickyConfig | None = Field(
        default=None, description="Keep a session on one target (default: random by weight)."
    )
    on_unavailable: Literal["failover", "fail"] = Field(
        default="failover",
        description="A target answering 503 before taking the request: 'failover' tries "
        "the others by weight, 'fail' returns the 503.",
    )

    @field_validator("targets")
    @classmethod
    def _weights(cls, value: list[TargetConfig]) -> list[TargetConfig]:
        if sum(t.weight for t in value) <= 0:
            raise ValueError("the total weight of the targets must be > 0")
        seen: dict[tuple[str, str | None], int] = {}
        for i, target in enumerate(value):
            key = (target.model, target.version)
            if key in seen:
                raise ValueError(
                    f"targets[{i}]: {target_label(*key)!r} is also targets[{seen[key]}]"
                )
            seen[key] = i
        return value


def check_traffic(
    routes: dict[str, TrafficRouteConfig],
    openai_tasks: dict[str, str | None],
    pool_globs: Sequence[str] = (),
) -> None:
    """Routes against the application's models (``openai_tasks``: every model, with
    its ``/v1`` task or None): a public name must not be a model, targets and mirrors
    must be models (routes do not nest, so there are no cycles), and a route's
    targets share one ``/v1`` exposure. A name that one of ``pool_globs`` (globs in
    deployments' ``models``) matches passes here and is checked again once the globs
    are resolved against the repository. Raises ``ValueError`` naming the field."""
    for name, route in routes.items():
        where = f"traffic.{name}"
        if name in openai_tasks:
            raise ValueError(f"{where}: public name {name!r} is already a model of a deployment")
        _check_public_name(where, name)
        first_task = openai_tasks.get(route.targets[0].model)
        for i, target in enumerate(route.targets):
            field = f"{where}.targets[{i}].model"
            _check_model(field, target.model, routes, openai_tasks, pool_globs)
            task = openai_tasks.get(target.model)
            if task != first_task:
                raise ValueError(
                    f"{field}: {target.model!r} is on /v1 as {task!r} but targets[0] as "
                    f"{first_task!r}; a route's targets answer the same API"
                )
            if task is not None and target.version is not None:
                raise ValueError(
                    f"{where}.targets[{i}].version: /v1 has no versions; route whole models"
                )
        if route.mirror is not None:
            _check_model(
                f"{where}.mirror.model", route.mirror.model, routes, openai_tasks, pool_globs
            )


def _check_public_name(where: str, name: str) -> None:
    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise ValueError(f"{where}: {name!r} is not usable as a model name in a URL")


def _check_model(
    field: str,
    model: str,
    routes: dict[str, TrafficRouteConfig],
    openai_tasks: dict[str, str | None],
    pool_globs: Sequence[str],
) -> None:
    if model in routes:
        raise ValueError(f"{field}: {model!r} is a traffic route; routes do not nest")
    if model in openai_tasks or any(fnmatch.fnmatchcase(model, g) for g in pool_globs):
        return
    raise ValueError(f"{field}: {model!r} is not a model of any deployment")


def parse_traffic(user_config: object) -> dict[str, TrafficRouteConfig]:
    """The router's Serve ``user_config`` (``{"traffic": {...}}``) as routes; a
    ``ValueError`` names the field."""
    if not isinstance(user_config, dict) or set(user_config) - {"traffic"}:
        raise ValueError("user_config: expected a mapping with only the key 'traffic'")
    try:
        return _ROUTES.validate_python(user_config.get("traffic") or {})
    except ValidationError as exc:
        raise ValueError(f"user_config.traffic: {exc}") from None


_ROUTES = TypeAdapter(dict[str, TrafficRouteConfig])
