"""Host-side figures: QMP injection, boot -> agent ready, warm ``invoke test-all``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irqlab import paths
from irqlab.bench import stats

if TYPE_CHECKING:
    from irqlab.build.cache import Held

__all__ = [
    "NO_CHECKOUT",
    "PIPELINE_CHUNK",
    "PIPELINE_WINDOW",
    "boot_samples",
    "held_snapshot",
    "qmp_injection",
    "start_samples",
    "summarize_boots",
    "test_all",
]

PIPELINE_WINDOW = 8  # QEMU queues at most 8 requests per QMP session before it stops reading
PIPELINE_CHUNK = 500


def qmp_injection(guest: Any, *, count: int, min_seconds: float = 0.0) -> dict[str, Any]:
    """*count* back-to-back ``qom-set fifo-push`` (each raises one FIFO event), then
    the same number pipelined (:meth:`Injector.push_many`, ``PIPELINE_WINDOW`` in flight).

    ``noop_round_trip_ns``: a qom-set that raises nothing (the burst period set to
    its own value), separating QMP plumbing from the event's cost (guest IRQ work
    competes with the QMP thread for QEMU's big lock under TCG).
    Round trip = one qom-set call as the harness makes it (QMP client, JSON, the
    device's work, the reply).  Sustained rate = injections / elapsed wall time
    over the whole series (at least *min_seconds*: more injections are done if
    *count* finishes sooner).  Every injection must show up in the device's
    ``raised`` counter (FIFO overflow would be counted, not hidden).
    ``pipelined``: the same injections without waiting for each reply before
    sending the next; QEMU still runs them one by one, in order.
    """
    guest.reset()
    inj = guest.injector
    inj.reset_counters()
    rtts: list[int] = []
    t0 = time.perf_counter()
    i = 0
    while i < count or time.perf_counter() - t0 < min_seconds:
        t = time.perf_counter_ns()
        inj.push(i & 0xFFFF_FFFF)
        rtts.append(time.perf_counter_ns() - t)
        i += 1
    elapsed = time.perf_counter() - t0
    c = inj.counters()
    # The same qom-set plumbing without raising an event (rewrites the burst period).
    period = inj.burst_period()
    noop: list[int] = []
    for _ in range(min(i, 1000)):
        t = time.perf_counter_ns()
        inj.set_burst_period(period)
        noop.append(time.perf_counter_ns() - t)
    problems = []
    if c.raised + c.fifo_overflow != i:
        problems.append(f"{i} injections but raised={c.raised} fifo_overflow={c.fifo_overflow}")
    pipelined = _pipelined(inj, count=count, min_seconds=min_seconds)
    problems += pipelined.pop("problems")
    return {
        "injections": i,
        "elapsed_s": round(elapsed, 3),
        "rate_per_s": i / elapsed if elapsed else None,
        "round_trip_ns": stats.summarize(rtts),
        "noop_round_trip_ns": stats.summarize(noop),
        "chunks_ns": stats.chunk_percentiles(rtts, 5),
        "raised": c.raised,
        "fifo_overflow": c.fifo_overflow,
        "pipelined": pipelined,
        "problems": problems,
    }


def _pipelined(inj: Any, *, count: int, min_seconds: float) -> dict[str, Any]:
    inj.reset_counters()
    i = 0
    t0 = time.perf_counter()
    while i < count or time.perf_counter() - t0 < min_seconds:
        n = max(1, min(PIPELINE_CHUNK, count - i)) if i < count else PIPELINE_CHUNK
        inj.push_many([(i + k) & 0xFFFF_FFFF for k in range(n)], window=PIPELINE_WINDOW)
        i += n
    elapsed = time.perf_counter() - t0
    c = inj.counters()
    problems = []
    if c.raised + c.fifo_overflow != i:
        problems.append(
            f"pipelined: {i} injections but raised={c.raised} fifo_overflow={c.fifo_overflow}"
        )
    return {
        "window": PIPELINE_WINDOW,
        "injections": i,
        "elapsed_s": round(elapsed, 3),
        "rate_per_s": i / elapsed if elapsed else None,
        "problems": problems,
    }


def boot_samples(make_guest: Callable[[], Any], boots: int) -> dict[str, Any]:
    """Boot *boots* fresh guests (one at a time); phases of each, spread of agent_ready."""
    samples: list[dict[str, float]] = []
    for _ in range(boots):
        g = make_guest()
        try:
            g.start()
            samples.append({k: round(v, 3) for k, v in g.phases.items()})
        finally:
            g.close()
    return summarize_boots(samples)


WHOLE_COMMAND = "python3 -c 'print(1)'"


def held_snapshot(ensure: Callable[[], Path]) -> tuple[Path, Held]:
    """The ready-state snapshot *ensure* finds or makes, and a hold on it
    (:func:`irqlab.build.cache.hold`, released when it is left as a context manager):
    the snapshot cache's pruning (``IRQLAB_SNAPSHOT_KEEP``, run by other guests' saves)
    leaves a held snapshot alone.  Without it, other guests running evicted the snapshot
    between rounds and a "restore" row was a cold boot.  One pruned between the two
    steps is made again."""
    from irqlab.build import cache

    snapshot_dir = ensure()
    try:
        return snapshot_dir, cache.hold([snapshot_dir])
    except cache.OutputGone:
        snapshot_dir = ensure()
        return snapshot_dir, cache.hold([snapshot_dir])


def start_samples(makers: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, Any]]:
    """Interleaved rounds: per round, each kind of guest once (e.g. a cold boot and a
    restore from the snapshot), one at a time.  Per start: its phases and ``whole``,
    the whole process "start, run one command over SSH, stop" in seconds; per kind whose
    guests restore from the snapshot, ``cold_fallbacks``: the starts that booted cold
    instead (a snapshot refused or gone), which are no restore figures."""
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in makers}
    fallbacks = dict.fromkeys(makers, 0)
    for _ in range(rounds):
        for kind, make in makers.items():
            t0 = time.monotonic()
            g = make()
            try:
                g.start()
                g.sh(WHOLE_COMMAND)
                phases = dict(g.phases)
            finally:
                g.close()
            phases["whole"] = time.monotonic() - t0
            if g.config.snapshot and not g.restored:
                fallbacks[kind] += 1
            samples[kind].append({k: round(v, 3) for k, v in phases.items()})
    out = {kind: summarize_boots(s) for kind, s in samples.items()}
    for kind, n in fallbacks.items():
        if n:
            out[kind]["cold_fallbacks"] = n
    return out


def summarize_boots(samples: list[dict[str, float]]) -> dict[str, Any]:
    phases = sorted({k for s in samples for k in s})
    return {
        "boots": len(samples),
        "samples": samples,
        "phases": {p: stats.spread(s[p] for s in samples if p in s) for p in phases},
    }


NO_CHECKOUT = "invoke test-all runs in irqlab's source checkout, and irqlab runs from none"


def test_all(timeout: float = 3600.0) -> dict[str, Any]:
    """Time ``invoke test-all`` (run it once before for a warm cache: see the docs)."""
    root = paths.checkout_root()
    if root is None:  # the CLI refuses --test-all then; a library caller gets this
        return {"seconds": None, "returncode": None, "tail": [NO_CHECKOUT]}
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "invoke", "test-all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        rc: int | None = r.returncode
        tail = (r.stdout + r.stderr).splitlines()[-5:]
    except subprocess.TimeoutExpired:
        rc, tail = None, [f"timeout after {timeout:g} s"]
    return {"seconds": round(time.monotonic() - t0, 1), "returncode": rc, "tail": tail}
