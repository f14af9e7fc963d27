"""Decoupled streaming model for the streaming, cancellation and shutdown tests.

Each request gets COUNT responses (INDEX=i, TEXT="token-i"), DELAY_MS apart, and
then the final flag on its own, so clients can test "final without data" handling.
Every request is served on its own thread so that slow streams do not queue
behind each other on the single instance; cancellation stops a stream early.
"""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_POLL_S = 0.005


class TritonPythonModel:
    def initialize(self, args):
        self._lock = threading.Lock()
        self._threads = set()

    def execute(self, requests):
        for request in requests:
            count = pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()
            delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
            delay_ms = 0 if delay is None else int(delay.as_numpy().reshape(-1)[0])
            thread = threading.Thread(
                target=self._stream,
                args=(request.get_response_sender(), int(count.reshape(-1)[0]), delay_ms),
                daemon=True,
            )
            with self._lock:
                self._threads.add(thread)
            thread.start()
        return None

    def _stream(self, sender, count, delay_ms):
        try:
            if count < 0:
                sender.send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(
                            f"COUNT must be >= 0, got {count}", pb_utils.TritonError.INVALID_ARG
                        )
                    )
                )
                return
            for i in range(count):
                if i and delay_ms > 0 and _sleep_or_cancelled(sender, delay_ms / 1000.0):
                    return
                if sender.is_cancelled():
                    return
                sender.send(_token(i))
        finally:
            try:
                sender.send(flags=_FINAL)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

    def finalize(self):
        # Let in-flight streams finish (they stop early once cancelled) before unload.
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=30)


def _token(i):
    index = pb_utils.Tensor("INDEX", np.array([i], dtype=np.int32))
    text = pb_utils.Tensor("TEXT", np.array([f"token-{i}".encode()], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[index, text])


def _sleep_or_cancelled(sender, seconds):
    """Sleep in short steps; True as soon as the client has cancelled."""
    deadline = time.monotonic() + seconds
    while True:
        if sender.is_cancelled():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(_POLL_S, left))
