"""A real Ray cluster serving a pool of eight generated CPU models (``pool-00`` ..
``pool-07``, ~40-90 MiB each as measured) in a 0.2 GiB budget that holds about three,
``pool-00`` pinned; plus ``huge`` (declares 1 GiB) and ``broken`` (fails to load).
``pool-split`` is a public name split between ``pool-03`` and ``pool-04``."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.longtail_models import write_repository
from tests.support.stack import local_stack

APP_NAME = "residency"
BUDGET_GB = 0.2
MIN_RESIDENT_S = 0.0


def pool_args(repository: Path) -> dict[str, Any]:
    return {
        "model_repository": str(repository),
        "triton": {"log_info": False},
        "router": {"num_cpus": 0.1, "request_timeout_s": 240},
        "deployments": [
            {
                "name": "pool",
                "models": ["pool-*", "huge", "broken"],
                "num_cpus": 0.25,
                "residency": {
                    "memory_budget_gb": BUDGET_GB,
                    "pinned": ["pool-00"],
                    "min_resident_s": MIN_RESIDENT_S,
                },
            }
        ],
        "traffic": {
            "pool-split": {
                "targets": [{"model": "pool-03", "weight": 1}, {"model": "pool-04", "weight": 1}]
            }
        },
    }


@pytest.fixture(scope="package")
def pool_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pool") / "repository"
    write_repository(root, count=8)
    huge = root / "huge"
    shutil.copytree(root / "pool-01", huge)
    config = (huge / "config.pbtxt").read_text().replace('"pool-01"', '"huge"')
    config += 'parameters { key: "declared_memory_bytes" value: { string_value: "1073741824" } }\n'
    (huge / "config.pbtxt").write_text(config)
    broken = root / "broken"
    shutil.copytree(root / "pool-02", broken)
    (broken / "config.pbtxt").write_text(
        (broken / "config.pbtxt").read_text().replace('"pool-02"', '"broken"')
    )
    model = broken / "1" / "model.py"
    model.write_text(
        model.read_text().replace(
            "        parameters = json.loads",
            "        raise RuntimeError('weights are missing')\n        parameters = json.loads",
        )
    )
    return root


@pytest.fixture(scope="package")
def pool_url(pool_repository: Path) -> Iterator[str]:
    with local_stack(pool_args(pool_repository), name=APP_NAME) as stack:
        yield stack.url


def infer(
    url: str, model: str, value: float = 1.0, timeout: float = 120, delay_ms: int = 0
) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [value]}]
    }
    if delay_ms:
        body["parameters"] = {"delay_ms": delay_ms}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=timeout)


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples over replicas, from the router's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def index(url: str) -> dict[str, dict[str, Any]]:
    entries = httpx.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
    return {e["name"]: e for e in entries}
