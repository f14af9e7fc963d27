"""A replica's pool of models: loaded on first request, one load at a time per model,
evicted least recently used when a load would exceed the memory budget.

Requests take the fast path when their model is resident (a dict lookup and a
counter under a lock). A cold model gets one loading thread (single flight); every
request for it waits on that thread's future, each bounded by its own timeout (the
router cancels it: 408), and all get Triton's reason with a 503 if the load fails.
The policy (``app.residency.policy``) chooses the victims; loads and unloads go
through ``ModelControl`` (the replica's control lock, the stub watch's snapshot,
Triton's serialized model control) and never through operators' intents, which
only pin (``load``) and unpin (``unload``) models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.config import ModelDeploymentConfig
from app.errors import BadRequest, ServingError, Unavailable, from_triton
from app.observability import render_registry
from app.residency.config import NOT_LOADED_REASON, ResidencyConfig
from app.residency.memory import GpuMeter, Measurement, declared_bytes, process_rss, stub_rss
from app.residency.policy import Evict, ResidencyPolicy, TooBig
from app.residency.routing import routing_stats
from app.triton import TritonError

if TYPE_CHECKING:
    from app.replica.control import ModelControl

__all__ = ["NOT_LOADED_REASON", "Residency"]

log = logging.getLogger(__name__)

# A failed load is not retried for this long: its waiters and later requests get
# its reason with a 503 at once instead of each starting a load that fails again.
FAILED_LOAD_HOLD_S = 5.0
_LOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _PoolMetrics:
    """The pool's counters and gauges, in a registry of their own per replica."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loads = Counter(
            "triton_serve_model_loads",
            "Pool models loaded (on demand or pinned).",
            registry=self.registry,
        )
        self.evictions = Counter(
            "triton_serve_model_evictions",
            "Models unloaded to make room.",
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "triton_serve_model_load_seconds",
            "Seconds a pool model took to load.",
            buckets=_LOAD_BUCKETS_S,
            registry=self.registry,
        )
        self.resident_bytes = Gauge(
            "triton_serve_resident_bytes",
            "Memory the resident pool models take, as measured.",
            registry=self.registry,
        )
        self.budget_bytes = Gauge(
            "triton_serve_memory_budget_bytes",
            "The replica's residency budget.",
            registry=self.registry,
        )
        self.resident_models = Gauge(
            "triton_serve_resident_models",
            "Pool models resident in the replica.",
            registry=self.registry,
        )


class _FifoLock:
    """A lock granted in the order it was asked for: cold models load in the order
    their first requests came, none starves behind later ones."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket that holds the lock

    def acquire(self, blocking: bool = True) -> bool:
        with self._cv:
            if not blocking and self._serving != self._next:
                return False  # held, or others wait
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                self._cv.wait()
            return True

    def release(self) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class NoRoom(Unavailable):
    """The models in the way stayed busy or young for as long as a load may wait."""


class Residency:
    """The pool of ``deployment``'s models in one replica (``control`` loads them)."""

    def __init__(
        self,
        deployment: ModelDeploymentConfig,
        residency: ResidencyConfig,
        repository: str,
        control: ModelControl,
        wait_for_room_s: float,
        pinned_by_operator: dict[str, tuple[str | None, dict[str, bytes] | None]],
        publish: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.deployment = deployment.name
        self.models = tuple(deployment.models)
        self.pool = frozenset(self.models)
        self.control = control
        self.repository = repository
        self.wait_for_room_s = wait_for_room_s
        self.policy = ResidencyPolicy(residency.budget_bytes, residency.min_resident_s)
        self.pinned: set[str] = set(residency.pinned) | set(pinned_by_operator)
        self.gpu = GpuMeter() if deployment.num_gpus > 0 else None
        self.load_errors: dict[str, tuple[float, ServingError]] = {}
        self.known_sizes: dict[str, Measurement] = {}  # last measurement, kept after eviction
        self._state = threading.Lock()  # policy, futures, counters: held briefly
        self._room = threading.Condition(self._state)  # notified when room may appear
        self._sequence = _FifoLock()  # plan -> evict -> load, one at a time, in order
        self._loading: dict[str, concurrent.futures.Future[None]] = {}
        self._evicting: set[str] = set()
        self.metrics = _PoolMetrics()
        self._publish = publish
        self._published: frozenset[str] | None = None
        for model in sorted(self.pinned):
            config, files = pinned_by_operator.get(model, (None, None))
            try:
                self._bring_in(model, config, files, pin=True)
            except ServingError as exc:  # reported as the model's reason; others serve
                log.error("pinned model %s did not load: %s", model, exc.message)
                self.load_errors[model] = (time.monotonic(), exc)

    # ---- the request path ----

    @contextlib.asynccontextmanager
    async def use(self, model: str) -> AsyncIterator[None]:
        """Hold ``model`` resident for the duration of a request, loading it first."""
        await self.acquire(model)
        try:
            yield
        finally:
            self.release(model)

    async def acquire(self, model: str) -> None:
        while True:
            with self._state:
                if model in self.policy.resident and model not in self._evicting:
                    self.policy.begin(model)
                    return
                failed = self.load_errors.get(model)
                if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_HOLD_S:
                    raise failed[1]
                future = self._loading.get(model)
                if future is None:
                    future = concurrent.futures.Future()
                    self._loading[model] = future
                    threading.Thread(
                        target=self._load_job, args=(model, future), name=f"load-{model}"
                    ).start()
            # Shielded: a waiter that times out leaves the load to the others.
            await asyncio.shield(asyncio.wrap_future(future))

    def release(self, model: str) -> None:
        with self._state:
            self.policy.end(model)
            self._room.notify_all()

    # ---- operators: load pins, unload unpins ----

    def pin(self, model: str, config: str | None, files: dict[str, bytes] | None) -> None:
        """Load (or reload with ``config``) and keep resident until ``unpin``; blocks."""
        with self._state:
            self.pinned.add(model)
            self.policy.pin(model, True)
        self._bring_in(model, config, files, pin=True, reload=config is not None or bool(files))

    def unpin(self, model: str, unload_dependents: bool = False) -> None:
        """Unload now; the model loads on its next request again. Blocks."""
        with self._state:
            self.pinned.discard(model)
            self.policy.pin(model, False)
        with self._sequence:
            with self._state:
                if model not in self.policy.resident:
                    return
                self._evicting.add(model)
            self._unload(model, unload_dependents, count=False)

    # ---- state for reports ----

    def publish_if_changed(self) -> None:
        """Tell the routers which models this replica holds or is loading."""
        if self._publish is None:
            return
        with self._state:
            held = frozenset(self.policy.resident) | frozenset(self._loading)
            if held == self._published:
                return
            self._published = held
        self._publish(sorted(held))

    def routing_stats(self) -> dict[str, Any]:
        """The room the pinned models leave and the sizes measured here, for the
        routers' choice of replica (``app.residency.routing``)."""
        with self._state:
            room = self.policy.budget - self.policy.pinned_bytes()
            sizes = {model: known.size for model, known in self.known_sizes.items()}
        return routing_stats(room, sizes)

    def reason(self, model: str) -> str:
        """Why a pool model is not READY when Triton has no reason of its own."""
        failed = self.load_errors.get(model)
        return failed[1].message if failed is not None else NOT_LOADED_REASON

    def remeasure(self) -> None:
        """Stubs grow after their load (first requests, caches): keep RSS sizes current,
        and evict what the growth pushed over the budget (skipped while a load runs:
        that load brings the total back within the budget itself)."""
        if self.gpu is not None and self.gpu.available:
            return
        if not self._sequence.acquire(blocking=False):
            return
        try:
            stubs = self.control.server.stub_processes()
            with self._state:
                for entry in self.policy.resident.values():
                    known = self.known_sizes.get(entry.model)
                    if known is None or known.source != "measured (rss)":
                        continue
                    size = stub_rss(entry.model, self.models, stubs) + known.own_growth
                    if size > 0:
                        entry.size = size
                        self.known_sizes[entry.model] = Measurement(
                            size, known.source, known.own_growth
                        )
                excess = self.policy.over_budget()
                self._evicting.update(excess.models)
            with contextlib.suppress(Unavailable):
                self._evict(excess.models)
        finally:
            self._sequence.release()

    def render_metrics(self) -> str:
        """Prometheus text; the router adds the deployment and replica labels."""
        with self._state:
            self.metrics.resident_bytes.set(self.policy.used())
            self.metrics.budget_bytes.set(self.policy.budget)
            self.metrics.resident_models.set(len(self.policy.resident))
        return render_registry(self.metrics.registry)

    # ---- loading and evicting (threads) ----

    def _load_job(self, model: str, future: concurrent.futures.Future[None]) -> None:
        self.publish_if_changed()  # routers send its next requests here while it loads
        try:
            self._bring_in(model, None, None, pin=False)
        except ServingError as exc:
            if not isinstance(exc, NoRoom):
                with self._state:
                    self.load_errors[model] = (time.monotonic(), exc)
            future.set_exception(exc)
        except BaseException as exc:  # never leave waiters hanging
            log.exception("loading model %s failed", model)
            future.set_exception(
                Unavailable(f"model '{model}' failed to load: {exc}", retry_after=5)
            )
        else:
            future.set_result(None)
        finally:
            with self._state:
                if self._loading.get(model) is future:
                    del self._loading[model]
            self.publish_if_changed()

    def _bring_in(
        self,
        model: str,
        config: str | None,
        files: dict[str, bytes] | None,
        *,
        pin: bool,
        reload: bool = False,
    ) -> None:
        """Make room and load ``model``; waits (up to ``wait_for_room_s``) while the
        models in the way have requests in flight or are younger than min_resident_s."""
        deadline = time.monotonic() + self.wait_for_room_s
        while True:
            with self._sequence:
                size = self._expected_size(model)  # reads config.pbtxt: not under the lock
                with self._state:
                    if model in self.policy.resident and not reload:
                        self.policy.pin(model, pin or model in self.pinned)
                        return
                    try:
                        decision = (
                            self.policy.plan(model, size)
                            if model not in self.policy.resident
                            else Evict(())
                        )
                    except TooBig as exc:
                        raise BadRequest(
                            f"{exc} ({self._size_source(model)}); it cannot be served by "
                            f"deployment '{self.deployment}'"
                        ) from None
                    if isinstance(decision, Evict):
                        self._evicting.update(decision.models)
                if isinstance(decision, Evict):
                    self._evict(decision.models)
                    if self._load(model, config, files, pin=pin or model in self.pinned):
                        return
                    continue  # unloaded again: it did not fit as measured; plan anew
            with self._state:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoRoom(
                        f"model '{model}' cannot be loaded: no room in the replica's "
                        f"memory budget: {decision.why}",
                        retry_after=max(1, round(decision.seconds or 1)),
                    )
                self._room.wait(min(left, decision.seconds or left) + 0.01)

    def _expected_size(self, model: str) -> int:
        """Before a load: the last measurement, else the declared size, else the
        largest model measured so far (0 for the first)."""
        known = self.known_sizes.get(model)
        if known is not None:
            return known.size
        declared = declared_bytes(self.repository, model)
        if declared is not None:
            return declared
        return max((m.size for m in self.known_sizes.values()), default=0)

    def _size_source(self, model: str) -> str:
        known = self.known_sizes.get(model)
        if known is not None:
            return f"{known.source} when it last loaded"
        if declared_bytes(self.repository, model) is not None:
            return "declared in its config.pbtxt"
        return "estimated from the models measured so far"

    def _load(
        self, model: str, config: str | None, files: dict[str, bytes] | None, *, pin: bool
    ) -> bool:
        """Load and measure; False when it then had to be unloaded (over the budget
        and nothing evictable), True when it stays resident. Load errors raise."""
        rss_before = process_rss()
        gpu_before = self.gpu.used() if self.gpu is not None and self.gpu.available else 0
        started = time.monotonic()
        try:
            self.control.load_for_residency(model, config, files)
        except TritonError as exc:
            if config is not None or files:  # an operator's override: theirs to fix
                raise from_triton(exc) from exc
            raise Unavailable(
                f"model '{model}' failed to load: {exc.message}", retry_after=5
            ) from exc
        seconds = time.monotonic() - started
        measured = self._measure(model, rss_before, gpu_before)
        with self._state:
            self.load_errors.pop(model, None)
            self.known_sizes[model] = measured
            self.policy.loaded(model, measured.size, measured.source, pin)
            self.metrics.loads.inc()
            self.metrics.load_seconds.observe(seconds)
            log.info(
                "model %s loaded in %.2f s: %d bytes (%s)",
                model,
                seconds,
                measured.size,
                measured.source,
            )
            excess = self.policy.over_budget()
            self._evicting.update(excess.models)
            # Not servable until it is known to stay: no request may start on a model
            # that is unloaded again below.
            self._evicting.add(model)
        try:
            self._evict(excess.models)
        except ServingError:
            with self._state:
                self._evicting.discard(model)
            raise
        with self._state:
            if self.policy.used() <= self.policy.budget:
                self._evicting.discard(model)
                return True
            too_big: TooBig | None = None
            try:
                self.policy.check_fits(model, measured.size)
            except TooBig as exc:
                too_big = exc
        self._unload(model, False, count=True)
        if too_big is not None:
            raise BadRequest(f"{too_big} ({measured.source}); it cannot be served here")
        return False

    def _measure(self, model: str, rss_before: int, gpu_before: int) -> Measurement:
        if self.gpu is not None:
            if self.gpu.available:
                return Measurement(max(0, self.gpu.used() - gpu_before), "measured (gpu)")
            declared = declared_bytes(self.repository, model)
            if declared is not None:
                return Measurement(declared, "declared")
        growth = max(0, process_rss() - rss_before)
        stubs = self.control.server.stub_processes()
        size = stub_rss(model, self.models, stubs) + growth
        if size == 0:
            declared = declared_bytes(self.repository, model)
            if declared is not None:
                return Measurement(declared, "declared")
        return Measurement(size, "measured (rss)", growth)

    def _evict(self, victims: tuple[str, ...]) -> None:
        """Unload ``victims`` (marked evicting); if one fails, the rest stay resident."""
        for i, victim in enumerate(victims):
            try:
                self._unload(victim, False, count=True)
            except Unavailable:
                with self._state:
                    self._evicting.difference_update(victims[i + 1 :])
                raise

    def _unload(self, model: str, unload_dependents: bool, *, count: bool) -> None:
        """Unload a model already marked evicting (no new request starts on it)."""
        try:
            self.control.unload_for_residency(model, unload_dependents)
        except (TritonError, ServingError) as exc:
            log.error("unloading model %s failed: %s", model, exc)
            with self._state:
                self._evicting.discard(model)
            raise Unavailable(
                f"model '{model}' could not be unloaded: {exc}", retry_after=5
            ) from None
        with self._state:
            self.policy.unloaded(model)
            self._evicting.discard(model)
            if count:
                self.metrics.evictions.inc()
            self._room.notify_all()
