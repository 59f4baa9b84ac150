"""Real processes racing: forked workers that each run a function at the same moment
(a barrier), over many trials, reporting what they got."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
from collections.abc import Callable

WORKERS = 4


def _worker(
    fn: Callable[[int], object],
    trials: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[int, object]],
) -> None:
    for trial in range(trials):
        barrier.wait(timeout=30)
        try:
            got = fn(trial)
        except Exception as e:  # said to the test, which fails on it
            got = f"{type(e).__name__}: {e}"
        results.put((trial, got))


def race(
    fn: Callable[[int], object], trials: int, workers: int = WORKERS
) -> list[tuple[int, object]]:
    """``fn(trial)`` in *workers* forked processes at once, for each trial in turn: each
    call's (trial, result), a raised exception's result its type and message."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers)
    results: multiprocessing.queues.Queue[tuple[int, object]] = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(fn, trials, barrier, results)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(workers * trials)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return got
