"""Latency series that measure a queue, not a latency, or whose checks failed: the
report's warnings.

A series is **queueing** when the responder (agent or native) does not keep up with
the generator: its p50 is above the generator period (most events were raised
while an earlier one still waited, so the figure is mostly queue delay), or
events were still pending when the series ended (raised but never handled).
The report prints these instead of letting queue delay pass for latency.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def pending(series: dict[str, Any]) -> int:
    """Events the series raised but neither handled nor lost by its end: an event the
    device dropped, or the driver's ring or staging buffer had no room for, is lost, not
    pending (the series' ``lost``, :func:`irqlab.bench.latency.losses`; a result without
    it: the device's drops only)."""
    lost = series.get("lost")
    if isinstance(lost, dict) and isinstance(lost.get("pending"), int):
        return int(lost["pending"])
    if isinstance(series.get("pending_at_end"), int):
        return int(series["pending_at_end"])
    counters = series.get("counters") or {}
    raised, dropped = counters.get("raised"), counters.get("dropped")
    n = (series.get("latency_ns") or {}).get("n")
    if not isinstance(raised, int) or not isinstance(n, int):
        return 0
    return max(0, raised - n - (dropped if isinstance(dropped, int) else 0))


def series_warnings(series: dict[str, Any] | None) -> list[str]:
    """Why one latency series is queueing (empty: it is not)."""
    if not series or "latency_ns" not in series:
        return []
    out = []
    period = series.get("period_ns")
    p50 = series["latency_ns"].get("p50")
    if isinstance(period, int) and period > 0 and isinstance(p50, int | float) and p50 > period:
        out.append(
            f"p50 {p50 / 1e6:.2f} ms is above the generator period {period / 1e6:g} ms "
            f"({p50 / period:.1f} periods): queue delay, not latency"
        )
    left = pending(series)
    if left:
        out.append(f"{left} events still pending at the end of the series")
    return out


def all_series(result: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, series) of every latency series of a result: agent and native, per run."""
    runs = result.get("runs") or []
    for i, run in enumerate(runs):
        tag = f"run {i + 1}: " if len(runs) > 1 else ""
        for pl, per in (run.get("latency") or {}).items():
            for path, s in (per or {}).items():
                if s:
                    yield f"{tag}agent {path} (wakeup={pl})", s
        for path, s in (run.get("native") or {}).items():
            if s:
                yield f"{tag}native {path}", s


def failed_checks(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(series label, its problems in one line) for every latency series (agent and
    native) and storm of *result* whose checks failed: such a series is no figure to
    trust, and the bench's exit status says so."""
    out = [
        (label, "; ".join(map(str, s["problems"])))
        for label, s in all_series(result)
        if s.get("problems")
    ]
    for path, rs in ((result.get("storm") or {}).get("paths") or {}).items():
        for r in rs or []:
            if r and r.get("problems"):
                out.append((f"storm {path} {r.get('rate')}/s", "; ".join(r["problems"])))
    return out


def warnings(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(series label, warning) for every queueing series of *result*."""
    return [(label, w) for label, s in all_series(result) for w in series_warnings(s)]
