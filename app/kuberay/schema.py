"""KubeRay CRD schemas, validated the way an API server does: unknown fields refused.

A CRD's ``openAPIV3Schema`` does not set ``additionalProperties: false``; the API
server (and ``kubectl apply``'s strict field validation) refuses unknown fields anyway,
because the schema is structural. ``strict`` adds that rule to every object schema
that lists its properties, so a JSON Schema validator refuses ``upgradeStrategyy`` too.

Copies live in ``tests/schemas/`` as ``rayservices-v<version>.json.gz`` (descriptions
stripped): ``python -m app.kuberay import-crd <crd.yaml> <out.json.gz>`` writes one.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["crd_schema", "load_schema", "strict", "validate", "write_schema"]

_OPEN = ("additionalProperties", "x-kubernetes-preserve-unknown-fields")


def crd_schema(crd_text: str, version: str = "v1") -> dict[str, Any]:
    """The ``openAPIV3Schema`` of API version ``version`` of a CRD, descriptions stripped."""
    crd = yaml.load(crd_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema: dict[str, Any] = _strip(served["schema"]["openAPIV3Schema"])
            schema["x-crd"] = {"name": crd["metadata"]["name"], "version": version}
            return schema
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version}")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def write_schema(crd_path: Path, out: Path) -> None:
    text = json.dumps(crd_schema(crd_path.read_text()), sort_keys=True, separators=(",", ":"))
    out.write_bytes(gzip.compress(text.encode(), mtime=0))


def load_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return schema


def strict(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on every object schema that has
    ``properties`` and does not allow unknown fields itself."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if "properties" in out and not any(k in out for k in _OPEN):
        out["additionalProperties"] = False
    return out


def validate(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Errors of ``document`` against the strict form of ``schema`` ("path: message")."""
    import jsonschema  # type: ignore[import-untyped]

    validator = jsonschema.Draft7Validator(strict(schema))
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )
