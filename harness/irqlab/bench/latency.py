"""Raise -> userspace-ACK latency of one notification path, from the device's clock.

The device generator raises *n* events at a fixed period well above what the
agent needs per event (so the figure is a latency, not a queue).  The agent
reads each event through the armed path and ACKs it with ``IRQLAB_IOC_ACK``;
the device answers with ``now - raise_ts(seq)`` in QEMU_CLOCK_VIRTUAL ns and
adds it to its log2 histogram.  Both are kept: the exact per-event values
give the percentiles, the histogram must agree with them (same clock, same
events) or the result says so.

Breakdown (p50 of each, ns): ``raise_to_isr_dev`` is device clock from raise
to the hard IRQ handler's read of the clock; ``isr_to_drv_wake`` and
``drv_wake_to_user`` are guest CLOCK_MONOTONIC from hard IRQ entry to the
driver's wake-up call and from there to the agent's return from the syscall.
"""

from __future__ import annotations

import time
from typing import Any

from irqlab.bench import stats
from irqlab.bench.collect import collect

# Paths that carry per-event records (and so a seq to ACK).  The counting file
# returns only a number: it has no raise->ACK latency, only storm counts.
NO_LATENCY = {"count": "the counting file returns a number, not records: nothing to ACK"}
CHUNKS = 5


def _deltas(evs: list[dict[str, Any]], a: str, b: str) -> list[int]:
    out = []
    for e in evs:
        x, y = e.get(a), e.get(b)
        if isinstance(x, int) and isinstance(y, int) and y >= x:
            out.append(y - x)
    return out


def measure(
    guest: Any,
    path: str,
    *,
    events: int,
    period_ns: int,
    idle: float = 30.0,
    cdf_points: int = 400,
) -> dict[str, Any]:
    """One path, *events* events at *period_ns*; a JSON-ready dict (``error`` set on failure)."""
    if path in NO_LATENCY:
        return {"path": path, "skipped": NO_LATENCY[path]}
    guest.reset()
    agent = guest.agent
    inj = guest.injector
    agent.arm(path, dev=guest.dev)
    inj.reset_counters()
    seq0 = inj.counters().next_seq
    t0 = time.monotonic()
    inj.burst(events, period_ns)
    timeout = events * period_ns / 1e9 * 4 + 120
    evs, why = collect(agent, path, n=events, timeout=timeout, idle=idle)
    wall = time.monotonic() - t0
    pstats = agent.disarm(path).get(path, {})
    counters = inj.counters()
    hist = inj.histogram()
    lat = [e["ack_latency_ns"] for e in evs if isinstance(e.get("ack_latency_ns"), int)]
    seqs = [e.get("seq") for e in evs]
    problems: list[str] = []
    if len(evs) != events:
        problems.append(f"got {len(evs)} of {events} events ({why})")
    if seqs != list(range(seq0, seq0 + len(evs))):
        problems.append("sequence numbers not consecutive from the first raised")
    if len(lat) != len(evs):
        problems.append(f"{len(evs) - len(lat)} events without an ACK latency")
    flagged = sum(1 for e in evs if e.get("flags") or e.get("lost"))
    if flagged:
        problems.append(f"{flagged} events flagged (overflow/device drop)")
    summary = stats.summarize(lat)
    agreement = stats.histogram_agreement(summary, hist)
    problems += [f"histogram {p}" for p in agreement["problems"]]
    return {
        "path": path,
        "events": events,
        "period_ns": period_ns,
        "wall_s": round(wall, 3),
        "latency_ns": summary,
        "chunks_ns": stats.chunk_percentiles(lat, CHUNKS),
        "device_histogram": agreement,
        "breakdown_p50_ns": {
            "raise_to_isr_dev": _p50(_deltas(evs, "raise_ns", "isr_dev_ns")),
            "isr_to_drv_wake": _p50(_deltas(evs, "isr_ns", "drv_wake_ns")),
            "drv_wake_to_user": _p50(_deltas(evs, "drv_wake_ns", "wake_ns")),
        },
        "counters": counters.__dict__,
        "agent": {k: pstats.get(k) for k in ("events", "reads", "wakeups", "acks", "spurious")},
        "cdf": stats.cdf_points(lat, cdf_points),
        "problems": problems,
    }


def _p50(v: list[int]) -> float | None:
    return stats.summarize(v)["p50"] if v else None
