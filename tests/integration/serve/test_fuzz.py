"""Schemathesis against the router's own OpenAPI document, on the real stack.

Every operation under /v2 (and /metrics) gets generated requests, valid and
invalid; model path parameters are drawn from the served models, so requests
reach real replicas and Triton. No answer may be a server fault and none may
hang. 501 (unsupported feature) and 503 (model not ready, with Retry-After) are
legitimate answers, not faults.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

# Placed and quick to answer. 'versioned' is left out: its deployment cannot be
# placed, so its requests wait for the whole request timeout (a 408 after 60 s).
SERVED_MODELS = ["echo", "streamer", "ensemble_pipeline", "ens_scale", "invalid_config"]
CALL_TIMEOUT_S = 20
EXAMPLES = 25  # per operation and mode; about a minute on 2 cores


def router_schema(serve_url: str) -> Any:
    """The router's OpenAPI document, with model path parameters drawn from the served
    models (arbitrary names only reach the 404 check, which the repository routes,
    left as they are, still exercise)."""
    document = httpx.get(f"{serve_url}/openapi.json", timeout=30).json()
    document["paths"] = {
        path: operations
        for path, operations in document["paths"].items()
        if path.startswith(("/v2", "/v1")) or path == "/metrics"
    }
    for path, operations in document["paths"].items():
        if path.startswith("/v2/repository/"):
            continue  # arbitrary names only: never unload a model other tests use
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "model":
                    parameter["schema"] = {"enum": [*SERVED_MODELS, "no_such_model"]}
    return schemathesis.openapi.from_dict(document)


def check_no_server_fault(response: Any) -> None:
    status = response.status_code
    if status < 500:
        return
    assert status in (501, 503), f"{status}: {response.text[:500]}"
    assert set(response.json()) == {"error"}, response.text[:500]
    if status == 503:
        assert response.headers.get("retry-after"), "503 without Retry-After"


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_router_api_has_no_server_faults(serve_url: str, mode: Any) -> None:
    schema = router_schema(serve_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    calls: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call(base_url=serve_url, timeout=CALL_TIMEOUT_S)
            calls.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
            check_no_server_fault(response)

        try:
            fuzz()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    assert len(calls) >= len(operations) // 2
    print(f"{len(calls)} {mode.value} requests, statuses:", Counter(c[-3:] for c in calls))
