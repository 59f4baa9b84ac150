"""cyclictest (Debian's rt-tests) in the bench guest: the scheduling floor of this boot.

``cyclictest -m -p 80 -i 1000 -l <loops> -q -h <max_us> --json=...``: one
SCHED_FIFO thread wakes every 1 ms and records how late it woke (µs).  Its
histogram has 1 µs buckets up to *max_us*; later wake-ups are "overflows"
(only the maximum is known for them).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HIST_MAX_US",
    "JSON_PATH",
    "PRIORITY",
    "VERSUS",
    "command",
    "hist_percentile",
    "parse",
    "run",
]

HIST_MAX_US = 20_000
PRIORITY = 80  # cyclictest -p: its thread runs SCHED_FIFO at this priority
# What a comparison with cyclictest must say: the two do not run at the same priority.
VERSUS = (
    f"cyclictest runs SCHED_FIFO priority {PRIORITY} (-p {PRIORITY}), the native responder "
    "and the agent SCHED_OTHER"
)
JSON_PATH = "/tmp/irqlab-cyclictest.json"


def command(loops: int, interval_us: int = 1000, max_us: int = HIST_MAX_US) -> str:
    return (
        f"cyclictest -m -p {PRIORITY} -i {interval_us} -l {loops} -q -h {max_us} "
        f"--json={shlex.quote(JSON_PATH)} >/dev/null && cat {shlex.quote(JSON_PATH)}"
    )


def hist_percentile(
    hist: Mapping[int, int], overflows: int, p: float, max_us: int
) -> tuple[int, bool]:
    """Nearest-rank percentile in µs of a 1-µs histogram with *overflows* beyond it.

    Returns (value, exact): when the rank falls among the overflows the value is
    *max_us* and exact is False (the percentile is "> max_us").
    """
    total = sum(hist.values()) + overflows
    if total == 0:
        raise ValueError("empty histogram")
    rank = math.ceil(p / 100 * total)
    seen = 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= rank:
            return us, True
    return max_us, False


def parse(doc: Mapping[str, Any], max_us: int = HIST_MAX_US) -> dict[str, Any]:
    """Summary of cyclictest's --json output (thread 0), in µs."""
    threads = doc.get("thread")
    if not isinstance(threads, Mapping) or not threads:
        raise ValueError("cyclictest JSON has no thread results")
    t = threads.get("0") or next(iter(threads.values()))
    hist = {int(k): int(v) for k, v in t.get("histogram", {}).items()}
    cycles = int(t["cycles"])
    overflows = cycles - sum(hist.values())
    out: dict[str, Any] = {
        "cycles": cycles,
        "min_us": t.get("min"),
        "avg_us": t.get("avg"),
        "max_us": t.get("max"),
        "overflows": overflows,
        "hist_max_us": max_us,
        "version": doc.get("rt_test_version:") or doc.get("rt_test_version"),
    }
    for p in (50.0, 90.0, 99.0):
        v, exact = hist_percentile(hist, overflows, p, max_us)
        out[f"p{p:g}_us"] = v if exact else None
    return out


def run(guest: Any, loops: int) -> dict[str, Any]:
    out = guest.sh(command(loops), timeout=loops / 1000 * 5 + 60)
    res = parse(json.loads(out))
    res["command"] = command(loops).split(" >")[0]
    return res
