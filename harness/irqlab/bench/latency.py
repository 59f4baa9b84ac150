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
driver's work item) to the agent's return from select.

gpio-cdev is driven by the same generator toggling one GPIO line (see
:mod:`irqlab.bench.gpio`): the same events and period, each edge ACKed as the
device seq its ``seqno`` stands for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from irqlab.bench import gpio, stats
from irqlab.bench.collect import collect

__all__ = [
    "ACK_BY_ORDER",
    "CHUNKS",
    "NO_LATENCY",
    "UIO_PATHS",
    "arm_clean",
    "arm_measured",
    "driver_stats",
    "events_in",
    "latencies",
    "losses",
    "measure",
    "reset",
    "uio_arm_opts",
]

# Paths without a raise -> ACK latency, and why (none left).
NO_LATENCY: dict[str, str] = {}
# Paths whose reads carry no device seq: the agent ACKs the k-th event it has seen
# as seq first + k - 1 (SeqAcker) on a second, source-less fd of the irqlab node;
# a count of c ACKs the c events it includes, oldest first; a GPIO line event ACKs
# the event its request-wide seqno stands for (reported as dev_seq).
ACK_BY_ORDER = {"count", gpio.PATH}
CHUNKS = 5


def reset(guest: Any) -> None:
    """Disarm the agent's paths, drop queued messages, zero the device counters
    (unlike ``Guest.reset`` this never reloads the module: UIO mode has no /dev/irqlab0)."""
    guest.agent.reset()
    guest.agent.drain_events()
    guest.injector.reset_counters()


# The agent's uio path as the bench runs it, by bench path name:
#   uio          the driver's UIO mode (seed 001): /dev/uioN named irqlab0, BAR0
#                through the uio map, re-enable by IRQ_ENABLE;
#   uio-generic  the kernel's uio_pci_generic on an INTx device: BAR0 through sysfs
#                resource0, re-enable by clearing COMMAND.INTX_DISABLE in config space.
UIO_PATHS: dict[str, dict[str, Any]] = {
    "uio": {"uio_name": "irqlab0", "map": "uio", "reenable": "device"},
    "uio-generic": {"uio_name": "uio_pci_generic", "map": "resource0", "reenable": "config"},
}


def arm_clean(guest: Any, path: str, **opts: Any) -> tuple[Any, Any]:
    """Reset the guest, arm *path* on its node (with *opts*), zero the device counters:
    (agent, injector)."""
    reset(guest)
    agent = guest.agent
    if path in UIO_PATHS:
        agent.arm("uio", name=path, **uio_arm_opts(path), **opts)
    else:
        agent.arm(path, dev=guest.count_dev if path == "count" else guest.dev, **opts)
    guest.injector.reset_counters()
    return agent, guest.injector


def arm_measured(guest: Any, path: str, **extra: Any) -> tuple[Any, Any, int]:
    """:func:`arm_clean` for a measurement: (agent, injector, seq of the first event).

    Paths in ``ACK_BY_ORDER`` learn that seq at arming; gpio-cdev is armed on the
    generator's GPIO line (:mod:`irqlab.bench.gpio`), which is driven low first.
    *extra*: further arm options (a storm's ``summarize`` and ``ack``).
    """
    inj = guest.injector
    if path == gpio.PATH:
        gpio.prepare(inj)
    seq0: int = inj.counters().next_seq  # nothing raises between here and the burst
    opts = {"ack_dev": guest.dev, "ack_first_seq": seq0} if path in ACK_BY_ORDER else {}
    if path == gpio.PATH:
        opts.update(gpio.arm_opts())
    agent, inj = arm_clean(guest, path, **opts, **extra)
    return agent, inj, seq0


def uio_arm_opts(path: str = "uio") -> dict[str, Any]:
    """Arguments of the agent's uio path for bench path *path* (see ``UIO_PATHS``), with
    the registers from the parsed irqlab-regs.h."""
    from irqlab.contract.regs import REGS

    return {"dev": "", "regs": dict(REGS), **UIO_PATHS[path]}


def driver_stats(guest: Any, path: str) -> dict[str, int] | None:
    """The driver's device-wide counters (``IRQLAB_IOC_GET_STATS``), None for a UIO path
    (no /dev/irqlabN)."""
    if path in UIO_PATHS:
        return None
    drv = guest.agent.stats(dev=guest.dev).get("driver")
    return drv if isinstance(drv, dict) else None


def reported_lost(records: Iterable[Mapping[str, Any]]) -> int:
    """Events the driver said it lost, over *records* (each one's ``lost`` field)."""
    return sum(int(r.get("lost") or 0) for r in records)


def losses(
    counters: Any,
    handled: int,
    reported: int,
    drv0: dict[str, int] | None,
    drv1: dict[str, int] | None,
) -> dict[str, int | None]:
    """Where the events of a series that the responder never handled went: dropped at the
    device (its queue was full), ``reported`` lost in records' ``lost`` fields, and
    ``driver``: events the driver fetched from the device but the responder never read
    (its ring or staging buffer overflowed), from the driver's counters before and after
    (None without them, UIO).  ``pending`` is what is left: raised, neither lost nor
    handled."""
    fetched = None if drv0 is None or drv1 is None else drv1["events"] - drv0["events"]
    driver = None if fetched is None else max(0, fetched - handled)
    in_driver = max(reported, driver or 0)
    return {
        "device_dropped": counters.dropped,
        "reported": reported,
        "driver": driver,
        "pending": max(0, counters.raised - handled - counters.dropped - in_driver),
    }


def events_in(ev: dict[str, Any]) -> int:
    """Device events one agent message stands for (a UIO wake-up can drain several,
    a read of the counting file returns how many)."""
    seqs = ev.get("seqs")
    if isinstance(seqs, list):
        return len(seqs)
    count = ev.get("count")
    return count if isinstance(count, int) else 1


def latencies(ev: dict[str, Any]) -> list[Any]:
    """The ACK latencies one agent message carries (UIO: one per drained event)."""
    lat = ev.get("ack_latency_ns")
    return lat if isinstance(lat, list) else [lat]


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
    agent, inj, seq0 = arm_measured(guest, path)
    lost0 = gpio.driver_lost(guest) if on_line else 0
    drv0 = driver_stats(guest, path)
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
    drv1 = driver_stats(guest, path)
    seqs: list[Any] = []
    for e in evs:
        if isinstance(e.get("seqs"), list):
            seqs += e["seqs"]
        elif "dev_seq" in e:  # gpio-cdev: the seq the agent ACKed for this seqno
            seqs.append(e["dev_seq"])
        elif path in ACK_BY_ORDER:  # the seqs the counts stand for
            seqs += range(seq0 + len(seqs), seq0 + len(seqs) + events_in(e))
        else:
            seqs.append(e.get("seq"))
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
    reported = reported_lost(evs)
    if flagged:
        problems.append(f"{flagged} events flagged (overflow/device drop)")
    acks = [v for e in evs for v in latencies(e)]
    lat = [v for v in acks if isinstance(v, int)]
    if len(lat) != len(acks):
        problems.append(f"{len(acks) - len(lat)} ACKs without a latency")
    if len(acks) != len(seqs):
        problems.append(f"{len(acks)} ACK latencies for {len(seqs)} events")
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
        "lost": losses(counters, len(seqs), 0 if on_line else reported, drv0, drv1),
        "agent": {k: pstats.get(k) for k in ("events", "reads", "wakeups", "acks", "spurious")},
        "cdf": stats.cdf_points(lat, cdf_points) if lat else [],
        "problems": problems,
    }


def _p50(v: list[int]) -> float | None:
    return stats.summarize(v)["p50"] if v else None
