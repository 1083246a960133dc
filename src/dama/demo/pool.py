"""The demo's alignment runs, in parallel worker processes or inline, each on one intra-op thread.

Every run uses `RUN_THREADS` torch threads wherever it runs, so a run's record is a function of its settings alone,
not of how many runs share the machine (`--workers`): float sums split over threads differ in their last bits, and a
demo whose numbers moved with the worker count would not be reproducible. The demo's models are a few MB, so one
thread per run wastes little, and on a 2-core machine two runs side by side finish about twice as many runs per
minute as one run on both cores (docs/demo.md, "The console and the options").

Workers are spawned processes (not forked: OpenMP is not fork-safe) that receive the shared state once, at start,
and exit when their parent does, so a killed demo leaves no runs behind it. Only the parent writes the run store.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

import torch

from dama.errors import EXIT_UNAVAILABLE, DamaError

RUN_THREADS = 1

_SHARED: Any = None
_QUIET: Any = None  # the worker's `quiet_libraries`, held open for its life (a dropped one would restore the bars)


class WorkerDied(DamaError, RuntimeError):
    """A worker process ended without returning its run (the runs finished before it are in the run store)."""

    exit_code = EXIT_UNAVAILABLE  # rerun: the store has the runs finished so far (docs/errors.md)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def run_threads() -> Iterator[None]:
    """`RUN_THREADS` torch threads inside, the previous number restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(RUN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(shared: bytes, parent: int) -> None:
    global _SHARED, _QUIET
    from dama.demo.console import quiet_libraries

    torch.set_num_threads(RUN_THREADS)
    _QUIET = quiet_libraries()  # the parent's console: its bars and known warnings off for the worker's life
    _QUIET.__enter__()
    _SHARED = pickle.loads(shared)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _timed(fn: Callable[..., Any], shared: Any, args: tuple) -> tuple[Any, float]:
    clock = time.perf_counter()
    result = fn(shared, *args)
    return result, time.perf_counter() - clock


def _call(fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    """A call in a worker, on the state it received at start."""
    return _timed(fn, _SHARED, args)


class RunPool:
    """`fn(shared, *args)` for many `args`, in `workers` spawned processes (inline when 1), each call on
    `RUN_THREADS` threads. `map` yields (index, result, seconds) as calls finish."""

    def __init__(self, fn: Callable[..., Any], shared: Any, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.fn, self.shared, self.workers = fn, shared, workers
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:  # started at the first parallel batch, once
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(pickle.dumps(self.shared), os.getpid()),
            )
        return self._executor

    def map(self, calls: Sequence[tuple]) -> Iterator[tuple[int, Any, float]]:
        if self.workers == 1 or (len(calls) <= 1 and self._executor is None):
            for index, args in enumerate(calls):
                with run_threads():
                    result, seconds = _timed(self.fn, self.shared, args)
                yield index, result, seconds
            return
        pool = self._pool()
        pending: dict[Future, int] = {pool.submit(_call, self.fn, args): k for k, args in enumerate(calls)}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    try:
                        result, seconds = future.result()  # a worker's exception is raised here, in the parent
                    except BrokenProcessPool as err:
                        raise WorkerDied(
                            "a demo worker process ended without a result (killed, or out of memory); run the same "
                            "command again to continue from the run store, with --workers 1 to train in this process"
                        ) from err
                    yield index, result, seconds
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
