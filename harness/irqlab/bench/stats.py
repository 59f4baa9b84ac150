"""Pure statistics for the bench (no I/O): percentiles, summaries, CDFs, spread.

Percentiles are *nearest rank* on the exact sample (no interpolation): the
p-th percentile is the smallest value with at least p % of the sample at or
below it, so every reported figure is a latency some event really had.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from irqlab.vm.qmp.stats import Histogram

__all__ = [
    "PERCENTILES",
    "cdf_points",
    "chunk_percentiles",
    "histogram_agreement",
    "percentile",
    "ratio",
    "spread",
    "summarize",
]

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank *p*-th percentile of an ascending, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """n, min, p50, p90, p99, max, mean of a sample (None fields when empty)."""
    v = sorted(values)
    out: dict[str, Any] = {"n": len(v)}
    if not v:
        out.update({"min": None, "max": None, "mean": None})
        out.update({f"p{p:g}": None for p in PERCENTILES})
        return out
    out["min"] = v[0]
    for p in PERCENTILES:
        out[f"p{p:g}"] = percentile(v, p)
    out["max"] = v[-1]
    out["mean"] = statistics.fmean(v)
    return out


def cdf_points(values: Iterable[float], max_points: int = 400) -> list[tuple[float, float]]:
    """(value, fraction <= value) pairs of the empirical CDF, thinned to ~*max_points*.

    The first and last points (min -> 1/n, max -> 1.0) are always kept, so a
    plot of a thinned CDF still shows the whole range.
    """
    v = sorted(values)
    n = len(v)
    if n == 0:
        return []
    step = max(1, n // max_points)
    idx = list(range(step - 1, n, step))
    if idx[0] != 0:
        idx.insert(0, 0)
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [(v[i], (i + 1) / n) for i in idx]


def chunk_percentiles(
    values: Sequence[float], chunks: int, percentiles: Sequence[float] = PERCENTILES
) -> dict[str, list[float]]:
    """Each percentile of each of *chunks* consecutive slices (in arrival order).

    The spread of these across chunks is the within-run noise of a figure: used
    by :mod:`irqlab.bench.compare` when a result has only one run.
    """
    if chunks < 1:
        raise ValueError("chunks must be >= 1")
    size = len(values) // chunks
    out: dict[str, list[float]] = {f"p{p:g}": [] for p in percentiles}
    if size == 0:
        return out
    for i in range(chunks):
        part = sorted(values[i * size : (i + 1) * size])
        for p in percentiles:
            out[f"p{p:g}"].append(percentile(part, p))
    return out


def spread(samples: Iterable[float]) -> dict[str, Any]:
    """Median, min, max and the relative half-range ``(max - min) / 2 / median``.

    ``rel`` is the "±x" of the sample: ±10 % means every sample lies within a
    band of 20 % of the median wide.  None when fewer than two samples or a zero median.
    """
    s = sorted(samples)
    out: dict[str, Any] = {"n": len(s), "samples": s}
    if not s:
        out.update({"median": None, "min": None, "max": None, "rel": None})
        return out
    med = statistics.median(s)
    out.update({"median": med, "min": s[0], "max": s[-1]})
    out["rel"] = (s[-1] - s[0]) / 2 / med if len(s) >= 2 and med else None
    return out


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def histogram_agreement(
    exact: Mapping[str, Any], hist: Histogram, percentiles: Sequence[float] = PERCENTILES
) -> dict[str, Any]:
    """Does the device's log2 histogram agree with the per-event ACK latencies?

    Both come from the device's clock, so they must: the count equals the number
    of ACKed events, min/max are equal, and each exact percentile lies inside
    the [low, high] bounds the histogram gives for it.  Returns the bounds and
    a list of disagreements (empty when consistent).
    """
    problems: list[str] = []
    if exact.get("n") != hist.count:
        problems.append(f"count: {exact.get('n')} ACK latencies vs histogram {hist.count}")
    if hist.count and exact.get("min") is not None:
        if exact["min"] != hist.min_ns:
            problems.append(f"min: {exact['min']} vs histogram {hist.min_ns}")
        if exact["max"] != hist.max_ns:
            problems.append(f"max: {exact['max']} vs histogram {hist.max_ns}")
    bounds: dict[str, Any] = {}
    for p in percentiles:
        key = f"p{p:g}"
        r = hist.percentile_range(p)
        bounds[key] = list(r) if r is not None else None
        v = exact.get(key)
        if r is not None and v is not None and not r[0] <= v <= r[1]:
            problems.append(f"{key}: {v} outside histogram bounds {list(r)}")
    return {
        "count": hist.count,
        "min_ns": hist.min_ns,
        "max_ns": hist.max_ns,
        "mean_ns": hist.mean_ns(),
        "buckets": list(hist.buckets),
        "percentile_bounds": bounds,
        "problems": problems,
    }
