"""Up to N calls of a function in flight over a lazily read stream of jobs, answers back in order.

Autolabel and evaluation keep their SQLite work in the calling thread (connections belong to their
thread) while the model calls run in a pool, so a batching local backend (`batch_size`) or a server sees
several requests at once. Jobs are pulled from the iterator only as slots free up, so memory stays flat
however long the stream is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from napari_fracto.settings import BackendSettings

# Requests kept in flight for vLLM's engine at the least (it schedules them continuously).
VLLM_MIN_IN_FLIGHT = 8
J = TypeVar("J")
R = TypeVar("R")


def in_flight_for(settings: BackendSettings, concurrency: int = 1) -> int:
    """Requests to keep in flight: at least the local backend's batch size, so its batches can fill."""
    if settings.kind == "vllm":  # a continuous-batching engine: keep it fed
        return max(int(concurrency), settings.batch_size, VLLM_MIN_IN_FLIGHT)
    return max(int(concurrency), settings.batch_size if settings.kind == "transformers" else 1)


def in_flight(
    work: Callable[[J], R], jobs: Iterable[J], width: int
) -> Iterator[tuple[J, R | None, BaseException | None]]:
    """`(job, result, None)` or `(job, None, error)` for each job, in the jobs' order.

    `width` 1 runs each job in the calling thread, exactly as a plain loop would. Stopping the iteration
    early (a `break`, cancel) waits only for the calls already started.
    """
    if width <= 1:
        for job in jobs:
            try:
                yield job, work(job), None
            except Exception as exc:  # handed to the caller, who decides what a failure means
                yield job, None, exc
        return
    source = iter(jobs)
    pending: deque[tuple[J, Future]] = deque()
    with ThreadPoolExecutor(max_workers=width) as pool:
        try:
            while True:
                while len(pending) < width:
                    job = next(source, _END)
                    if job is _END:
                        break
                    pending.append((job, pool.submit(work, job)))  # type: ignore[arg-type]
                if not pending:
                    return
                job, future = pending.popleft()
                error = future.exception()
                yield job, (None if error is not None else future.result()), error
        finally:
            for _, future in pending:
                future.cancel()


_END = object()
