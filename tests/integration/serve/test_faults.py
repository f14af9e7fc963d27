"""A replica killed in the middle of a load is replaced; requests resume."""

from __future__ import annotations

import json
import threading
import time

import httpx
import ray

BODY = json.dumps(
    {"inputs": [{"name": "INPUT_FP32", "shape": [1, 1], "datatype": "FP32", "data": [5.0]}]}
)


def _echo_replicas() -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::triton#echo#")
    ]


def test_replica_killed_mid_load_is_replaced(serve_url: str) -> None:
    (victim,) = _echo_replicas()
    load_status: list[int] = []

    def load() -> None:
        response = httpx.post(f"{serve_url}/v2/repository/models/echo/load", timeout=120)
        load_status.append(response.status_code)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.3)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    loader.join(timeout=120)
    # The load either finished before the kill or fails cleanly: never a 500, never a hang.
    assert load_status and load_status[0] in (200, 503), load_status

    deadline = time.monotonic() + 120
    while True:
        response = httpx.post(f"{serve_url}/v2/models/echo/infer", content=BODY, timeout=30)
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "echo did not come back"
        time.sleep(1)
    assert response.json()["outputs"][0]["data"] == [5.0]
    assert _echo_replicas() and _echo_replicas() != [victim]
