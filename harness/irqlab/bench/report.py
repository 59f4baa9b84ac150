"""Human output of a bench result: text tables, a static HTML page, PNG plots.

``write_all(result_json)`` writes ``report.txt``, ``report.html`` and the PNGs
beside the JSON (or into another directory), never over another result's report.
Plots need matplotlib (the ``bench`` extra); without it the text and HTML are still
written and the HTML says the plots are missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irqlab.bench import SCHEMA, cyclic
from irqlab.errors import IrqlabError

__all__ = [
    "CSS",
    "LOAD_PER_CORE_LIMIT",
    "SOURCE_LINE",
    "STORM_ENDS",
    "NotABenchResult",
    "ReportInTheWay",
    "Table",
    "check_report_dir",
    "checks",
    "figure_caption",
    "fmt_ns",
    "fmt_rate",
    "fmt_ratio",
    "fmt_value",
    "header_lines",
    "host_table",
    "html_table",
    "incomplete",
    "latency_table",
    "load_readings",
    "load_result",
    "load_warning",
    "missing_parts",
    "peak_load",
    "per_core",
    "plot_all",
    "readings_warning",
    "render_html",
    "render_text",
    "report_files",
    "sections",
    "spread_table",
    "storm_table",
    "targets_table",
    "text_table",
    "wakeup_table",
    "write_all",
]

Table = tuple[list[str], list[list[str]]]
DEFAULT_PLACEMENT = "hardirq"  # where a native series without "placement" ran


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_value(v: float, unit: str) -> str:
    """A figure of ``metrics`` in its unit as the tables write it: ns scaled
    (``1.20 ms``), cyclictest's µs (unit ``us``), rates ``1276/s`` (unit ``1/s``),
    ratios ``1.23x`` (they were "983 us", "1.28e+03 1/s")."""
    if unit == "ns":
        return fmt_ns(v)
    if unit == "us":
        return f"{v:.4g} µs"
    if unit == "1/s":
        return f"{v:.0f}/s"
    if unit == "x":
        return f"{v:.3g}x"
    return f"{v:.3g} {unit}".rstrip()


def _us(v: float | None) -> str:
    return "beyond the histogram" if v is None else f"{v:g} µs"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "none"
    return f"{r / 1000:g}k/s" if r >= 1000 else f"{r:g}/s"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _first_run(result: dict[str, Any]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = result.get("runs") or [{}]
    return runs[0]


def checks(series: dict[str, Any]) -> str:
    """A series' checks in a table cell: ok, or its problems (cut)."""
    problems = series.get("problems")
    return "ok" if not problems else "; ".join(map(str, problems))[:80]


def latency_table(result: dict[str, Any], placement: str) -> Table | None:
    per = (_first_run(result).get("latency") or {}).get(placement)
    if not per:
        return None
    base = (per.get("read") or {}).get("latency_ns", {})
    head = ["path", "n", "p50", "p90", "p99", "max", "p50/read", "p99/read", "device hist",
            "checks"]  # fmt: skip
    rows = []
    for path, r in per.items():
        if r is None:
            rows.append([path, "-", "failed (see errors)"] + [""] * 7)
            continue
        if "skipped" in r:
            rows.append([path, "-", f"n/a: {r['skipped']}"] + [""] * 7)
            continue
        s = r["latency_ns"]
        hist = r.get("device_histogram", {})
        ok = "agrees" if not hist.get("problems") else "; ".join(hist["problems"])[:60]
        le = ""
        if s.get("exact") is False:
            ok, le = "only source (log2 bucket upper bounds)", "<= "
        rows.append(
            [
                path,
                str(s["n"]),
                le + fmt_ns(s["p50"]),
                le + fmt_ns(s["p90"]),
                le + fmt_ns(s["p99"]),
                fmt_ns(s["max"]),
                fmt_ratio(_ratio(s["p50"], base.get("p50"))),
                fmt_ratio(_ratio(s["p99"], base.get("p99"))),
                ok,
                checks(r),
            ]
        )
    return head, rows


def native_table(result: dict[str, Any]) -> Table | None:
    """Native responder beside the agent (same boot, default placement): the cost of
    Python as a figure of its own, and the native figures against cyclictest."""
    run = _first_run(result)
    nat = run.get("native") or {}
    if not nat:
        return None
    lat = run.get("latency") or {}
    cyc = run.get("cyclictest") or {}
    c50, c99 = cyc.get("p50_us"), cyc.get("p99_us")
    base = ((nat.get("read") or {}).get("latency_ns") or {}).get("p50")
    head = ["path", "native p50", "native p99", "agent p50", "agent p99", "agent/native p50",
            "native p50/read", "p50/cyclictest", "p99/cyclictest", "checks"]  # fmt: skip
    rows = []
    for path, r in nat.items():
        if not r or "latency_ns" not in r:
            rows.append([path, "failed (see errors)"] + [""] * 8)
            continue
        n = r["latency_ns"]
        same = lat.get(r.get("placement") or DEFAULT_PLACEMENT) or {}
        a = ((same.get(path) or {}).get("latency_ns")) or {}
        rows.append(
            [
                path,
                fmt_ns(n["p50"]),
                fmt_ns(n["p99"]),
                fmt_ns(a.get("p50")),
                fmt_ns(a.get("p99")),
                fmt_ratio(_ratio(a.get("p50"), n["p50"])),
                fmt_ratio(_ratio(n["p50"], base)),
                fmt_ratio(_ratio(n["p50"], c50 * 1e3 if c50 else None)),
                fmt_ratio(_ratio(n["p99"], c99 * 1e3 if c99 else None)),
                checks(r),
            ]
        )
    return head, rows


BREAKDOWN_COLUMNS = (
    ("raise_to_isr", "raise->ISR"),
    ("isr_to_wake", "ISR->wake call"),
    ("wake_to_user", "wake->user"),
    ("raise_to_user", "raise->user (UIO)"),
    ("gpiolib_to_user", "gpiolib->user"),
    ("user_to_ack", "user->ACK"),
    ("total", "total"),
)


def breakdown_table(result: dict[str, Any]) -> Table | None:
    """Per-path stages of the native series, p50 / p99 (irqlab.bench.breakdown)."""
    nat = _first_run(result).get("native") or {}
    rows = []
    for path, r in nat.items():
        bd = (r or {}).get("breakdown") or {}
        st = bd.get("stages") or {}
        if not st:
            continue
        cells = []
        for key, _ in BREAKDOWN_COLUMNS:
            v = st.get(key)
            cells.append(f"{fmt_ns(v['p50'])} / {fmt_ns(v['p99'])}" if v else "-")
        clock = bd.get("clock") or {}
        rows.append([path, *cells, f"±{fmt_ns(clock.get('error_ns'))}"])
    if not rows:
        return None
    return ["path", *(h for _, h in BREAKDOWN_COLUMNS), "clock error"], rows


def queueing_table(result: dict[str, Any]) -> Table | None:
    from irqlab.bench import queueing

    rows = [[label, w] for label, w in queueing.warnings(result)]
    return (["series", "WARNING: queueing"], rows) if rows else None


def wakeup_table(result: dict[str, Any]) -> Table | None:
    lat = _first_run(result).get("latency") or {}
    if len(lat) < 2:
        return None
    pls = list(lat)
    paths: list[str] = []
    for per in lat.values():
        paths += [p for p in per if p not in paths]
    head = ["path"] + [f"{pl} p50 / p99" for pl in pls]
    rows = []
    for p in paths:
        row = [p]
        for pl in pls:
            r = lat[pl].get(p)
            if not r or "latency_ns" not in r:
                row.append("-")
            else:
                s = r["latency_ns"]
                row.append(f"{fmt_ns(s['p50'])} / {fmt_ns(s['p99'])}")
        rows.append(row)
    return head, rows


# A storm's ``end`` in the table: how its wait for the path ended.
STORM_ENDS = {"until": "marker", "accounted": "accounted", "idle": "IDLE", "timeout": "TIMEOUT"}


def storm_table(result: dict[str, Any]) -> Table | None:
    st = result.get("storm")
    if not st or not st.get("paths"):
        return None
    head = ["path", "rate", "raised", "delivered", "coalesced", "observed", "lost",
            "dev dropped", "ring/buffer lost", "unexplained", "end", "lossless"]  # fmt: skip
    rows = []
    for p, rs in st["paths"].items():
        for r in rs:
            unexplained = r.get("unexplained")
            rows.append(
                [p, fmt_rate(r["rate"])]
                + [str(r[k]) for k in ("raised", "delivered", "coalesced", "observed", "lost")]
                + [str(r["device_dropped"]), str(r["reported_lost"])]
                + ["-" if unexplained is None else f"{unexplained}{' (!)' if unexplained else ''}"]
                + [STORM_ENDS.get(r.get("end"), str(r.get("end") or "-"))]
                + ["yes" if r["lossless"] else "NO"]
            )
    return head, rows


def host_table(result: dict[str, Any]) -> Table:
    rows: list[list[str]] = []
    for i, run in enumerate(result.get("runs") or []):
        inj = run.get("injection")
        if inj:
            rt = inj["round_trip_ns"]
            rows.append(
                [
                    f"QMP qom-set round trip (run {i + 1})",
                    f"p50 {fmt_ns(rt['p50'])}, p99 {fmt_ns(rt['p99'])}, max {fmt_ns(rt['max'])}",
                ]
            )
            nr = inj.get("noop_round_trip_ns")
            if nr and nr.get("n"):
                rows.append(
                    [
                        f"QMP qom-set raising no event (run {i + 1})",
                        f"p50 {fmt_ns(nr['p50'])}, p99 {fmt_ns(nr['p99'])}",
                    ]
                )
            rows.append(
                [
                    f"QMP injection sustained (run {i + 1})",
                    f"{inj['rate_per_s']:.0f}/s over {inj['injections']} in {inj['elapsed_s']} s",
                ]
            )
            pipe = inj.get("pipelined")
            if pipe:
                rows.append(
                    [
                        f"QMP injection pipelined, {pipe['window']} in flight (run {i + 1})",
                        f"{pipe['rate_per_s']:.0f}/s over {pipe['injections']} "
                        f"in {pipe['elapsed_s']} s",
                    ]
                )
        if run.get("boot"):
            b = run["boot"]
            rows.append(
                [
                    f"bench guest boot (run {i + 1})",
                    ", ".join(f"{k} {v:.2f} s" for k, v in b.items()),
                ]
            )
        cyc = run.get("cyclictest")
        if cyc:
            rows.append(
                [
                    f"cyclictest, SCHED_FIFO priority {cyclic.PRIORITY} (run {i + 1}, same boot)",
                    f"p50 {_us(cyc.get('p50_us'))}, p90 {_us(cyc.get('p90_us'))}, "
                    f"p99 {_us(cyc.get('p99_us'))}, max {_us(cyc.get('max_us'))} "
                    f"over {cyc.get('cycles')} cycles",
                ]
            )
    for kind, label in (("boot", "cold boot"), ("restore", "restore")):
        starts = result.get(kind)
        if not starts:
            continue
        for phase, sp in starts["phases"].items():
            if sp["median"] is None:
                continue
            rel = f" (±{sp['rel']:.0%})" if sp["rel"] is not None else ""
            what = "start, one SSH command, stop" if phase == "whole" else f"-> {phase}"
            rows.append(
                [
                    f"{label} {what} ({starts['boots']} x, standard image)",
                    f"median {sp['median']:.2f} s, range {sp['min']:.2f}-{sp['max']:.2f} s{rel}",
                ]
            )
        if starts.get("cold_fallbacks"):
            rows.append(
                [
                    f"{label}: NOT restores",
                    f"{starts['cold_fallbacks']} of {starts['boots']} booted cold (the "
                    "snapshot was refused or gone): the figures above mix in cold boots",
                ]
            )
    ta = result.get("test_all")
    if ta:
        rows.append(["invoke test-all (warm)", f"{ta['seconds']} s, exit {ta['returncode']}"])
    return ["figure", "value"], rows


def _target_value(t: dict[str, Any]) -> str:
    """A target's measured value in the unit of its wanted one (``<= 2.5 s``: 3.84 s,
    ``>= 1500/s``: 1276/s; it was a bare 3.84 and 1.28e+03)."""
    v = t["value"]
    if v is None:
        return "-"
    if not isinstance(v, int | float) or isinstance(v, bool):
        return str(v)
    unit = re.fullmatch(r"[<>]=\s*[\d.]+(\s*[^\d\s].*)", str(t.get("target", "")))
    if unit is None:
        return f"{v:.3g}"
    if unit[1] == "/s":
        return f"{v:.0f}/s"
    return f"{v:.2f}{unit[1]}" if unit[1].strip() == "s" else f"{v:.3g}{unit[1]}"


def targets_table(result: dict[str, Any]) -> Table:
    rows = []
    for t in result.get("targets") or []:
        met = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append([t["name"], t["target"], _target_value(t), met])
    return ["target", "wanted", "measured", "status"], rows


def incomplete(result: dict[str, Any]) -> str | None:
    """The banner of a result whose bench did not finish (``complete`` false: it was
    interrupted, or is still running), else None (older results have no ``complete``)."""
    if result.get("complete") is not False:
        return None
    why = result.get("interrupted")
    return (
        f"INCOMPLETE (interrupted{': ' + why if why else ', or still running'}): "
        "only the stages before the stop were measured; the figures below are partial"
    )


def _config(result: dict[str, Any]) -> Any:
    """The bench configuration *result* was measured with: its ``config``, the
    defaults of :class:`~irqlab.bench.runner.BenchConfig` for what it does not say."""
    from types import SimpleNamespace

    from irqlab.bench.runner import BenchConfig

    cfg = result.get("config")
    given = cfg if isinstance(cfg, dict) else {}
    return SimpleNamespace(**{**BenchConfig().as_json(), **given})


def _listed(what: str, lack: list[str], of: int) -> str:
    """``native: read, poll``, or ``native (all 13 paths)``."""
    if len(lack) == of and of > 2:
        return f"{what} (all {of} paths)"
    return f"{what}: {', '.join(lack)}"


def missing_parts(result: dict[str, Any]) -> list[str]:
    """What an incomplete result lacks of what its ``config`` asked for, one entry per
    run (its stages, the paths of each series), then the storms, the standard image's
    boots and restores and ``invoke test-all``: the parts the bench stopped before.
    [] for a complete result (``complete`` not false)."""
    from irqlab.bench.runner import DEFAULT_PLACEMENT as DEFAULT
    from irqlab.bench.runner import MODULE_MODES, NO_STORM, OTHER_DRIVER

    if result.get("complete") is not False:
        return []
    c = _config(result)
    skip = set(c.skip or ())
    runs = [r if isinstance(r, dict) else {} for r in (result.get("runs") or [])]
    paths = [str(p) for p in (result.get("paths") or [])]
    out: list[str] = []
    for i in range(c.runs):
        label = f"run {i + 1} of {c.runs}" if c.runs > 1 else "the run"
        if i >= len(runs):
            out.append(f"{label}: not started")
            continue
        run = runs[i]
        if not run.get("boot"):
            out.append(f"{label}: its guest's boot and everything after it")
            continue
        parts = []
        if c.rt_tests and "cyclictest" not in skip and "cyclictest" not in run:
            parts.append("cyclictest")
        if "injection" not in skip and "injection" not in run:
            parts.append("QMP injection")
        placements = [DEFAULT] if "wakeup" in skip else list(c.placements)
        if c.wakeup_runs and i >= c.wakeup_runs:
            placements = [p for p in placements if p == DEFAULT]
        lat = run.get("latency") or {}
        for pl in placements if "latency" not in skip else []:
            want = [
                p
                for p in paths
                if pl == DEFAULT or (p not in MODULE_MODES and p not in OTHER_DRIVER)
            ]
            lack = [p for p in want if p not in (lat.get(pl) or {})]
            if lack:
                parts.append(_listed(f"latency wakeup={pl}", lack, len(want)))
        if "native" not in skip:
            lack = [p for p in paths if p not in (run.get("native") or {})]
            if lack:
                parts.append(_listed("native", lack, len(paths)))
        if i == c.runs - 1 and "storm" not in skip:
            st = result.get("storm") or {}
            if not st:
                parts.append("storms")
            else:
                stormed = [
                    p
                    for p in (c.storm_paths or paths)
                    if p not in NO_STORM and p not in (st.get("skipped") or {})
                ]
                rates = len(c.storm_rates)
                for p in stormed:
                    got = len((st.get("paths") or {}).get(p) or [])
                    if got < rates:
                        parts.append(f"storm {p} ({got} of {rates} rates)")
        if parts:
            out.append(f"{label}: {'; '.join(parts)}")
    if "boot" not in skip and c.boots > 0 and not (result.get("boot") and result.get("restore")):
        out.append(f"cold boots and restores of the standard image (x{c.boots})")
    if c.test_all and result.get("test_all") is None:
        out.append("invoke test-all")
    return out


# The 1-min load average per core above which a reading says the machine was loaded:
# other processes then keep a CPU busy half the time or more, and a TCG guest's vCPU,
# QEMU's I/O thread and the responder queue behind them.  The bench's own guest counts
# in the readings taken after it ran (a quiet 2-core machine read 0.6 at the end of a
# bench: 0.3 per core, README's figures of 2026-12-06).  --compare calls two results'
# loads unlike when their highest readings per core differ by more than this.
LOAD_PER_CORE_LIMIT = 0.5


def load_readings(result: dict[str, Any]) -> list[tuple[str, float, int | None]]:
    """(when, 1-min load average, cores) of each reading in *result*: the bench's start,
    each run's start and end, the bench's end, those taken (an interrupted bench lacks
    the later ones).  The cores are the reading's, else the machine's (older results)."""
    machine = result.get("machine") or {}
    load = result.get("load") or {}
    runs = [r if isinstance(r, dict) else {} for r in (result.get("runs") or [])]
    when = [("bench start", load.get("start"))]
    for i, run in enumerate(runs):
        n = f" {i + 1}" if len(runs) > 1 else ""
        when += [(f"run{n} start", run.get("load_start")), (f"run{n} end", run.get("load_end"))]
    when.append(("bench end", load.get("end")))
    out = []
    for label, reading in when:
        if not isinstance(reading, dict):
            continue
        one = reading.get("1min")
        if isinstance(one, int | float) and not isinstance(one, bool):
            cores = reading.get("cores") or machine.get("cores")
            out.append((label, float(one), cores if isinstance(cores, int) and cores > 0 else None))
    return out


def per_core(one: float, cores: int | None) -> float:
    """A 1-min load average per core (the whole of it when the cores are unknown)."""
    return one / (cores or 1)


def peak_load(result: dict[str, Any]) -> float | None:
    """The highest 1-min load average per core of *result*'s readings (None: none)."""
    return max((per_core(one, cores) for _, one, cores in load_readings(result)), default=None)


def load_warning(result: dict[str, Any], limit: float = LOAD_PER_CORE_LIMIT) -> str | None:
    """A ``WARNING:`` line when a load reading of *result* exceeded *limit* per core
    (:data:`LOAD_PER_CORE_LIMIT`), naming each such reading, else None."""
    return readings_warning(load_readings(result), limit)


def readings_warning(
    readings: Sequence[tuple[str, float, int | None]], limit: float = LOAD_PER_CORE_LIMIT
) -> str | None:
    """:func:`load_warning` of (when, 1-min load average, cores) readings (bench-peers'
    too)."""
    over = [
        f"{label} {one:g} on {cores or '?'} cores ({per_core(one, cores):.2f} per core)"
        for label, one, cores in readings
        if per_core(one, cores) > limit
    ]
    if not over:
        return None
    return (
        f"WARNING: a loaded machine: the 1-min load average exceeded {limit:g} per core at "
        f"{', '.join(over)}: other processes competed for the CPUs, so the figures include "
        "queueing behind them, not only what is measured; compare them only with results "
        "taken at a like load, or measure again on a quiet machine"
    )


def header_lines(result: dict[str, Any]) -> list[str]:
    m, v, g = result.get("machine", {}), result.get("versions", {}), result.get("git", {})
    acc = result.get("accel", {})
    load = result.get("load", {})
    cfg = result.get("config", {})
    runs = [
        f"{label} {one:g}" for label, one, _ in load_readings(result) if label.startswith("run")
    ]
    return [
        f"irqlab bench {result.get('stamp')} ({'quick' if cfg.get('quick') else 'full'}), "
        f"{result.get('started')}, {result.get('duration_s', '?')} s",
        f"commit {str(g.get('commit'))[:12]}{' (dirty tree)' if g.get('dirty') else ''}",
        f"machine: {m.get('cpu_model')}, {m.get('cores')} cores, host kernel "
        f"{m.get('host_kernel')}",
        f"load average (1/5/15 min): start {_load(load.get('start'))}, "
        f"end {_load(load.get('end'))}" + (f"; 1 min: {', '.join(runs)}" if runs else ""),
        f"accelerator: {acc.get('accel')} ({acc.get('reason')})",
        f"QEMU {v.get('qemu')}; guest kernel {v.get('guest_kernel')} "
        f"(clocksource {v.get('clocksource')}, smp {v.get('smp')})",
        f"latency series: {cfg.get('events')} events per path at "
        f"{(cfg.get('period_ns') or 0) / 1e6:g} ms period (device burst generator)",
    ]


def _load(d: dict[str, Any] | None) -> str:
    """``0.42/0.3/0.25 on 2 cores`` (older results: no cores)."""
    if not d:
        return "?"
    avg = "/".join(str(d[k]) for k in ("1min", "5min", "15min") if k in d)
    return f"{avg} on {d['cores']} cores" if d.get("cores") else avg


def text_table(t: Table) -> str:
    head, rows = t
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)))
    return "\n".join(lines)


def spread_table(result: dict[str, Any]) -> Table | None:
    """Figures measured in more than one run: median, each run's value, spread."""
    rows = []
    for name, m in (result.get("metrics") or {}).items():
        if m.get("noise_from") != "runs":
            continue
        unit = str(m.get("unit") or "")
        noise = m.get("noise")
        rows.append(
            [
                name,
                fmt_value(m["value"], unit),
                " / ".join(fmt_value(v, unit) for v in m["samples"]),
                f"±{100 * noise:.1f}%" if noise is not None else "-",
            ]
        )
    if not rows:
        return None
    return ["figure", "median", "per run", "spread"], rows


def sections(result: dict[str, Any]) -> list[tuple[str, Table | None]]:
    out: list[tuple[str, Table | None]] = []
    nruns = len(result.get("runs") or [])
    which = f" (run 1 of {nruns}; medians across runs below)" if nruns > 1 else ""
    out.append(
        (
            "Queueing series: the responder fell behind the generator, the figure is "
            "(mostly) queue delay",
            queueing_table(result),
        )
    )
    out.append(
        (
            f"Native responder (irqlab-respond) vs agent (Python), raise -> ACK, "
            f"wakeup={DEFAULT_PLACEMENT} only (no native series at other placements){which}; "
            f"p50/p99 vs cyclictest: {cyclic.VERSUS}",
            native_table(result),
        )
    )
    out.append(
        (
            "Breakdown per path, native responder, p50 / p99 (device clock: raise, ACK; "
            "guest CLOCK_MONOTONIC: ISR entry, wake call, userspace return; mapped by an "
            "offset measured with IRQLAB_IOC_GET_CLOCK). Per event a row's stages add up "
            "to its total (an event whose clocks break the order is a check that fails), "
            "except count's and gpio-cdev's, whose first stages have no reading of their "
            "own; the stages' p50s need not add up to the total's p50, percentiles are "
            "not additive",
            breakdown_table(result),
        )
    )
    for pl in _first_run(result).get("latency") or {}:
        out.append((f"Raise -> userspace ACK latency (device clock), wakeup={pl}{which}",
                    latency_table(result, pl)))  # fmt: skip
    out.append(("Wakeup placements", wakeup_table(result)))
    st = result.get("storm") or {}
    hl = st.get("highest_lossless") or {}
    title = (
        f"Storms (wakeup={st.get('placement')}, ring_size {st.get('ring_size')}"
        f"{'' if st.get('ring_size_default', True) else ' (set for the storms)'}, "
        f"{st.get('seconds')} s per rate"
        f"{', record paths: agent summaries, ACK ' + st['ack'] if st.get('ack') else ''}"
        "); highest lossless: "
        + ", ".join(f"{p} {fmt_rate(r)}" for p, r in hl.items())
        + "".join(f"; not stormed: {p} ({why})" for p, why in (st.get("skipped") or {}).items())
    )
    out.append((title, storm_table(result)))
    out.append(("Host and boot", host_table(result)))
    out.append((f"Spread across {nruns} runs (half-range / median)", spread_table(result)))
    out.append(("Targets", targets_table(result)))
    return out


def render_text(result: dict[str, Any]) -> str:
    banner = incomplete(result)
    if banner and (lack := missing_parts(result)):
        banner += "\nnot measured (the bench stopped first):" + "".join(f"\n  {m}" for m in lack)
    parts = ([banner] if banner else []) + ["\n".join(header_lines(result))]
    if loaded := load_warning(result):
        parts.append(loaded)
    missing = result.get("missing_paths") or {}
    if missing:
        parts.append("not measured: " + ", ".join(f"{p} ({w})" for p, w in missing.items()))
    for title, t in sections(result):
        if t is not None and t[1]:
            parts.append(f"{title}\n{text_table(t)}")
    for e in result.get("errors") or []:
        parts.append(f"ERROR in {e['stage']}: {e['error']}")
    return "\n\n".join(parts) + "\n"


# -- plots ----------------------------------------------------------------------------


def _style(i: int) -> dict[str, Any]:
    """Line *i* of a plot: matplotlib's ten default colours, then dashed, then dotted
    (more than ten paths would otherwise share colours)."""
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[(i // 10) % 3]}


def _legend(ax: Any, **kw: Any) -> None:
    """The plot's legend, or "no data" when no series could be drawn (every one failed:
    matplotlib's warning about a legend without lines went to the user's stderr)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)
    else:
        ax.text(0.5, 0.5, "no data (see the report)", transform=ax.transAxes, ha="center")


def figure_caption(result: dict[str, Any]) -> str:
    """What a plot was measured on, printed under it (a PNG is shared on its own, in a
    README or an issue, away from the report's header): CPU model, cores, accelerator,
    QEMU, guest kernel, commit, date, the run's kind, and INCOMPLETE for an interrupted
    bench's partial result."""
    m, v, g = result.get("machine") or {}, result.get("versions") or {}, result.get("git") or {}
    cfg = result.get("config") or {}
    commit = str(g.get("commit") or "?")[:12] + ("-dirty" if g.get("dirty") else "")
    kind = "--quick" if cfg.get("quick") else "full run"
    if cfg.get("events"):
        kind += f", {cfg['events']} events per path"
    if cfg.get("period_ns"):
        kind += f" at {cfg['period_ns'] / 1e6:g} ms"
    lines = [
        f"{m.get('cpu_model') or 'CPU ?'}, {m.get('cores') or '?'} cores, "
        f"{(result.get('accel') or {}).get('accel') or 'accelerator ?'}, "
        f"QEMU {str(v.get('qemu') or '?').split(' ')[0]}, guest {v.get('guest_kernel') or '?'}",
        f"irqlab {commit}, {str(result.get('started') or '?')[:10]}, {kind}",
    ]
    if result.get("complete") is False:
        lines[1] += ", INCOMPLETE (interrupted): partial"
    return "\n".join(lines)


def _caption(fig: Any, result: dict[str, Any]) -> None:
    """:func:`figure_caption` at the bottom of *fig*, room made for it."""
    fig.text(0.01, 0.01, figure_caption(result), fontsize=7, color="#444", va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))


def plot_all(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Latency CDFs per placement and loss vs rate; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files: list[Path] = []
    env = result.get("accel", {}).get("accel", "?")
    runs = result.get("runs") or []
    for pl, per in (_first_run(result).get("latency") or {}).items():
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (path, r) in enumerate(per.items()):
            if r and r.get("cdf"):
                xs = [x / 1e3 for x, _ in r["cdf"]]
                ys = [y for _, y in r["cdf"]]
                lab = f"{path} (n={r['latency_ns']['n']})"
                ax.step(xs, ys, where="post", label=lab, **_style(i))
        ax.set_xscale("log")
        ax.set_xlabel("raise -> userspace ACK latency, µs (device clock, log scale)")
        ax.set_ylabel("fraction of events")
        of = f", run 1 of {len(runs)}" if len(runs) > 1 else ""
        ax.set_title(f"Latency CDF per path, wakeup={pl} ({env}{of})")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize=8, loc="lower right")
        f = out_dir / f"latency_cdf_{pl}.png"
        _caption(fig, result)
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    st = result.get("storm") or {}
    if st.get("paths"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (path, rs) in enumerate(st["paths"].items()):
            pts = [(r["rate"], 100 * r["lost"] / r["raised"]) for r in rs if r["raised"]]
            if pts:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                ax.plot(xs, ys, marker="o", label=path, **_style(i))
        ax.set_xscale("log")
        ax.set_xlabel("generator rate, events/s (log scale)")
        ax.set_ylabel("events lost, % of raised")
        ax.set_title(
            f"Loss vs rate ({st.get('seconds')} s per rate, ring {st.get('ring_size')}, {env})"
        )
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize=8)
        f = out_dir / "storm_loss.png"
        _caption(fig, result)
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


# -- HTML --------------------------------------------------------------------------------


def html_table(t: Table) -> str:
    head, rows = t
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


CSS = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#eee}img{max-width:100%}pre{background:#f6f6f6;padding:1em}"
)


def render_html(
    result: dict[str, Any], images: Sequence[Path], result_href: str = "result.json"
) -> str:
    """The HTML page; *result_href*: the result's address from the page's directory
    (a report written elsewhere with ``--out`` links to it there)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>irqlab bench {html.escape(str(result.get('stamp')))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>irqlab bench {html.escape(str(result.get('stamp')))}</h1>",
        *([f"<p><strong>{html.escape(b)}</strong></p>"] if (b := incomplete(result)) else []),
        *(
            ["<p>Not measured (the bench stopped first):</p><ul>"]
            + [f"<li>{html.escape(m)}</li>" for m in lack]
            + ["</ul>"]
            if (lack := missing_parts(result))
            else []
        ),
        "<pre>" + html.escape("\n".join(header_lines(result))) + "</pre>",
        *([f"<p><strong>{html.escape(w)}</strong></p>"] if (w := load_warning(result)) else []),
    ]
    missing = result.get("missing_paths") or {}
    if missing:
        parts.append(
            "<p>Not measured: "
            + html.escape(", ".join(f"{p} ({w})" for p, w in missing.items()))
            + "</p>"
        )
    for img in images:
        parts.append(f"<p><img src='{html.escape(img.name)}' alt='{html.escape(img.stem)}'></p>")
    if not images:
        parts.append("<p>No plots: install the bench extra (matplotlib).</p>")
    for title, t in sections(result):
        if t is not None and t[1]:
            parts.append(f"<h2>{html.escape(title)}</h2>{html_table(t)}")
    for e in result.get("errors") or []:
        parts.append(
            f"<h2>Error in {html.escape(e['stage'])}</h2><pre>{html.escape(e['error'])}</pre>"
        )
    href = html.escape(result_href, quote=True)
    parts.append(f"<p>Raw data: <a href='{href}'>{href}</a></p></body></html>")
    return "\n".join(parts) + "\n"


class NotABenchResult(IrqlabError, ValueError):
    """A file given as a bench result is none (not JSON, no or another schema); the
    message names the file."""


def load_result(path: Path) -> dict[str, Any]:
    """The bench result in *path*, checked to be one (its ``schema``), else
    :class:`NotABenchResult`; a file that cannot be read raises OSError."""
    data = path.read_bytes()
    try:
        result = json.loads(data)
    except ValueError as e:  # not JSON, or not text at all
        what = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else e
        raise NotABenchResult(f"{path}: not a bench result: not JSON ({what})") from None
    schema = result.get("schema") if isinstance(result, dict) else None
    if schema is None:
        raise NotABenchResult(
            f"{path}: not a bench result: schema missing (irqlab bench writes {SCHEMA!r})"
        )
    if schema != SCHEMA:
        raise NotABenchResult(
            f"{path}: not a bench result: schema {schema!r}, not {SCHEMA!r} (another "
            "tool's result, or another irqlab version's)"
        )
    assert isinstance(result, dict)
    return result


class ReportInTheWay(IrqlabError, ValueError):
    """The directory a report would be written to holds another result's report (or
    is another run's directory): writing would destroy it.  The message names the
    file."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


# the last line of report.txt: which result it renders (the owner of its directory)
SOURCE_LINE = re.compile(r"^rendered from (?P<path>.*) \(sha256 (?P<sha>[0-9a-f]{16})\)$")


def _sha(path: Path) -> str:
    """The first 16 hex digits of *path*'s SHA-256: a result's identity in its report."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def report_files(out_dir: Path) -> list[Path]:
    """The files of a report that :func:`write_all` writes into *out_dir* and that are
    there already (report.txt, report.html, the plots)."""
    if not out_dir.is_dir():
        return []
    fixed = [out_dir / n for n in ("report.txt", "report.html", "storm_loss.png")]
    return [f for f in fixed if f.exists()] + sorted(out_dir.glob("latency_cdf_*.png"))


def _same_result(a: Path, b: Path, sha: str) -> bool:
    """*a* is the result *b* (whose digest is *sha*): the same file, or the same bytes."""
    try:
        return a.resolve() == b.resolve() or (a.is_file() and _sha(a) == sha)
    except OSError:
        return False


def check_report_dir(result_path: Path, out_dir: Path) -> None:
    """:class:`ReportInTheWay` (naming the file) unless the report of *result_path*
    may be written into *out_dir*: it holds no report, or the report of this same
    result (the same file or a copy of it: rewriting it loses nothing).  Another run's
    directory (its own ``result.json``) and a report rendered from another result (its
    report.txt says which, :data:`SOURCE_LINE`; one that says none is no report known
    to be this result's) are refused: they were overwritten silently."""
    sha = _sha(result_path)
    own = out_dir / "result.json"
    if own.exists():
        if _same_result(own, result_path, sha):
            return
        raise ReportInTheWay(
            f"{out_dir} is the directory of another bench result ({own}): its report "
            f"would be overwritten by {result_path}'s",
            own,
        )
    there = report_files(out_dir)
    if not there:
        return
    txt = out_dir / "report.txt"
    source = None
    if txt.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            lines = txt.read_text().splitlines()
            source = SOURCE_LINE.match(lines[-1]) if lines else None
    if source and (source["sha"] == sha or _same_result(Path(source["path"]), result_path, sha)):
        return
    whose = f"rendered from {source['path']}" if source else "of a result it does not name"
    raise ReportInTheWay(
        f"{there[0]} is another result's report ({whose}): it would be overwritten by "
        f"{result_path}'s",
        there[0],
    )


def write_all(result_path: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """report.txt, report.html and PNGs in *out_dir* (default: beside *result_path*);
    returns what was written.  Nothing is written unless it is a bench result
    (:func:`load_result`) and *out_dir* holds no other result's report
    (:func:`check_report_dir`).  report.txt ends in the line saying which result it
    renders (:data:`SOURCE_LINE`)."""
    result = load_result(result_path)
    out_dir = out_dir if out_dir is not None else result_path.parent
    check_report_dir(result_path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plot_all(result, out_dir)
    txt = out_dir / "report.txt"
    source = f"rendered from {result_path.resolve()} (sha256 {_sha(result_path)})"
    txt.write_text(f"{render_text(result)}\n{source}\n")
    page = out_dir / "report.html"
    href = os.path.relpath(result_path.resolve(), out_dir.resolve())
    page.write_text(render_html(result, images, result_href=href))
    written = {"text": txt, "html": page}
    written.update({p.stem: p for p in images})
    return written
