"""What the gRPC tests share: call metadata, status codes, stream collection."""

from __future__ import annotations

import queue
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient._plugin import InferenceServerClientPlugin
from tritonclient.utils import InferenceServerException


class Metadata(InferenceServerClientPlugin):
    """Adds metadata entries to every call of a client (streams included)."""

    def __init__(self, **entries: str) -> None:
        self.entries = entries

    def __call__(self, request: Any) -> None:
        request.headers = {**(request.headers or {}), **self.entries}


def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(InferenceServerException) as info:
        call()
    status = info.value.status()
    assert status is not None, info.value
    return next(code for code in grpc.StatusCode if str(code) == status)


def echo_input(name: str, data: np.ndarray, datatype: str) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


class Collector:
    """Stream callback results, in arrival order."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def __call__(self, result: Any, error: Any) -> None:
        self.items.put((result, error))

    def take(self, n: int, timeout: float = 60) -> list[tuple[Any, Any]]:
        return [self.items.get(timeout=timeout) for _ in range(n)]

    def take_until_error(self, n: int, timeout: float = 60) -> list[tuple[Any, Any]]:
        """Up to ``n`` items, stopping at the first error: a stream that asked for
        ``triton_grpc_error`` ends at its error, so nothing follows it."""
        items: list[tuple[Any, Any]] = []
        while len(items) < n:
            items.append(self.items.get(timeout=timeout))
            if items[-1][1] is not None:
                break
        return items


def is_final(result: Any) -> bool | None:
    final = result.get_response().parameters.get("triton_final_response")
    return None if final is None else bool(final.bool_param)
