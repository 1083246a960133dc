"""The demo's run pool: one thread per run wherever it runs, results in the callers' order, a worker's error raised
in the parent, and workers that exit when their parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from dama.demo.pool import RUN_THREADS, RunPool, WorkerDied
from dama.errors import EXIT_UNAVAILABLE


def _describe(shared: dict, x: int) -> tuple[int, int, int]:
    """(the call's torch threads, its process, the shared value × x); raises for x < 0."""
    if x < 0:
        raise ValueError(f"negative: {x}")
    return torch.get_num_threads(), os.getpid(), shared["k"] * x


def test_inline_calls_run_on_one_thread_and_restore_it():
    before = torch.get_num_threads()
    pool = RunPool(_describe, {"k": 3}, workers=1)
    out = sorted(pool.map([(1,), (2,)]))
    assert [(k, r[0], r[1], r[2]) for k, r, _ in out] == [
        (0, RUN_THREADS, os.getpid(), 3),
        (1, RUN_THREADS, os.getpid(), 6),
    ]
    assert all(seconds >= 0 for *_, seconds in out)
    assert torch.get_num_threads() == before


def test_workers_run_calls_in_other_processes_on_one_thread():
    pool = RunPool(_describe, {"k": 5}, workers=2)
    try:
        out = {k: r for k, r, _ in pool.map([(x,) for x in range(6)])}
        assert sorted(out) == list(range(6))
        assert [r[2] for _, r in sorted(out.items())] == [5 * x for x in range(6)]  # each index its own call
        assert {r[0] for r in out.values()} == {RUN_THREADS}
        pids = {r[1] for r in out.values()}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        # a second batch reuses the same workers
        again = {r[1] for _, r, _ in pool.map([(1,), (2,)])}
        assert again <= pids
    finally:
        pool.close()


def test_a_workers_error_is_raised_in_the_parent():
    pool = RunPool(_describe, {"k": 1}, workers=2)
    try:
        with pytest.raises(ValueError, match="negative: -1"):
            list(pool.map([(1,), (-1,), (2,)]))
    finally:
        pool.close()


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be ≥ 1, got 0"):
        RunPool(_describe, {}, workers=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed demo leaves no worker behind to compete with its resumed run."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from dama.demo.pool import RunPool

        def sleep(shared, seconds):
            print(os.getpid(), flush=True)
            time.sleep(seconds)

        if __name__ == "__main__":
            pool = RunPool(sleep, None, workers=2)
            list(pool.map([(120,), (120,)]))
        """
    )
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    workers = [int(parent.stdout.readline()) for _ in range(2)]
    assert all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    give_up_at = time.monotonic() + 20
    while time.monotonic() < give_up_at and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _die(shared: None, x: int) -> int:
    if x == 1:
        os._exit(9)  # a worker killed from outside, say by the out-of-memory killer
    time.sleep(0.2)
    return x


def test_a_worker_that_dies_is_one_error_that_says_what_to_do():
    pool = RunPool(_die, None, workers=2)
    try:
        with pytest.raises(WorkerDied, match="run the same command again") as err:
            list(pool.map([(0,), (1,), (2,)]))
        assert err.value.exit_code == EXIT_UNAVAILABLE
    finally:
        pool.close()
