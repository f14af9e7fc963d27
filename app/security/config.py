"""Configuration of the router's edge: API keys and their limits (``AppConfig.security``).

Parsing is pure, like the rest of ``app.config``: the key file is read by the
router replica (``KeyRing.from_file``), where the Kubernetes Secret is mounted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KeyLimits", "SecurityConfig"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyLimits(_Config):
    """Per-key limits; a key in the key file may override each of them."""

    requests_per_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Sustained requests per second per key (token bucket); None: unlimited.",
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        description="Requests a key may send at once above its rate (bucket size); "
        "default: requests_per_s rounded up.",
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, description="Requests of one key in flight at once; None: unlimited."
    )


class SecurityConfig(_Config):
    """API keys on HTTP (``Authorization: Bearer <key>``). Off when no key file is set."""

    api_keys_file: str | None = Field(
        default=None,
        min_length=1,
        description="YAML or JSON file of API keys (in Kubernetes a mounted Secret); "
        "unset: no authentication.",
    )
    reload_interval_s: float = Field(
        default=30.0,
        ge=0,
        allow_inf_nan=False,
        description="How often the router checks the key file for changes (0: never); "
        "a file that no longer parses keeps the previous keys.",
    )
    metrics_require_key: bool = Field(
        default=True,
        description="Whether GET /metrics needs a key (false for an in-cluster scraper).",
    )
    default_limits: KeyLimits = Field(
        default_factory=KeyLimits,
        description="Limits of keys that set none of their own. With several router "
        "replicas each enforces limits / router.num_replicas.",
    )
