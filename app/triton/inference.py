"""Inference on the asyncio loop: requests go to Triton through the compiled shim,
responses come back through an eventfd the loop watches.

Nothing here blocks: ``submit`` only enqueues in Triton, and Triton's threads
never run Python.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.triton import _shim
from app.triton.errors import TritonError, UnavailableError, error_from_code
from app.triton.tensors import DataType, Tensor, deserialize_bytes_tensor, element_count

__all__ = ["AsyncResponseIterator", "InferenceRequest", "InferenceResponse", "ServerHandle"]

ParameterValue = str | int | float | bool
InputValue = Tensor | npt.NDArray[Any] | Sequence[Any]


class ServerHandle(Protocol):
    """What inference needs of a server (``app.triton.server.Server``): the address of
    its ``TRITONSERVER_Server``. Streams keep a weak reference to it, so a stopped
    server can end exactly its own requests."""

    def handle(self) -> int: ...


_NUMERIC_CODES: dict[np.dtype[Any], int] = {
    dt.numpy_dtype: int(dt) for dt in DataType if dt not in (DataType.INVALID, DataType.BYTES)
}


@dataclass(slots=True)
class InferenceRequest:
    """One request to one model, in the official in-process API's terms.

    ``inputs`` values may be numpy arrays (numeric arrays that are C-contiguous
    are handed to Triton without a copy and kept alive until Triton releases
    them), ``Tensor`` objects, or nested lists/strings (converted with numpy).
    """

    model_name: str
    model_version: int = -1
    inputs: Mapping[str, InputValue] = field(default_factory=dict)
    request_id: str = ""
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    output_names: Sequence[str] | None = None
    priority: int = 0
    timeout_us: int = 0
    correlation_id: int | str | None = None
    flags: int = 0


@dataclass(slots=True)
class InferenceResponse:
    """One response. Decoupled models send several; the last has ``final=True``.

    ``outputs`` maps names to numpy arrays; BYTES outputs are object arrays of
    ``bytes``. ``error`` is set when Triton reported a failure for the request.
    """

    model_name: str
    model_version: int
    request_id: str
    outputs: dict[str, npt.NDArray[Any]]
    parameters: dict[str, ParameterValue]
    final: bool
    error: TritonError | None = None


def _encode_inputs(inputs: Mapping[str, InputValue]) -> list[tuple[str, int, tuple[int, ...], Any]]:
    encoded = []
    for name, value in inputs.items():
        if isinstance(value, np.ndarray):
            code = _NUMERIC_CODES.get(value.dtype)
            if code is not None and value.flags.c_contiguous:
                encoded.append((name, code, value.shape, value))
                continue
            value = Tensor.from_numpy(value)
        elif not isinstance(value, Tensor):
            value = Tensor.from_numpy(np.asarray(value))
        encoded.append((name, int(value.data_type), value.shape, value.buffer))
    return encoded


def _decode_outputs(raw: list[tuple[str, int, tuple[int, ...], Any]]) -> dict[str, Any]:
    outputs: dict[str, npt.NDArray[Any]] = {}
    for name, code, shape, buffer in raw:
        data_type = DataType(code)
        if data_type is DataType.BYTES:
            outputs[name] = deserialize_bytes_tensor(buffer, element_count(shape)).reshape(shape)
        else:
            outputs[name] = np.frombuffer(buffer, dtype=data_type.numpy_dtype).reshape(shape)
    return outputs


class _Stream:
    """Responses of one request, handed from the dispatcher to its iterator."""

    __slots__ = ("done", "items", "model_name", "server_ref", "waiter")

    def __init__(self, server: ServerHandle, model_name: str) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.server_ref = weakref.ref(server)
        self.model_name = model_name

    def push(self, item: Any) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Dispatcher:
    """One per event loop: owns a completion queue and routes its responses."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: when the loop is gone, this dispatcher and its queue go too, and
        # the shim frees whatever Triton still sends to it.
        self.loop_ref = weakref.ref(loop)
        self.queue = _shim.CompletionQueue()
        self.streams: dict[int, _Stream] = {}
        loop.add_reader(self.queue.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        streams = self.streams
        for item in self.queue.drain():
            key, final = item[0], item[1]
            stream = streams.pop(key, None) if final else streams.get(key)
            if stream is not None:
                stream.push(item)

    def fail_server(self, server: ServerHandle, error: TritonError) -> None:
        """End every open stream of ``server`` (it stopped; Triton will not answer)."""
        self._on_readable()  # deliver what Triton completed before it stopped
        for key, stream in list(self.streams.items()):
            if stream.server_ref() is server:
                del self.streams[key]
                stream.push((key, True, (error.code, error.message), [], {}))

    def fail_model(self, server: ServerHandle, model_name: str, error: TritonError) -> None:
        """End every open stream of ``model_name`` on ``server`` (Triton will not
        answer them: the model's backend process died)."""
        self._on_readable()
        for key, stream in list(self.streams.items()):
            if stream.server_ref() is server and stream.model_name == model_name:
                del self.streams[key]
                stream.push((key, True, (error.code, error.message), [], {}))


_DISPATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Dispatcher] = (
    weakref.WeakKeyDictionary()
)
_KEYS = itertools.count(1)


def dispatcher_for(loop: asyncio.AbstractEventLoop) -> _Dispatcher:
    found = _DISPATCHERS.get(loop)
    if found is None:
        found = _DISPATCHERS[loop] = _Dispatcher(loop)
    return found


def all_dispatchers() -> list[_Dispatcher]:
    return list(_DISPATCHERS.values())


class AsyncResponseIterator:
    """Async iterator over the responses of one request.

    Cancelling the task that awaits it (e.g. on client disconnect), or calling
    ``cancel()``, asks Triton to cancel the request.
    """

    def __init__(
        self,
        server: ServerHandle,
        request: InferenceRequest,
        *,
        raise_on_error: bool = True,
    ) -> None:
        self._request = request
        self._raise_on_error = raise_on_error
        self._finished = False
        loop = asyncio.get_running_loop()
        dispatcher = dispatcher_for(loop)
        self._stream = _Stream(server, request.model_name)
        key = next(_KEYS)
        try:
            self._pending = _shim.submit(
                server.handle(),
                dispatcher.queue,
                key,
                request.model_name,
                request.model_version,
                request.request_id or None,
                _encode_inputs(request.inputs),
                list(request.output_names) if request.output_names is not None else None,
                list(request.parameters.items()) if request.parameters else None,
                request.priority,
                request.timeout_us,
                request.correlation_id,
                request.flags,
            )
        except ValueError as exc:  # numpy could not convert an input
            raise error_from_code(3, f"invalid input: {exc}") from exc
        dispatcher.streams[key] = self._stream

    def __aiter__(self) -> AsyncResponseIterator:
        return self

    async def __anext__(self) -> InferenceResponse:
        stream = self._stream
        while not stream.items:
            if self._finished:
                raise StopAsyncIteration
            stream.waiter = asyncio.get_running_loop().create_future()
            try:
                await stream.waiter
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                stream.waiter = None
        _key, final, error, outputs, parameters = stream.items.popleft()
        if final:
            self._finished = True
        response = InferenceResponse(
            model_name=self._request.model_name,
            model_version=self._request.model_version,
            request_id=self._request.request_id,
            outputs=_decode_outputs(outputs) if outputs else {},
            parameters=parameters,
            final=final,
            error=error_from_code(*error) if error is not None else None,
        )
        if response.error is not None and self._raise_on_error:
            if not final:
                self.cancel()
            self._finished = True
            raise response.error
        return response

    def cancel(self) -> None:
        """Ask Triton to stop this request (best effort); responses may still arrive."""
        if not self._finished:
            with contextlib.suppress(TritonError):
                self._pending.cancel()


async def infer_once(server: ServerHandle, request: InferenceRequest) -> InferenceResponse:
    """Run a request and return its one response with outputs (the last, for decoupled models)."""
    result: InferenceResponse | None = None
    async for response in AsyncResponseIterator(server, request):
        if result is None or response.outputs:
            result = response
    if result is None:
        raise UnavailableError(f"model '{request.model_name}' sent no response")
    result.final = True
    return result
