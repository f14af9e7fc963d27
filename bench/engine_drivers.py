"""``bench.engine``'s load generators: asyncio tasks or threads calling back to back,
and the busy Python thread some cells run beside them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from bench.common.measure import Window

SyncCall = Callable[[], None]
AsyncCall = Callable[[], Awaitable[None]]


async def drive_async(
    make_call: Callable[[], AsyncCall], concurrency: int, warmup_s: float, duration_s: float
) -> list[float]:
    """``concurrency`` tasks on this loop, each awaiting its call back to back."""
    calls = [make_call() for _ in range(concurrency)]
    await calls[0]()  # connect / first-request costs stay out of the window
    window = Window(concurrency, warmup_s, duration_s, stretch=False)
    clock = time.perf_counter

    async def worker(call: AsyncCall, out: list[float]) -> None:
        while clock() < window.end:
            t0 = clock()
            await call()
            window.record(t0, clock(), out)
            window.poll()

    results: list[list[float]] = [[] for _ in range(concurrency)]
    await asyncio.gather(*(worker(c, r) for c, r in zip(calls, results, strict=True)))
    return [x for r in results for x in r]


def drive_threads(
    make_call: Callable[[], tuple[SyncCall, SyncCall]],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> list[float]:
    """``concurrency`` threads, each with its own client made by ``make_call`` -> (call, close)."""
    ready = threading.Barrier(concurrency + 1)
    results: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    window = Window(concurrency, warmup_s, duration_s, stretch=False)
    lock = threading.Lock()
    clock = time.perf_counter

    def worker(out: list[float]) -> None:
        try:
            call, close = make_call()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            call()  # connect outside the window
            ready.wait()
            while clock() < window.end:
                t0 = clock()
                call()
                t1 = clock()
                with lock:
                    window.record(t0, t1, out)
                    window.poll()
        except BaseException as exc:
            errors.append(exc)
            with lock:
                window.stop()  # the other threads stop too
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        with lock:  # warm-up starts once every thread has its client
            window.restart()
        ready.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [x for r in results for x in r]


@contextlib.contextmanager
def busy_thread(enabled: bool) -> Iterator[None]:
    """A thread spinning pure-Python work (it holds the GIL whenever it can)."""
    if not enabled:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, name="busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
