"""Raise -> ACK latency of one path through the native responder (issue 15).

The agent starts ``irqlab-respond`` (guest-kmod/responder/, :mod:`irqlab_agent.native`)
armed on the path as its own Python path would be, waits until it is armed, the
device generator raises *events* events at *period_ns*, and the responder ACKs
each right after its wake-up and records per-event timestamps.  The result has
the same shape as :func:`irqlab.bench.latency.measure` (``latency_ns`` exact from
the device's per-event answers, cross-checked with the device histogram) plus the
per-stage breakdown of :mod:`irqlab.bench.breakdown` and the responder's own
counters.  Checks: every raised seq seen exactly once, in order, none flagged,
every ACK accepted, and the device's ``acked`` equal to the responder's ACKs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from irqlab.bench import breakdown, gpio, latency, stats

# bench path -> the responder's path and extra options
RESPONDER_PATH = {
    **{p: p for p in ("read", "nonblock", "poll", "select", "epoll-lt", "epoll-et")},
    **{p: p for p in ("sigio", "setsig", "eventfd", "count", gpio.PATH)},
    **{p: "uio" for p in latency.UIO_PATHS},
}
# the responder's own counters kept in the result
NATIVE_COUNTERS: tuple[str, ...] = ("exit", "wakeups", "reads", "eagain", "spurious", "acks")
NATIVE_COUNTERS += ("ack_errors", "signals", "cpu_ns")


def start_args(guest: Any, path: str, seq0: int) -> dict[str, Any]:
    """``native_start`` arguments for bench path *path* whose first event is *seq0*."""
    args: dict[str, Any] = {"path": RESPONDER_PATH[path], "name": f"native-{path}"}
    if path in latency.UIO_PATHS:
        u = latency.UIO_PATHS[path]
        args.update(uio_name=u["uio_name"], map=u["map"], reenable=u["reenable"])
    elif path == gpio.PATH:
        args.update(ack_dev=guest.dev, ack_first_seq=seq0, line=gpio.LINE, buffer=gpio.BUFFER)
    elif path == "count":
        args.update(dev=guest.count_dev, ack_dev=guest.dev, ack_first_seq=seq0)
    else:
        args["dev"] = guest.dev
        if path == "setsig":
            args["sig"] = 1  # SIGRTMIN+1, the agent's default
    return args


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    fields = result.get("fields") or []
    return [dict(zip(fields, r, strict=True)) for r in result.get("rows") or []]


def clock_of(result: dict[str, Any]) -> breakdown.ClockMap | None:
    start = result.get("clock_start")
    if not isinstance(start, dict):
        return None
    end = result.get("clock_end")
    return breakdown.ClockMap(start, end if isinstance(end, dict) else None)


def run(guest: Any, path: str, *, events: int, period_ns: int) -> dict[str, Any]:
    """Start the responder, raise the burst, wait for it: ``seq0``, ``result`` (the
    responder's JSON), ``rc``, ``timed_out``, ``stderr``, ``wall_s``."""
    inj = guest.injector
    latency.reset(guest)
    on_line = path == gpio.PATH
    if on_line:
        gpio.prepare(inj)
    seq0: int = inj.counters().next_seq  # nothing raises between here and the burst
    args = start_args(guest, path, seq0)
    guest.agent.request("native_start", count=events, **args)
    inj.reset_counters()
    t0 = time.monotonic()
    wait_s = events * period_ns / 1e9 * 4 + 60
    try:
        inj.burst(events, period_ns, line=gpio.LINE if on_line else None)
        resp = guest.agent.request(
            "native_wait", name=args["name"], wait_s=wait_s, timeout=wait_s + 60
        )
    finally:
        if on_line:
            gpio.done(inj)
    return {"seq0": seq0, "wall_s": time.monotonic() - t0, **resp}


def measure(
    guest: Any, path: str, *, events: int, period_ns: int, cdf_points: int = 400
) -> dict[str, Any]:
    """One path through the responder; a JSON-ready dict like ``latency.measure``'s."""
    return _series(guest, path, events=events, period_ns=period_ns, cdf_points=cdf_points)[0]


def _series(
    guest: Any, path: str, *, events: int, period_ns: int, cdf_points: int = 400
) -> tuple[dict[str, Any], list[int], tuple[list[dict[str, Any]], breakdown.ClockMap | None]]:
    """:func:`measure`'s result, its ACK latencies in event order, and its rows with
    their clock (what :func:`measure_rounds` pools over rounds)."""
    drv0 = latency.driver_stats(guest, path)
    got = run(guest, path, events=events, period_ns=period_ns)
    inj = guest.injector
    counters = inj.counters()
    drv1 = latency.driver_stats(guest, path)
    hist = inj.histogram()
    res = got.get("result") or {}
    rows = rows_of(res)
    seq0 = got["seq0"]
    problems: list[str] = []
    if got.get("timed_out"):
        problems.append(f"the responder did not finish in time (stopped): {res.get('exit')}")
    if got.get("rc") not in (0, None) or not res:
        problems.append(f"responder exit {got.get('rc')}: {got.get('stderr', '').strip()[-300:]}")
    seqs = [r["seq"] for r in rows]
    if len(seqs) != events:
        problems.append(f"got {len(seqs)} of {events} events")
    if seqs != list(range(seq0, seq0 + len(seqs))):
        problems.append("sequence numbers not each seen once in order from the first raised")
    if path != gpio.PATH:  # gpio-cdev's flags field carries the edge id
        flagged = sum(1 for r in rows if r.get("flags") or r.get("lost"))
        if flagged:
            problems.append(f"{flagged} events flagged (overflow/device drop)")
    else:
        problems += gpio.edge_problems(
            [{"seqno": r["lost"], "edge": _EDGES.get(r["flags"], "?")} for r in rows]
        )
    lat = [r["ack_latency_ns"] for r in rows if isinstance(r.get("ack_latency_ns"), int)]
    if len(lat) != len(rows):
        problems.append(f"{len(rows) - len(lat)} ACKs without a latency")
    acks = res.get("acks")
    if acks != counters.acked:
        problems.append(f"responder ACKs {acks} != device acked {counters.acked}")
    summary = stats.summarize(lat)
    summary["exact"] = True
    agreement = stats.histogram_agreement(summary, hist)
    problems += [f"histogram {p}" for p in agreement["problems"]]
    clock = clock_of(res)
    bd = breakdown.summarize(rows, clock)
    problems += [f"breakdown: {p}" for p in bd["problems"]]
    # gpio-cdev's lost field carries the seqno
    reported = 0 if path == gpio.PATH else latency.reported_lost(rows)
    lost = latency.losses(counters, len(rows), reported, drv0, drv1)
    result = {
        "path": path,
        "responder": "native",
        "events": events,
        "period_ns": period_ns,
        "wall_s": round(got["wall_s"], 3),
        "latency_ns": summary,
        "chunks_ns": stats.chunk_percentiles(lat, latency.CHUNKS),
        "device_histogram": agreement,
        "breakdown": bd,
        "breakdown_p50_ns": {k: v["p50"] for k, v in bd["stages"].items() if k != "total"},
        "counters": counters.__dict__,
        "lost": lost,
        "pending_at_end": lost["pending"],
        "native": {k: res.get(k) for k in NATIVE_COUNTERS},
        "cdf": stats.cdf_points(lat, cdf_points) if lat else [],
        "problems": problems,
    }
    return result, lat, (rows, clock)


# Device counters that are a state at the end, not a count over the series.
_STATE_COUNTERS = ("evq_count", "next_seq")


def measure_rounds(
    guest: Any,
    paths: Sequence[str],
    *,
    events: int,
    period_ns: int,
    rounds: int,
    on_error: Callable[[str, BaseException], None],
) -> dict[str, dict[str, Any] | None]:
    """*events* per path through the responder, in *rounds* interleaved rounds: each
    round measures every path for its share of the events, in turn (the order reversed
    every other round), so a slow spell of the host is met by every path alike.  Per
    path one result as :func:`measure`'s, pooled over the rounds, plus ``rounds`` and
    ``round_p50_ns``.  Measured one after another (``rounds`` 1), the path ratios
    moved by 18-32 % between boots of one quiet host; in 10 rounds by 1-9 %.  A path
    whose round raised is None and not measured again; ``on_error(stage, exc)`` is
    called in the ``except`` that caught it (the bench records it as an error)."""
    shares = [events // rounds + (1 if r < events % rounds else 0) for r in range(rounds)]
    parts: dict[str, list[tuple[dict[str, Any], list[int], Any]]] = {p: [] for p in paths}
    failed: set[str] = set()
    for r, share in enumerate(shares):
        for path in paths if r % 2 == 0 else list(reversed(paths)):
            if path in failed or share == 0:
                continue
            try:
                parts[path].append(_series(guest, path, events=share, period_ns=period_ns))
            except Exception as e:
                failed.add(path)
                on_error(f"native {path} round {r + 1}/{rounds}", e)
    return {p: None if p in failed else _pooled(p, parts[p], period_ns) for p in paths}


def _pooled(
    path: str, parts: Sequence[tuple[dict[str, Any], list[int], Any]], period_ns: int
) -> dict[str, Any]:
    """One result from the rounds' *parts* of one path."""
    results = [p[0] for p in parts]
    lat = [v for p in parts for v in p[1]]
    summary = stats.summarize(lat)
    summary["exact"] = True
    bd = breakdown.summarize_parts([p[2] for p in parts])
    n = len(results)
    problems = [f"round {i + 1}/{n}: {m}" for i, r in enumerate(results) for m in r["problems"]]
    hist_problems = [
        f"round {i + 1}/{n}: {m}"
        for i, r in enumerate(results)
        for m in r["device_histogram"]["problems"]
    ]
    return {
        **results[-1],
        "events": sum(r["events"] for r in results),
        "rounds": n,
        "round_p50_ns": [r["latency_ns"]["p50"] for r in results],
        "wall_s": round(sum(r["wall_s"] for r in results), 3),
        "latency_ns": summary,
        "chunks_ns": stats.chunk_percentiles(lat, latency.CHUNKS),
        "device_histogram": {
            "count": sum(r["device_histogram"]["count"] for r in results),
            "rounds": n,
            "problems": hist_problems,
        },
        "breakdown": bd,
        "breakdown_p50_ns": {k: v["p50"] for k, v in bd["stages"].items() if k != "total"},
        "counters": _summed([r["counters"] for r in results], keep_last=_STATE_COUNTERS),
        "lost": _summed([r["lost"] for r in results]),
        "pending_at_end": sum(r["pending_at_end"] for r in results),
        "native": _summed([r["native"] for r in results]),
        "cdf": stats.cdf_points(lat) if lat else [],
        "problems": problems,
    }


def _summed(dicts: Sequence[Mapping[str, Any]], keep_last: Sequence[str] = ()) -> dict[str, Any]:
    """Key by key: the sum when every round's value is an integer, else the last
    round's value (None, a string); *keep_last* keys always the last (a state, not a
    count)."""
    out: dict[str, Any] = {}
    for key in dicts[-1]:
        values = [d.get(key) for d in dicts]
        if key not in keep_last and all(type(v) is int for v in values):
            out[key] = sum(values)
        else:
            out[key] = values[-1]
    return out


# gpio_v2_line_event.id (linux/gpio.h): the edge names the agent reports
_EDGES = {1: "rising", 2: "falling"}
