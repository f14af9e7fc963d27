"""Requests the fault tests send, with the answer each must give."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

ECHO_DATA = [1.5, -2.0, 3.25]
ECHO_BODY: dict[str, object] = {
    "inputs": [{"name": "INPUT_FP32", "shape": [1, 3], "datatype": "FP32", "data": ECHO_DATA}]
}


def echo_body(delay_ms: int = 0) -> dict[str, object]:
    if not delay_ms:
        return ECHO_BODY
    return {**ECHO_BODY, "parameters": {"delay_ms": delay_ms}}


def echo_answered(response: httpx.Response) -> bool:
    """200 with echo's output equal to its input."""
    if response.status_code != 200:
        return False
    outputs = response.json()["outputs"]
    return bool(outputs[0]["name"] == "OUTPUT_FP32" and outputs[0]["data"] == ECHO_DATA)


def assert_unavailable(response: httpx.Response, *words: str) -> None:
    """A 503 in Triton's error shape, with Retry-After, naming ``words``."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    assert int(response.headers["retry-after"]) >= 1
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def stub_death_aborted_replica(message: str, model: str) -> bool:
    """Whether a call to ``model`` ended because its replica died, not its stub: Triton's
    python backend aborts its whole process when a stub dies holding the lock of a
    decoupled response it is sending (docs/benchmarks.md), and Serve replaces it."""
    return message.startswith(f"model '{model}': its replica is unavailable")


def echo(url: str, delay_ms: int = 0, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/echo/infer", json=echo_body(delay_ms), timeout=timeout)


def stream_tokens(url: str, count: int) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/models/streamer/generate_stream", json={"COUNT": count}, timeout=60
    )


def streamed_in_order(response: httpx.Response, count: int) -> bool:
    expected = "".join(
        f'data: {{"model_name":"streamer","model_version":"1","INDEX":{i},"TEXT":"token-{i}"}}\n\n'
        for i in range(count)
    )
    return response.status_code == 200 and response.text == expected


def until_answered(
    send: Callable[[], httpx.Response],
    answered: Callable[[httpx.Response], bool],
    bound_s: float,
    allowed: Callable[[httpx.Response], None] | None = None,
) -> float:
    """Seconds until ``send()`` is ``answered``; every other answer meanwhile must pass
    ``allowed`` (by default: a JSON 503 with Retry-After). Fails past ``bound_s``."""
    started = time.monotonic()
    while True:
        response = send()
        if answered(response):
            return time.monotonic() - started
        (allowed or assert_unavailable)(response)
        assert time.monotonic() - started < bound_s, f"not answered within {bound_s} s"
        time.sleep(0.25)
