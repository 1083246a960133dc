"""Image decoding and preprocessing, in worker processes, in input order, with a bounded number in flight.

A job is `(value, where)`: an image value as stored in the data (bytes, {"bytes", "path"} dict, path) and the text
that names it in errors. A result is `(pixels, None)` with `(C, H, W)` float32 pixels ready for the dual encoder,
or `(None, message)`. Workers are spawned (not forked: the parent holds torch's thread pools) and import only PIL,
numpy and the image processor; a worker that dies (or cannot start) raises `BrokenProcessPool` here instead of
hanging the run. `DecodeQueue` keeps at most `window` jobs submitted, so memory stays bounded
whatever the dataset size, and hands results back in submission order, so batches do not depend on timing.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dama.images import ImageError, load_image

Job = tuple[Any, str]
Result = tuple["np.ndarray | None", "str | None"]

_STATE: dict[str, Any] = {}


def _init_worker(image_processor, image_root: str | None) -> None:
    _STATE["processor"] = image_processor
    _STATE["image_root"] = image_root


def _decode(job: Job) -> Result:
    value, where = job
    try:
        image = load_image(value, _STATE.get("image_root"), where=where)
    except ImageError as err:
        return None, str(err)
    except Exception as err:  # a decoder bug or an exotic file must not kill the worker pool silently
        return None, f"{where}: cannot decode image ({type(err).__name__}: {err})"
    pixels = _STATE["processor"](images=[image], return_tensors="np")["pixel_values"][0]
    return np.ascontiguousarray(pixels, dtype=np.float32), None


class ImageDecoder:
    """Decodes jobs in `workers` spawned processes (0: in this process, lazily, as results are asked for)."""

    def __init__(self, image_processor, image_root: str | Path | None = None, workers: int = 0, window: int = 64):
        self.workers = workers
        self.window = max(1, window)
        root = str(image_root) if image_root is not None else None
        _init_worker(image_processor, root)
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(image_processor, root)
            )

    def queue(self, jobs: Iterable[Job]) -> DecodeQueue:
        return DecodeQueue(self, iter(jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ImageDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecodeQueue:
    """Ordered results of a job stream; `ready()` tells whether the next result can be had without waiting."""

    def __init__(self, decoder: ImageDecoder, jobs: Iterator[Job]) -> None:
        self._decoder = decoder
        self._jobs = jobs
        self._pending: deque = deque()
        self._exhausted = False
        self._fill()

    def _fill(self) -> None:
        pool = self._decoder._pool
        if pool is None:
            return
        while not self._exhausted and len(self._pending) < self._decoder.window:
            job = next(self._jobs, None)
            if job is None:
                self._exhausted = True
                return
            self._pending.append(pool.submit(_decode, job))

    def done(self) -> bool:
        if self._decoder._pool is None:
            if self._pending:
                return False
            job = next(self._jobs, None)
            if job is None:
                return True
            self._pending.append(job)
            return False
        return self._exhausted and not self._pending

    def ready(self) -> bool:
        return self._decoder._pool is not None and bool(self._pending) and self._pending[0].done()

    def next(self) -> Result:
        """The next result in job order, waiting for it if needed. Call only when `done()` is False."""
        if self._decoder._pool is None:
            job = self._pending.popleft() if self._pending else next(self._jobs)
            return _decode(job)
        result = self._pending.popleft().result()
        self._fill()
        return result

    def __iter__(self) -> Iterator[Result]:
        while not self.done():
            yield self.next()
