"""Storms: the device's burst generator at a given rate, exact counts per path.

For one (path, rate): arm the path, start ``rate * duration`` events at
period ``1e9 / rate`` ns, wait for the generator to finish, then push a FIFO
*marker* word.  Events reach the path in order, so once a marker (or for the
counting file, a total that includes it) arrives, every burst event the path
will ever see has been seen; the marker's ``lost`` field also reports ring
losses just before it.  A marker that meets a still-full ring is dropped like
any event, so markers are re-pushed every second while the path drains.

The record paths run in the agent's storm mode (``summarize``: the burst's
records are counted in the guest and reported in summaries, see
``irqlab_agent.summary``; markers still arrive one by one, after the summary of
what preceded them) and ACK in ``ack`` mode (default :data:`STORM_ACK`).
observed is then the sum of the summaries' in-order (unique) burst records,
duplicates the out-of-order ones, reported_lost the sum of their ``lost``.

    raised     burst events the device raised (counters read before any marker)
    delivered  interrupt messages the device sent; coalesced: raises while pending
    observed   burst events the path handed to userspace (unique seqs; count sum)
    lost       burst events raised but never observed
      device_dropped   the device queue was full (device counter)
      reported_lost    sum of ``lost`` the driver reported in records (ring overflow)
      unexplained      lost - device_dropped - reported_lost (must be 0)

gpio-cdev (:func:`measure_gpio`) has no marker: a FIFO word is no line event.
The generator toggles a GPIO line instead (one edge per step) and the storm
ends when the line events account for every raised edge; see that function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from irqlab.bench import gpio
from irqlab.bench.collect import collect
from irqlab.bench.guest import agent_paths
from irqlab.bench.latency import (
    UIO_PATHS,
    arm_clean,
    arm_measured,
    driver_stats,
    reported_lost,
)
from irqlab.contract.regs import REGS

__all__ = [
    "DRIVER_STATS",
    "MARKER",
    "MARKER_RETRY_S",
    "RATES",
    "STORM_ACK",
    "collect_rounds",
    "highest_lossless",
    "measure",
    "measure_gpio",
    "storm_arm_opts",
    "summarized",
]

MARKER = 0x5EA1_0000  # FIFO words MARKER + k end a storm (see _until_marker)
MARKER_RETRY_S = 1.0
RATES = (1_000, 10_000, 50_000, 100_000)
# Record paths' ACK in storms: one write(2) of the seqs per read buffer (the driver
# ACKs each to the device, which counts them), not an ioctl per record.
STORM_ACK = "write"


def summarized(paths: Mapping[str, Mapping[str, Any]], path: str) -> bool:
    """Whether the agent's *path* reads event records (storm mode applies); *paths* is
    what the agent's hello lists (:func:`irqlab.bench.guest.agent_paths`)."""
    return bool(paths.get(path, {}).get("summarizable"))


def storm_arm_opts(
    paths: Mapping[str, Mapping[str, Any]], path: str, ack: str = STORM_ACK
) -> dict[str, Any]:
    """Arm options of *path* in storms: burst records summarized, markers one by one."""
    return {"summarize": [REGS.SRC_BURST], "ack": ack} if summarized(paths, path) else {}


def measure(
    guest: Any,
    path: str,
    *,
    rate: int,
    duration_s: float,
    idle: float = 30.0,
    ack: str = STORM_ACK,
) -> dict[str, Any]:
    if path == gpio.PATH:
        return measure_gpio(guest, rate=rate, duration_s=duration_s, idle=idle, ack=ack)
    n = max(1, round(rate * duration_s))
    period = max(REGS.MIN_BURST_PERIOD_NS, round(1e9 / rate))
    agent, inj = arm_clean(guest, path, **storm_arm_opts(agent_paths(guest), path, ack))
    drv0 = driver_stats(guest, path)
    seq0 = inj.counters().next_seq
    t0 = time.monotonic()
    gen_s = _generate(inj, n, period, duration_s)
    # Raise, delivery, coalescing and device drops all happen at raise time: this
    # snapshot is exact for the burst (the generator may have been stopped).
    c = inj.counters()
    raised = c.raised
    timeout = max(60.0, duration_s * 10 + 60)
    result: dict[str, Any] = {"path": path, "rate": rate, "period_ns": period, "events": n}
    if path == "count":
        # The file has no ring to lose from: it counts every event the device did not
        # drop, in order.  A total past the burst's events includes a marker, so every
        # burst event was counted; a marker the device dropped is followed by another.
        countable: int = raised - c.dropped
        total = 0

        def past(ev: dict[str, Any], upto: int) -> bool:
            nonlocal total
            total += int(ev.get("count") or 0)
            return total > countable

        _evs, why, markers = _until_marker(agent, inj, path, past, timeout=timeout, idle=idle)
        marker_seen = why == "until"
        observed = min(total, countable)
        reported = 0
        result["markers"], result["counted"] = markers, total
        if total > countable + markers:
            result["problems"] = [f"counted {total}: more than the {raised} raised + markers"]
    elif path in UIO_PATHS:
        # The user-space driver drains the device queue itself: only the device can
        # drop (EVQ full), and the first seq past the burst is a marker.
        evs, why, markers = _until_marker(
            agent, inj, path, partial(_past, first=seq0 + raised), timeout=timeout, idle=idle
        )
        marker_seen = why == "until"
        all_seqs = [q for e in evs for q in e.get("seqs", ())]
        observed = len({q for q in all_seqs if seq0 <= q < seq0 + raised})
        reported = 0
        result["markers"] = markers
        result["duplicates"] = sum(1 for q in all_seqs if seq0 <= q < seq0 + raised) - observed
    else:
        evs, why, markers = _until_marker(agent, inj, path, _is_marker, timeout=timeout, idle=idle)
        marker_seen = why == "until"
        sums = [e for e in evs if e.get("type") == "summary"]
        src = str(REGS.SRC_BURST)
        burst = [s["sources"][src] for s in sums if src in s["sources"]]
        # in_order: unique seqs, each above every earlier one (see irqlab_agent.summary)
        observed = sum(b["in_order"] for b in burst)
        # Markers pushed before the one seen were dropped by the full ring: their
        # loss is in the ``lost`` fields too and is not a burst event's.
        dropped_markers = (evs[-1]["value"] - MARKER) if marker_seen else markers
        reported = reported_lost(evs) - dropped_markers
        result["markers"] = markers
        result["duplicates"] = sum(b["out_of_order"] for b in burst)
        seen = [q for b in burst for q in (b["first"], b["last"])]
        result["seq_range"] = [min(seen), max(seen)] if seen else None
        if seen and not seq0 <= min(seen) <= max(seen) < seq0 + n:
            result["problems"] = [f"burst seqs {result['seq_range']} outside [{seq0}, {seq0 + n})"]
        lat = [e["ack_latency_ns"] for e in evs if isinstance(e.get("ack_latency_ns"), int)]
        lat += [s["ack_latency_max_ns"] for s in sums if s.get("ack_latency_max_ns") is not None]
        result["ack_latency_max_ns"] = max(lat) if lat else None
        result["agent"] = _agent_figures(sums, ack)
    drain_s = time.monotonic() - t0 - gen_s
    pstats = agent.disarm(path).get(path, {})
    after = inj.counters()  # ACKs are written before the message covering them
    result["device_acked"], result["device_ack_invalid"] = after.acked, after.ack_invalid
    drv1 = driver_stats(guest, path)
    if drv0 is not None and drv1 is not None:
        result["driver"] = {k: drv1[k] - drv0[k] for k in DRIVER_STATS if k in drv0}
    if isinstance(pstats.get("cpu_ns"), int):
        result.setdefault("agent", {})["cpu_s"] = round(pstats["cpu_ns"] / 1e9, 3)
    lost = raised - observed
    result.update(
        {
            "generator_s": round(gen_s, 3),
            "drain_s": round(drain_s, 3),
            "raised": raised,
            "delivered": c.delivered,
            "coalesced": c.coalesced,
            "observed": observed,
            "lost": lost,
            "device_dropped": c.dropped,
            "reported_lost": reported,
            "unexplained": lost - c.dropped - reported,
            "marker_seen": marker_seen,
            "end": why,
            "lossless": lost == 0 and marker_seen and raised == n and not result.get("problems"),
        }
    )
    return result


# Device-wide counters of the driver (struct irqlab_stats) kept per storm: where events
# went (hard IRQs, fetched, device-dropped marks, staging losses, wake-up runs, ACKs).
DRIVER_STATS = ("irqs", "irqs_spurious", "rearms", "events", "dev_dropped", "stage_lost",
                "deliveries", "acks", "acks_invalid")  # fmt: skip


def _agent_figures(sums: list[dict[str, Any]], ack: str) -> dict[str, Any]:
    """The agent's side of a storm in storm mode: ACK mode and its summaries' sums."""
    keys = ("acks", "ack_errors", "reads", "wakeups")
    return {
        "ack": ack,
        "summaries": len(sums),
        **{k: sum(int(s.get(k) or 0) for s in sums) for k in keys},
    }


def _is_marker(e: dict[str, Any], upto: int) -> bool:
    v = e.get("value", -1)
    return e.get("source") == REGS.SRC_FIFO and isinstance(v, int) and MARKER <= v < upto


def _past(e: dict[str, Any], upto: int, first: int) -> bool:
    return any(q >= first for q in e.get("seqs", ()))


def _until_marker(
    agent: Any,
    inj: Any,
    path: str,
    is_marker: Callable[..., bool],
    *,
    timeout: float,
    idle: float,
) -> tuple[list[dict[str, Any]], str, int]:
    """Events of *path* up to a marker; re-push a marker while the path is still draining.

    A marker pushed while the file's ring is full is dropped like any event, so a
    new one (value ``MARKER + k``) follows every ``MARKER_RETRY_S`` while events
    still flow.  Returns (events, why, markers pushed).
    """
    k = 0

    def next_round(_evs: list[dict[str, Any]], last: str | None) -> Callable[..., bool] | None:
        nonlocal k
        if last == "until":
            return None
        inj.push(MARKER + k)
        k += 1
        return partial(is_marker, upto=MARKER + k)

    evs, why = collect_rounds(agent, path, next_round, timeout=timeout, idle=idle)
    return evs, "until" if why == "done" else why, k


def collect_rounds(
    agent: Any,
    path: str,
    next_round: Callable[[list[dict[str, Any]], str | None], Callable[..., bool] | None],
    *,
    timeout: float,
    idle: float,
) -> tuple[list[dict[str, Any]], str]:
    """Messages of *path*, collected in rounds of up to ``MARKER_RETRY_S`` each.

    Before each round ``next_round(messages so far, why the last round ended)``
    does what the round needs (push a marker, read a counter) and returns the
    round's ``until`` predicate, or None when the storm is accounted for.
    Returns (messages, why): ``done``, or ``idle`` (nothing for *idle* seconds),
    or ``timeout``.
    """
    evs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    why: str | None = None
    while True:
        until = next_round(evs, why)
        if until is None:
            return evs, "done"
        got, why = collect(
            agent,
            path,
            until=until,
            timeout=max(0.0, deadline - time.monotonic()),
            idle=MARKER_RETRY_S,
        )
        evs += got
        now = time.monotonic()
        if got:
            quiet_since = now
        if why == "until":  # the round's goal was reached: let next_round judge
            continue
        if now >= deadline:
            return evs, "timeout"
        if now - quiet_since >= idle:
            return evs, "idle"


def highest_lossless(results: list[dict[str, Any]]) -> int | None:
    """The highest rate with no loss such that every lower measured rate was lossless too."""
    best = None
    for r in sorted(results, key=lambda r: r["rate"]):
        if not r.get("lossless"):
            break
        best = r["rate"]
    return best


def _generate(inj: Any, n: int, period: int, duration_s: float, line: int | None = None) -> float:
    """Run the generator (on GPIO *line* if given) to its end; return its wall seconds.

    Polls ``burst-count`` (events remaining): the generator runs in the device, there
    is nothing to wait on but its state.  A generator still running after 20x its
    length (+120 s) is stopped.
    """
    t0 = time.monotonic()
    inj.burst(n, period, line=line)
    deadline = t0 + duration_s * 20 + 120
    while inj.burst_remaining() > 0:
        if time.monotonic() > deadline:
            inj.stop_burst()
            break
        time.sleep(min(0.05, max(duration_s / 10, 0.005)))
    return time.monotonic() - t0


def measure_gpio(
    guest: Any, *, rate: int, duration_s: float, idle: float = 30.0, ack: str = STORM_ACK
) -> dict[str, Any]:
    """gpio-cdev storm: the generator toggles :data:`gpio.LINE`, one edge per step.

    The path runs in the agent's storm mode (``summarize``: it counts the line
    events' seqnos into summaries, see ``irqlab_agent.gpio_cdev``) and ACKs each read
    buffer in *ack* mode (default :data:`STORM_ACK`, as the record paths).

    No marker can end it (a FIFO word is no line event).  It ends exactly instead:
    gpiolib numbers the events that reach it 1, 2, ... (``seqno``) and drops the
    *oldest* when its buffer is full, so the newest always arrives.  Every raised
    edge is either dropped by the device (EVQ full), lost in the driver before
    gpiolib (``gpio_lost``) or numbered by gpiolib; once the highest seqno seen +
    device drops + driver losses reaches ``raised``, nothing is in flight and every
    event the path will ever see has been seen.  Failing that (a path that stopped),
    it ends after *idle* seconds without an event (``end`` = ``idle``, not lossless).

        observed            unique seqnos (the summaries' in_order)
        kernel_buffer_lost  highest seqno - observed (gaps: the kernel's line buffer)
        driver_lost         the driver's gpio_lost during the storm
        reported_lost       driver_lost + kernel_buffer_lost
        unexplained         lost - device_dropped - reported_lost (must be 0)
    """
    n = max(1, round(rate * duration_s))
    period = max(REGS.MIN_BURST_PERIOD_NS, round(1e9 / rate))
    agent, inj, _seq0 = arm_measured(guest, gpio.PATH, summarize=[REGS.SRC_GPIO], ack=ack)
    lost0 = gpio.driver_lost(guest)
    t0 = time.monotonic()
    try:
        gen_s = _generate(inj, n, period, duration_s, line=gpio.LINE)
    finally:
        gpio.done(inj)
    c = inj.counters()  # raises, delivery and device drops all happen at raise time
    target = c.raised - c.dropped  # edges gpiolib or the driver's queue got
    driver_lost = 0

    def next_round(evs: list[dict[str, Any]], _last: str | None) -> Callable[..., bool] | None:
        nonlocal driver_lost
        driver_lost = gpio.driver_lost(guest) - lost0
        top = max((int(e.get("last") or 0) for e in evs), default=0)
        if top + driver_lost >= target:
            return None
        return partial(_seqno_reaches, need=target - driver_lost)

    timeout = max(60.0, duration_s * 10 + 60)
    evs, why = collect_rounds(agent, gpio.PATH, next_round, timeout=timeout, idle=idle)
    exact = why == "done"
    drain_s = time.monotonic() - t0 - gen_s
    pstats = agent.disarm(gpio.PATH).get(gpio.PATH, {})
    # the summary of what was counted since the last one is sent before the disarm answer
    evs += [e for e in agent.drain_events() if e.get("path") == gpio.PATH]
    sums = [e for e in evs if e.get("type") == "summary"]
    observed = sum(int(s["in_order"]) for s in sums)
    top = max((int(s["last"]) for s in sums), default=0)
    duplicates = sum(int(s["out_of_order"]) for s in sums)
    kernel_lost = top - observed
    lost = c.raised - observed
    reported = driver_lost + kernel_lost
    lat = [s["ack_latency_max_ns"] for s in sums if isinstance(s.get("ack_latency_max_ns"), int)]
    after = inj.counters()
    agent_info = _agent_figures(sums, ack)
    if isinstance(pstats.get("cpu_ns"), int):
        agent_info["cpu_s"] = round(pstats["cpu_ns"] / 1e9, 3)
    return {
        "path": gpio.PATH,
        "rate": rate,
        "period_ns": period,
        "events": n,
        "line": gpio.LINE,
        "generator_s": round(gen_s, 3),
        "drain_s": round(drain_s, 3),
        "raised": c.raised,
        "delivered": c.delivered,
        "coalesced": c.coalesced,
        "observed": observed,
        "lost": lost,
        "device_dropped": c.dropped,
        "driver_lost": driver_lost,
        "kernel_buffer_lost": kernel_lost,
        "reported_lost": reported,
        "unexplained": lost - c.dropped - reported,
        "duplicates": duplicates,
        # With driver losses the seqno -> device seq mapping of the ACKs is off.
        "ack_latency_max_ns": max(lat) if lat and not driver_lost else None,
        "device_acked": after.acked,
        "device_ack_invalid": after.ack_invalid,
        "agent": agent_info,
        "end": "accounted" if exact else "idle",
        "marker_seen": None,  # no marker: see "end"
        "lossless": lost == 0 and exact and c.raised == n,
    }


def _seqno_reaches(e: dict[str, Any], need: int) -> bool:
    return int(e.get("last") or 0) >= need
