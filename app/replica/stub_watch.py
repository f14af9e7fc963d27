"""A replica's watch over its python-backend stub processes.

Triton's python backend neither restarts a stub that died nor marks its model unready
(measured: docs/benchmarks.md): requests fail with "Stub process '...' is not healthy"
(non-decoupled ones after a second) or never finish (decoupled ones in flight). So the
replica looks at its stubs on every report period and before each request; when one died
it reports the model unready with the reason, answers its new requests with a 503 at
once, ends the model's requests in flight with a 503, and reloads the model (new stubs).
If the reload fails (e.g. Triton still holds requests the dead stub never answered, so
the unload cannot finish), the replica's health check fails and Serve replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.errors import Unavailable
from app.triton import Server, TritonError, UnavailableError
from app.triton.stubs import StubProcess, is_running, model_of_instance

__all__ = ["RELOAD_UNLOAD_TIMEOUT_S", "StubWatch"]

log = logging.getLogger(__name__)

# An unload that needs longer is stuck on requests the dead stub will never answer.
RELOAD_UNLOAD_TIMEOUT_S = 5.0

_Key = tuple[int, int]


class StubWatch:
    """``lock`` is the replica's model-control lock: stubs start and exit legitimately
    only during loads and unloads, so deaths are looked for only between them."""

    def __init__(
        self,
        server: Server,
        models: tuple[str, ...],
        lock: threading.Lock,
        reload: Callable[[str], None],
    ) -> None:
        self.server = server
        self.models = models
        self.lock = lock
        self.reload = reload
        self.reloading: dict[str, str] = {}  # model -> why, until its reload succeeds
        self.unrecoverable: dict[str, str] = {}  # model (or instance) -> why
        self._known: dict[_Key, StubProcess] = {}
        self.snapshot()

    def snapshot(self) -> None:
        """Remember the running stubs; call with ``lock`` held, after a load or unload.
        A reload's replaced stubs are left out: they exit while their version is
        destroyed in the background, after the load returned."""
        retiring = self.server.retiring_stubs()
        self._known = {
            (s.pid, s.started): s for s in self.server.stub_processes() if s not in retiring
        }

    def check(self) -> None:
        """Look for stubs that died since the last look (skipped while a load runs).
        Cheap (a read per known stub): serving calls check before reaching Triton."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            died = [s for s in self._known.values() if not is_running(s)]
            for stub in died:
                del self._known[(stub.pid, stub.started)]
        finally:
            self.lock.release()
        for stub in died:
            self._on_death(stub)

    def why_unavailable(self, model: str) -> str | None:
        return self.unrecoverable.get(model) or self.reloading.get(model)

    def raise_if_unavailable(self, model: str) -> None:
        self.check()
        why = self.why_unavailable(model)
        if why is not None:
            raise Unavailable(f"model '{model}' is not ready: {why}", retry_after=5)

    def explain_stub_death(self, model: str) -> Unavailable | None:
        """For a request Triton answered "Stub process '...' is not healthy" (it notices
        a dead stub about a second into a request, the watch every report period):
        look now, so the reload starts, and answer with the watch's reason."""
        self.check()
        why = self.why_unavailable(model)
        return None if why is None else Unavailable(f"model '{model}': {why}", retry_after=5)

    def health_problem(self) -> str | None:
        """Why this replica should be replaced, if it should."""
        if not self.unrecoverable:
            return None
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.unrecoverable.items()))

    def _on_death(self, stub: StubProcess) -> None:
        why = f"its python backend stub process '{stub.instance}' (pid {stub.pid}) died"
        model = model_of_instance(stub.instance, self.models)
        log.error("stub %s (pid %d) died", stub.instance, stub.pid)
        if model is None:  # a named instance group: which model is not known
            self.unrecoverable[stub.instance] = why
            return
        if model in self.reloading:
            return
        self.reloading[model] = f"{why}; reloading it"
        self.server.fail_requests(model, UnavailableError(f"model '{model}': {why}"))
        threading.Thread(
            target=self._reload, args=(model, why), name=f"reload-{model}", daemon=True
        ).start()

    def _reload(self, model: str, why: str) -> None:
        started = time.monotonic()
        try:
            with self.lock:
                self.server.unload(model, wait_until_unloaded=True, timeout=RELOAD_UNLOAD_TIMEOUT_S)
                self.reload(model)
                self.snapshot()
        except Exception as exc:  # TritonError or the replica's ServingError
            message = exc.message if isinstance(exc, TritonError) else str(exc)
            self.unrecoverable[model] = f"{why}; reloading it failed: {message}"
            log.error("model %s cannot recover in this replica: %s", model, message)
            return
        self.reloading.pop(model, None)
        log.warning("model %s reloaded in %.1f s after %s", model, time.monotonic() - started, why)
