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
gpio-cdev events have none of these; ``gpiolib_to_user`` is guest
CLOCK_MONOTONIC from gpiolib's event timestamp (its handler run, from the
driver's work item) to the agent's return from poll.

gpio-cdev is driven by the same generator toggling one GPIO line (see
:mod:`irqlab.bench.gpio`): the same events and period, each edge ACKed as the
device seq its ``seqno`` stands for.
"""

from __future__ import annotations

import time
from typing import Any

from irqlab.bench import gpio, stats
from irqlab.bench.collect import collect

# Paths that carry per-event records (and so a seq to ACK).  The counting file
# returns only a number: it has no raise->ACK latency, only storm counts.
NO_LATENCY = {
    "count": "the counting file returns a number, not records: nothing to ACK",
}
# Paths whose agent ACKs through the mapped ACK register without reading the latency
# back: only the device histogram has their latencies (log2 buckets).
HISTOGRAM_ONLY = {"uio"}
CHUNKS = 5


def reset(guest: Any) -> None:
    """Disarm the agent's paths, drop queued messages, zero the device counters
    (unlike ``Guest.reset`` this never reloads the module: UIO mode has no /dev/irqlab0)."""
    guest.agent.reset()
    guest.agent.drain_events()
    guest.injector.reset_counters()


def arm_clean(guest: Any, path: str) -> tuple[Any, Any]:
    """Reset the guest, arm *path* on its node, zero the device counters: (agent, injector)."""
    reset(guest)
    agent = guest.agent
    if path == "uio":
        agent.arm(path, **uio_arm_opts())
    else:
        agent.arm(path, dev=guest.count_dev if path == "count" else guest.dev)
    guest.injector.reset_counters()
    return agent, guest.injector


def arm_line_clean(guest: Any) -> tuple[Any, Any]:
    """:func:`arm_clean` for gpio-cdev on the generator's GPIO line (:func:`gpio.arm`)."""
    reset(guest)
    gpio.arm(guest)
    guest.injector.reset_counters()
    return guest.agent, guest.injector


def uio_arm_opts() -> dict[str, Any]:
    """The driver's UIO mode (seed 001): /dev/uioN named irqlab0, BAR0 through the uio
    map, re-enable by IRQ_ENABLE; registers from the parsed irqlab-regs.h."""
    from irqlab.regs import REGS

    return {"dev": "", "regs": dict(REGS), "uio_name": "irqlab0", "map": "uio",
            "reenable": "device"}  # fmt: skip


def events_in(ev: dict[str, Any]) -> int:
    """Device events one agent message stands for (a UIO wake-up can drain several)."""
    seqs = ev.get("seqs")
    return len(seqs) if isinstance(seqs, list) else 1


def histogram_summary(hist: Any) -> dict[str, Any]:
    """p50/p90/p99 as the *upper* bounds the log2 histogram gives (conservative)."""
    out: dict[str, Any] = {"n": hist.count, "exact": False}
    out["min"] = hist.min_ns if hist.count else None
    for p in stats.PERCENTILES:
        out[f"p{p:g}"] = hist.percentile_upper_ns(p)
    out["max"] = hist.max_ns if hist.count else None
    out["mean"] = hist.mean_ns()
    return out


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
    on_line = path == gpio.PATH
    agent, inj = arm_line_clean(guest) if on_line else arm_clean(guest, path)
    lost0 = gpio.driver_lost(guest) if on_line else 0
    seq0 = inj.counters().next_seq
    t0 = time.monotonic()
    try:
        inj.burst(events, period_ns, line=gpio.LINE if on_line else None)
        timeout = events * period_ns / 1e9 * 4 + 120
        seen = 0

        def enough(ev: dict[str, Any]) -> bool:
            nonlocal seen
            # gpio-cdev: the newest line event always reaches the buffer (the kernel
            # drops the oldest), so its seqno says how far the path got.
            seen = max(seen, ev.get("seqno", 0)) if on_line else seen + events_in(ev)
            done: bool = seen >= events
            return done

        evs, why = collect(agent, path, until=enough, timeout=timeout, idle=idle)
        wall = time.monotonic() - t0
        pstats = agent.disarm(path).get(path, {})
    finally:
        if on_line:
            gpio.done(inj)
    counters = inj.counters()
    hist = inj.histogram()
    seqs: list[Any] = []
    for e in evs:
        seqs += e["seqs"] if isinstance(e.get("seqs"), list) else [e.get("dev_seq", e.get("seq"))]
    problems: list[str] = []
    if on_line:
        problems += gpio.edge_problems(evs)
        lost = gpio.driver_lost(guest) - lost0
        if lost:
            problems.append(f"{lost} GPIO events lost in the driver before gpiolib")
    if len(seqs) != events:
        problems.append(f"got {len(seqs)} of {events} events ({why})")
    if seqs != list(range(seq0, seq0 + len(seqs))):
        problems.append("sequence numbers not consecutive from the first raised")
    flagged = sum(1 for e in evs if e.get("flags") or e.get("lost"))
    if flagged:
        problems.append(f"{flagged} events flagged (overflow/device drop)")
    if path in HISTOGRAM_ONLY:
        lat: list[int] = []
        summary = histogram_summary(hist)
        agreement = stats.histogram_agreement(summary, hist, ())
        agreement["problems"] = [] if hist.count == events else [f"count: {hist.count}"]
    else:
        lat = [e["ack_latency_ns"] for e in evs if isinstance(e.get("ack_latency_ns"), int)]
        if len(lat) != len(evs):
            problems.append(f"{len(evs) - len(lat)} events without an ACK latency")
        summary = stats.summarize(lat)
        summary["exact"] = True
        agreement = stats.histogram_agreement(summary, hist)
    problems += [f"histogram {p}" for p in agreement["problems"]]
    breakdown = {
        "raise_to_isr_dev": _p50(_deltas(evs, "raise_ns", "isr_dev_ns")),
        "isr_to_drv_wake": _p50(_deltas(evs, "isr_ns", "drv_wake_ns")),
        "drv_wake_to_user": _p50(_deltas(evs, "drv_wake_ns", "wake_ns")),
    }
    if on_line:
        breakdown["gpiolib_to_user"] = _p50(_deltas(evs, "timestamp_ns", "wake_ns"))
    return {
        "path": path,
        "events": events,
        "period_ns": period_ns,
        "wall_s": round(wall, 3),
        "latency_ns": summary,
        "chunks_ns": stats.chunk_percentiles(lat, CHUNKS),
        "device_histogram": agreement,
        "breakdown_p50_ns": breakdown,
        "counters": counters.__dict__,
        "agent": {k: pstats.get(k) for k in ("events", "reads", "wakeups", "acks", "spurious")},
        "cdf": stats.cdf_points(lat, cdf_points) if lat else _hist_cdf(hist),
        "problems": problems,
    }


def _hist_cdf(hist: Any) -> list[tuple[float, float]]:
    """CDF points at the upper edge of each non-empty log2 bucket."""
    out: list[tuple[float, float]] = []
    seen = 0
    for i, n in enumerate(hist.buckets):
        if n:
            seen += n
            out.append((float(min(hist.bucket_bounds(i)[1] - 1, hist.max_ns)), seen / hist.count))
    return out


def _p50(v: list[int]) -> float | None:
    return stats.summarize(v)["p50"] if v else None
