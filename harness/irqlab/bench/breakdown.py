"""Where a raise -> ACK latency goes, per event, from two stated clocks.

Clocks:

* **device**: QEMU_CLOCK_VIRTUAL ns, read by the device model.  The event's raise
  time (``raise_ns``), the hard IRQ handler's read of the TIME register
  (``isr_dev_ns``) and the ACK (the device answers ``ack_latency_ns`` = ACK time -
  raise time, so the ACK time is ``raise_ns + ack_latency_ns``).
* **guest**: the guest's CLOCK_MONOTONIC ns: hard IRQ handler entry (``isr_ns``), the
  driver's wake-up call (``drv_wake_ns``, both from the driver's record), the
  responder's return from the waiting syscall (``wake_ns``) and from the ACK
  (``ack_ns``); gpiolib's line-event timestamp (``gpio_ts_ns``).

The offset device - guest is measured by the native responder itself
(``clock_start``/``clock_end``: the device's TIME register read through BAR0,
bracketed by two CLOCK_MONOTONIC reads, the narrowest of 64 tries, before the first
and after the last event).  An event's guest times are mapped onto the device clock
with the offset interpolated linearly between the two.  The **stated error** of
that mapping is ``error_ns = max(bracket) / 2 + |drift| / 2 + 1``: half the wider
bracket (where inside it the device read the clock is unknown) plus half the
drift (drift = end offset - start offset: how far the straight line can be off if
the drift was not linear).

Stages (whichever the event has the timestamps for):

=================  ==================================================  ==============
stage              from -> to                                          clock
=================  ==================================================  ==============
``raise_to_isr``   device raise -> hard IRQ handler entry              mapped
``isr_to_wake``    handler entry -> the driver's wake-up call          guest
``wake_to_user``   wake-up call -> the syscall returns in userspace    guest
``user_to_ack``    syscall return -> the ACK arrives at the device     mapped
``raise_to_user``  raise -> syscall return (UIO)                      device [#]_
``raise_to_gpiolib`` raise -> gpiolib's event timestamp (gpio-cdev)    mapped
``gpiolib_to_user`` gpiolib's timestamp -> syscall return (gpio-cdev)  guest
=================  ==================================================  ==============

.. [#] UIO: the responder reads the device clock (TIME, through the mapped BAR)
   right after read(2) returns, so the UIO stages are in the device clock alone.
   The counting file and gpio-cdev line events carry no raise time: only the
   guest-clock stages (``gpiolib_to_user``; ``user_to_ack`` = syscall return -> the
   ACK ioctl returned), which do not add up to the total.

An event that had no interrupt or wake-up of its own counts as ``early_reads`` and
only in ``total``: its record was queued after the wake-up that read it
(``drv_wake_ns`` -- gpio-cdev: gpiolib's timestamp -- later than ``wake_ns``: a
drain after an earlier signal or readiness took it), or it was raised after the
running handler's entry (mapped) or its device clock read (``raise_ns >
isr_dev_ns``: the handler or a later pass of it fetched it; the vCPU can be
descheduled between the entry and that read), or, for UIO, after the device clock read that
follows the wake-up (the drain took it).

The stages of an event telescope to its total (the device's raise -> ACK), so
their sum equals the total up to rounding; what the clocks' error can break is
the *order* of the cross-clock points, which :func:`check` verifies per event:
the ACK not before the syscall return, the handler entry not after its own device
clock read, the ACK at the device not after the ACK call returned -- each within
``error_ns`` (an event raised after its handler's entry has no stages of its own,
above).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from irqlab.bench import stats

STAGES = (
    "raise_to_isr",
    "isr_to_wake",
    "wake_to_user",
    "raise_to_user",
    "raise_to_gpiolib",
    "gpiolib_to_user",
    "user_to_ack",
)
Row = Mapping[str, Any]


class ClockMap:
    """Guest CLOCK_MONOTONIC -> device clock, from the responder's two syncs."""

    def __init__(self, start: Mapping[str, int], end: Mapping[str, int] | None) -> None:
        self.t0, self.o0 = int(start["mono_ns"]), int(start["offset_ns"])
        e = end if end is not None else start
        self.t1, self.o1 = int(e["mono_ns"]), int(e["offset_ns"])
        self.drift_ns = self.o1 - self.o0
        bracket = max(int(start["bracket_ns"]), int(e["bracket_ns"]))
        self.error_ns = bracket // 2 + abs(self.drift_ns) // 2 + 1

    def offset(self, mono: int) -> float:
        if self.t1 <= self.t0:
            return float(self.o0)
        f = min(1.0, max(0.0, (mono - self.t0) / (self.t1 - self.t0)))
        return self.o0 + f * self.drift_ns

    def to_dev(self, mono: int) -> float:
        return mono + self.offset(mono)

    def as_json(self) -> dict[str, Any]:
        return {
            "offset_start_ns": self.o0,
            "offset_end_ns": self.o1,
            "drift_ns": self.drift_ns,
            "error_ns": self.error_ns,
            "method": "device TIME register via BAR0, bracketed by CLOCK_MONOTONIC, "
            "narrowest of 64, before and after the run; interpolated",
        }


def _set(row: Row, key: str) -> int | None:
    v = row.get(key)
    return v if isinstance(v, int) and v > 0 else None


def stages(row: Row, clock: ClockMap) -> dict[str, float]:
    """The stages of one event (ns), as far as its timestamps go; ``total`` too."""
    lat, raise_ns, wake = row.get("ack_latency_ns"), _set(row, "raise_ns"), _set(row, "wake_ns")
    out: dict[str, float] = {}
    if not isinstance(lat, int) or wake is None:
        return out
    out["total"] = float(lat)
    isr, drv = _set(row, "isr_ns"), _set(row, "drv_wake_ns")
    gts = _set(row, "gpio_ts_ns")
    if (drv is not None and drv > wake) or (gts is not None and gts > wake):
        # Queued after the wake-up whose read took it (a drain after an earlier
        # signal or readiness): it had no wake-up of its own to time.
        return {"total": float(lat), "early_read": 1.0}
    isr_dev, dev_wake = _set(row, "isr_dev_ns"), _set(row, "dev_wake_ns")
    err = clock.error_ns
    if raise_ns is not None and (
        (isr_dev is not None and raise_ns > isr_dev)
        or (isr is not None and raise_ns > clock.to_dev(isr) + err)
        or (dev_wake is not None and raise_ns > dev_wake)
    ):
        # Raised while a handler (or the UIO drain) was already running: fetched by a
        # pass that began before it, so it had no interrupt or wake-up of its own.
        return {"total": float(lat), "early_read": 1.0}
    if raise_ns is not None:
        ack_dev = raise_ns + lat
        out["user_to_ack"] = ack_dev - clock.to_dev(wake)
        if isr is not None and drv is not None:
            out["raise_to_isr"] = clock.to_dev(isr) - raise_ns
            out["isr_to_wake"] = float(drv - isr)
            out["wake_to_user"] = float(wake - drv)
        elif gts is not None:
            out["raise_to_gpiolib"] = clock.to_dev(gts) - raise_ns
            out["gpiolib_to_user"] = float(wake - gts)
        else:  # UIO: the responder read the device clock right after the wake-up
            user_dev = float(dev_wake) if dev_wake is not None else clock.to_dev(wake)
            out["raise_to_user"] = user_dev - raise_ns
            out["user_to_ack"] = ack_dev - user_dev
    else:  # no raise time (counting file, gpio-cdev): guest-clock stages only
        ack = _set(row, "ack_ns")
        if gts is not None:
            out["gpiolib_to_user"] = float(wake - gts)
        if ack is not None:
            out["user_to_ack"] = float(ack - wake)
    return out


def check(row: Row, clock: ClockMap) -> list[str]:
    """What in one event contradicts the clocks' stated error (empty: consistent)."""
    st = stages(row, clock)
    err = clock.error_ns
    bad: list[str] = []
    if "early_read" in st:
        st = {}  # no stages of its own; the order of its clock points still holds
    for name in STAGES:
        if name in st and st[name] < -err:
            bad.append(f"{name} = {st[name]:.0f} ns < -{err} ns")
    if "total" in st and _set(row, "raise_ns") is not None:
        parts = sum(v for k, v in st.items() if k != "total")
        if abs(parts - st["total"]) > err:
            bad.append(f"stages sum to {parts:.0f} ns, total {st['total']:.0f} ns")
    isr, isr_dev = _set(row, "isr_ns"), _set(row, "isr_dev_ns")
    if isr is not None and isr_dev is not None and clock.to_dev(isr) > isr_dev + err:
        bad.append("hard IRQ entry after the handler's own device clock read")
    ack, raise_ns, lat = _set(row, "ack_ns"), _set(row, "raise_ns"), row.get("ack_latency_ns")
    if ack is None or raise_ns is None or not isinstance(lat, int):
        return bad
    if raise_ns + lat > clock.to_dev(ack) + err:
        bad.append("ACK at the device after the ACK call returned")
    return bad


def summarize(rows: Sequence[Row], clock: ClockMap | None) -> dict[str, Any]:
    """p50/p99 per stage over *rows*, the clock, and the events that break the order."""
    return summarize_parts([(rows, clock)])


def summarize_parts(parts: Sequence[tuple[Sequence[Row], ClockMap | None]]) -> dict[str, Any]:
    """:func:`summarize` over several series' rows, each with its own clock (a path
    measured in rounds); ``clock`` is the first one's."""
    if not parts or any(clock is None for _, clock in parts):
        return {"clock": None, "stages": {}, "problems": ["no clock offset measured"]}
    per: dict[str, list[float]] = {}
    bad: list[tuple[int, list[str]]] = []
    early = 0
    i = -1
    for rows, clock in parts:
        assert clock is not None
        for r in rows:
            i += 1
            st = stages(r, clock)
            if st.pop("early_read", None):
                early += 1
            for k, v in st.items():
                per.setdefault(k, []).append(v)
            b = check(r, clock)
            if b:
                bad.append((i, b))
    clock = parts[0][1]
    assert clock is not None
    out_stages = {}
    for k in ("total", *STAGES):
        vals = per.get(k)
        if vals:
            s = stats.summarize(vals)
            out_stages[k] = {"p50": s["p50"], "p99": s["p99"], "n": len(vals)}
    problems = []
    if bad:
        problems.append(
            f"{len(bad)} events break the clocks' order (first: #{bad[0][0]}: "
            f"{'; '.join(bad[0][1])})"
        )
    return {
        "clock": clock.as_json(),
        "stages": out_stages,
        "inconsistent_events": len(bad),
        "early_reads": early,
        "problems": problems,
    }
