"""Model calls on several threads at once, results handed back in the order they were asked.

On a CPU one window of interpolation is a chain of short, mostly single-threaded steps (DIS
flow and warping in OpenCV, the context, the fusion head, many small convolutions at low
resolution) with one heavier network in the middle: one call at a time with two intra-op
threads leaves a core idle much of the time. Independent windows on their own threads, one
intra-op thread each, keep every core busy (``docs/benchmarks.md``: about 0.6 of the
per-window time on two cores). Torch and OpenCV release the GIL in their kernels, so the
threads overlap where the time is spent.

Results must come back in order (frames are blended and written in order) and must not
depend on which thread ran what: callers give each call its own random stream
(:func:`call_generator`), never a generator shared across calls.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

__all__ = ["OrderedCalls", "auto_workers", "call_generator", "intra_op_threads"]

#: the most windows run at once by default: beyond this, memory grows and two cores gained
#: nothing (3 and 4 were no faster than 2 on two cores, docs/benchmarks.md)
MAX_AUTO_WORKERS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:   # not on Linux
        return max(os.cpu_count() or 1, 1)


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for each of ``workers`` concurrent calls: the CPUs shared out."""
    return max(available_cpus() // workers, 1)


def auto_workers(device: str | torch.device) -> int:
    """How many calls to run at once when the user did not say: one per CPU (at most
    :data:`MAX_AUTO_WORKERS`) on a CPU device; one on an accelerator, which runs its kernels
    in order anyway and would only have its memory split."""
    return min(available_cpus(), MAX_AUTO_WORKERS) if torch.device(device).type == "cpu" else 1


def worker_count(requested: int | None, device: str | torch.device) -> int:
    """The calls to run at once: ``requested`` (at least 1), or :func:`auto_workers` when the
    user did not say."""
    if requested is None:
        return auto_workers(device)
    if requested < 1:
        raise ValueError(f"workers must be at least 1 (or left out for one per CPU), "
                         f"got {requested}")
    return requested


def call_generator(device: str | torch.device, seed: int, key: tuple[int, ...]) -> torch.Generator:
    """A random stream of its own for the call ``key`` (its window, pair or tile numbers), so
    its noise is the same whatever thread runs it and in whatever order calls finish."""
    mixed = hash((int(seed), *map(int, key))) & (2**63 - 1)   # ints hash alike in every process
    return torch.Generator(torch.device(device)).manual_seed(mixed)


@contextmanager
def intra_op_threads(workers: int) -> Iterator[None]:
    """Share the CPUs among ``workers`` threads of calls: torch's and OpenCV's own thread
    counts set to ``CPUs // workers`` (at least 1) while the block runs, then put back.

    Each call otherwise spawns as many threads as there are CPUs, and ``workers`` calls at
    once oversubscribe the cores. With one worker nothing changes.
    """
    if workers <= 1:
        yield
        return
    import cv2

    threads = threads_per_worker(workers)
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)


class OrderedCalls:
    """Calls run on ``workers`` threads; their results come back in the order of
    :meth:`submit`, each with the tag it was submitted with.

    At most ``workers + 1`` calls are outstanding (one waits ready for the first thread that
    frees): :meth:`submit` blocks on the oldest beyond that, which bounds memory. With one
    worker every call runs at once in the caller's thread, exactly as a plain call would. An
    exception of a call is raised where its result is taken.
    """

    def __init__(self, workers: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[Any, Future]] = deque()
        self._finished: list[tuple[Any, Any]] = []

    def submit(self, tag: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.workers == 1:
            self._finished.append((tag, fn(*args, **kwargs)))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tcvbm-call",
                                            initializer=torch.set_num_threads,
                                            initargs=(threads_per_worker(self.workers),))
        self._queue.append((tag, self._pool.submit(fn, *args, **kwargs)))
        while len(self._queue) > self.workers + 1:
            self._take_oldest()

    def _take_oldest(self) -> None:
        tag, future = self._queue.popleft()
        self._finished.append((tag, future.result()))

    @property
    def outstanding(self) -> list[Any]:
        """Tags of the calls submitted and not yet taken, oldest first."""
        return [tag for tag, _ in self._finished] + [tag for tag, _ in self._queue]

    def ready(self) -> list[tuple[Any, Any]]:
        """(tag, result) of the calls finished so far, oldest first, up to the first still
        running; does not wait."""
        while self._queue and self._queue[0][1].done():
            self._take_oldest()
        return self._take_finished()

    def drain(self) -> list[tuple[Any, Any]]:
        """(tag, result) of every outstanding call, in order, waiting for them; the threads
        are then let go (the next :meth:`submit` starts new ones)."""
        try:
            while self._queue:
                self._take_oldest()
        finally:
            if self._pool is not None and not self._queue:
                self._pool.shutdown(wait=True)
                self._pool = None
        return self._take_finished()

    def _take_finished(self) -> list[tuple[Any, Any]]:
        out, self._finished = self._finished, []
        return out
