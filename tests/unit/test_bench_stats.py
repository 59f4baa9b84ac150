"""Bench statistics: nearest-rank percentiles, CDFs, spread, histogram agreement, cyclictest."""

from __future__ import annotations

import pytest

from irqlab.bench import cyclic, stats, storm
from irqlab.vm.qmp.stats import Histogram


def test_percentile_nearest_rank() -> None:
    v = list(range(1, 101))  # 1..100
    assert stats.percentile(v, 50) == 50
    assert stats.percentile(v, 99) == 99
    assert stats.percentile(v, 100) == 100
    assert stats.percentile(v, 0.5) == 1
    assert stats.percentile([7], 99) == 7
    # always a value of the sample, never interpolated
    assert stats.percentile([10, 20], 50) == 10
    assert stats.percentile([10, 20], 51) == 20


@pytest.mark.parametrize("p", [0, -1, 101])
def test_percentile_rejects_bad_p(p: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile([1, 2, 3], p)


def test_percentile_rejects_empty() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_summarize() -> None:
    s = stats.summarize([5, 1, 4, 2, 3] * 20)
    assert s["n"] == 100 and s["min"] == 1 and s["max"] == 5
    assert s["p50"] == 3 and s["p90"] == 5 and s["p99"] == 5
    assert s["mean"] == pytest.approx(3.0)
    empty = stats.summarize([])
    assert empty["n"] == 0 and empty["p50"] is None and empty["max"] is None


def test_cdf_points_thinned_keeps_ends() -> None:
    pts = stats.cdf_points(range(1000, 0, -1), max_points=10)
    assert pts[0] == (1, 0.001)
    assert pts[-1] == (1000, 1.0)
    assert len(pts) <= 12
    xs = [x for x, _ in pts]
    ys = [y for _, y in pts]
    assert xs == sorted(xs) and ys == sorted(ys)
    assert stats.cdf_points([]) == []


def test_chunk_percentiles() -> None:
    values = [1] * 10 + [2] * 10 + [3] * 10
    ch = stats.chunk_percentiles(values, 3)
    assert ch["p50"] == [1, 2, 3] and ch["p99"] == [1, 2, 3]
    assert stats.chunk_percentiles([1, 2], 5)["p50"] == []
    with pytest.raises(ValueError):
        stats.chunk_percentiles(values, 0)


def test_spread_is_relative_half_range() -> None:
    sp = stats.spread([90, 100, 110])
    assert sp["median"] == 100 and sp["min"] == 90 and sp["max"] == 110
    assert sp["rel"] == pytest.approx(0.10)
    assert stats.spread([5])["rel"] is None
    assert stats.spread([])["median"] is None


def _hist(latencies: list[int]) -> Histogram:
    buckets = [0] * 64
    for x in latencies:
        buckets[Histogram.bucket_of(x)] += 1
    return Histogram(len(latencies), sum(latencies), min(latencies), max(latencies), tuple(buckets))


def test_histogram_agreement_consistent() -> None:
    lat = [700_000 + i * 1000 for i in range(500)] + [9_000_000]
    a = stats.histogram_agreement(stats.summarize(lat), _hist(lat))
    assert a["problems"] == []
    lo, hi = a["percentile_bounds"]["p50"]
    assert lo <= stats.percentile(sorted(lat), 50) <= hi


def test_histogram_agreement_detects_mismatch() -> None:
    lat = [1000, 2000, 4000, 8000]
    other = [1000, 2000, 4000, 8000, 1 << 20]
    a = stats.histogram_agreement(stats.summarize(lat), _hist(other))
    assert any(p.startswith("count") for p in a["problems"])
    assert any(p.startswith("max") for p in a["problems"])


def test_cyclictest_hist_percentile_and_overflow() -> None:
    hist = {50: 50, 60: 40, 100: 5}
    assert cyclic.hist_percentile(hist, 5, 50, 20000) == (50, True)
    assert cyclic.hist_percentile(hist, 5, 90, 20000) == (60, True)
    assert cyclic.hist_percentile(hist, 5, 99, 20000) == (20000, False)


def test_cyclictest_parse() -> None:
    doc = {
        "rt_test_version:": "2.40",
        "thread": {"0": {"cycles": 100, "min": 40, "max": 30000, "avg": 95.5,
                         "histogram": {"40": 60, "90": 38}}},
    }  # fmt: skip
    r = cyclic.parse(doc)
    assert r["cycles"] == 100 and r["overflows"] == 2 and r["p50_us"] == 40
    assert r["p90_us"] == 90 and r["p99_us"] is None and r["max_us"] == 30000
    with pytest.raises(ValueError):
        cyclic.parse({"thread": {}})


def test_highest_lossless_stops_at_first_loss() -> None:
    rs = [
        {"rate": 10_000, "lossless": True},
        {"rate": 1_000, "lossless": True},
        {"rate": 50_000, "lossless": False},
        {"rate": 100_000, "lossless": True},  # lossless again above a loss: not counted
    ]
    assert storm.highest_lossless(rs) == 10_000
    assert storm.highest_lossless([{"rate": 1000, "lossless": False}]) is None
