"""``--compare OLD.json``: which figures got worse beyond noise.

A figure is *worse beyond noise* when it moved in its bad direction by more
than the threshold ``max(floor, noise_old + noise_new)`` (relative to the old
value).  ``noise`` is each result's relative half-range of the figure's
repeated measurements (see :mod:`irqlab.bench.metrics`): two measurements
whose values each lie within ±r of the truth can differ by up to 2r, so the
noises add.  ``floor`` (default 10 %, the project's stability target) keeps
figures without repetition, or with lucky small spread, from flagging on
drift alone: the host's speed drifts ±30 % over minutes, so compare results
taken at the same load, and prefer ``--runs 3`` for both.  :func:`warnings` says
when two results are not like for like (accelerator, CPU model, settings the figures
depend on, loads per core that differ by more than
:data:`~irqlab.bench.report.LOAD_PER_CORE_LIMIT`, an interrupted bench's partial
result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_FLOOR",
    "SETTINGS",
    "Change",
    "compare",
    "render",
    "warnings",
]

DEFAULT_FLOOR = 0.10

# The settings (``config`` keys, with the option that sets them) that the figures
# depend on: a p99 of 300 events is not that of 10,000, a latency at a 1 ms period not
# one at 3 ms, a storm of 0.2 s not one of 10 s.
SETTINGS = (
    ("quick", "--quick"),
    ("events", "--events"),
    ("period_ns", "--period-us"),
    ("native_rounds", "--native-rounds"),
    ("cyclictest_loops", "--cyclictest-loops"),
    ("injections", "--injections"),
    ("storm_seconds", "--storm-seconds"),
    ("storm_ring_size", "--storm-ring-size"),
    ("storm_ack", "--storm-ack"),
)


@dataclass(frozen=True)
class Change:
    name: str
    old: float
    new: float
    unit: str
    better: str
    change: float  # relative, signed: (new - old) / old
    threshold: float
    verdict: str  # "worse", "better", "same"

    def line(self) -> str:
        return (
            f"{self.name}: {_fmt(self.old, self.unit)} -> {_fmt(self.new, self.unit)} "
            f"({self.change:+.1%}, noise threshold ±{self.threshold:.1%})"
        )


def _fmt(v: float, unit: str) -> str:
    from irqlab.bench.report import fmt_value

    return fmt_value(v, unit)


def compare(
    old: dict[str, Any], new: dict[str, Any], *, floor: float = DEFAULT_FLOOR
) -> tuple[list[Change], list[str]]:
    """(changes for metrics present in both, names present in only one)."""
    om: dict[str, Any] = old.get("metrics") or {}
    nm: dict[str, Any] = new.get("metrics") or {}
    out: list[Change] = []
    for name in sorted(set(om) & set(nm)):
        o, n = om[name], nm[name]
        ov, nv = float(o["value"]), float(n["value"])
        thr = max(floor, (o.get("noise") or 0.0) + (n.get("noise") or 0.0))
        if ov == 0:
            rel = 0.0 if nv == 0 else float("inf") if nv > 0 else float("-inf")
        else:
            rel = (nv - ov) / abs(ov)
        bad = rel if n.get("better", "lower") == "lower" else -rel
        verdict = "worse" if bad > thr else "better" if bad < -thr else "same"
        out.append(Change(name, ov, nv, n.get("unit", ""), n.get("better", "lower"), rel, thr,
                          verdict))  # fmt: skip
    only = sorted(set(om) ^ set(nm))
    return out, only


def _setting(key: str, v: Any) -> str:
    if key == "quick":
        return "--quick" if v else "full"
    if key == "period_ns" and isinstance(v, int | float):
        return f"{v / 1000:g}"  # µs, as the option takes it
    return str(v)


def warnings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why the figures of *old* and *new* are not like for like (each a ``WARNING:``
    line): another accelerator or CPU model, settings that the figures depend on
    (:data:`SETTINGS`), highest load averages per core that differ by more than
    :data:`~irqlab.bench.report.LOAD_PER_CORE_LIMIT`, or a result whose bench did not
    finish (its missing figures are not measured, its others partial)."""
    out = []
    oa, na = (old.get("accel") or {}).get("accel"), (new.get("accel") or {}).get("accel")
    if oa != na:
        out.append(f"WARNING: accelerators differ ({oa} vs {na}): figures are not comparable")
    oc = (old.get("machine") or {}).get("cpu_model")
    nc = (new.get("machine") or {}).get("cpu_model")
    if oc != nc:
        out.append(f"WARNING: different CPU models ({oc} vs {nc})")
    oconf, nconf = old.get("config") or {}, new.get("config") or {}
    differ = [
        ("" if key == "quick" else f"{option} ")
        + f"{_setting(key, oconf[key])} vs {_setting(key, nconf[key])}"
        for key, option in SETTINGS
        if key in oconf and key in nconf and oconf[key] != nconf[key]
    ]
    if differ:
        out.append(
            f"WARNING: measured with other settings ({'; '.join(differ)}): the figures that "
            "depend on them are not comparable"
        )
    from irqlab.bench.report import LOAD_PER_CORE_LIMIT, peak_load

    op, np_ = peak_load(old), peak_load(new)
    if op is not None and np_ is not None and abs(op - np_) > LOAD_PER_CORE_LIMIT:
        out.append(
            f"WARNING: measured at unlike loads (the 1-min load average per core reached "
            f"{op:.2f} in the old result, {np_:.2f} in the new: they differ by more than "
            f"{LOAD_PER_CORE_LIMIT:g}): the more loaded one's figures include more queueing "
            "behind other processes, so a change may be the load's, not the code's"
        )
    for which, r in (("old", old), ("new", new)):
        if r.get("complete") is False:  # older results have no "complete"
            stop = r.get("interrupted")
            why = f"interrupted: {stop}" if stop else "interrupted, or still running"
            out.append(
                f"WARNING: the {which} result ({r.get('stamp')}) is INCOMPLETE ({why}): its "
                "figures are partial, those it lacks were not measured"
            )
    return out


def render(
    old: dict[str, Any], new: dict[str, Any], *, floor: float = DEFAULT_FLOOR
) -> tuple[str, int]:
    """Human summary and the number of figures worse beyond noise."""
    changes, only = compare(old, new, floor=floor)
    worse = [c for c in changes if c.verdict == "worse"]
    better = [c for c in changes if c.verdict == "better"]
    lines = [
        f"compare {old.get('stamp')} ({str(old.get('git', {}).get('commit'))[:10]}) -> "
        f"{new.get('stamp')} ({str(new.get('git', {}).get('commit'))[:10]}); "
        f"{len(changes)} figures, noise floor ±{floor:.0%}",
    ]
    lines += warnings(old, new)
    lines.append(f"worse beyond noise: {len(worse)}")
    lines += [f"  WORSE  {c.line()}" for c in worse]
    lines.append(f"better beyond noise: {len(better)}")
    lines += [f"  better {c.line()}" for c in better]
    if only:
        lines.append("only in one result: " + ", ".join(only))
    return "\n".join(lines) + "\n", len(worse)
