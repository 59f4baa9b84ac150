"""A tiny real bench run (own guest): the result JSON has every field, with sane values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from irqlab.bench import SCHEMA, report
from irqlab.bench.runner import BenchConfig, run_bench
from irqlab.guestvm import PrerequisiteMissing

EVENTS = 200
STORM_RATE = 1_000
STORM_SECONDS = 0.2
LOOPS = 300


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig.quick_config(
        events=EVENTS,
        paths=("read", "count", "gpio-cdev", "uio"),
        placements=("hardirq",),
        storm_rates=(STORM_RATE,),
        storm_seconds=STORM_SECONDS,
        storm_paths=("read", "count", "gpio-cdev", "uio"),
        injections=200,
        boots=1,
        cyclictest_loops=LOOPS,
        out_dir=out,
    )
    try:
        path = run_bench(cfg)
    except PrerequisiteMissing as e:
        pytest.fail(f"bench prerequisite missing: {e}", pytrace=False)
    return json.loads(path.read_text()), path


def test_no_errors_and_provenance(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    assert not r.get("errors"), r.get("errors")
    assert r["schema"] == SCHEMA
    assert r["machine"]["cpu_model"] and r["machine"]["cores"] >= 1
    assert r["machine"]["host_kernel"]
    assert r["accel"]["accel"] in ("kvm", "tcg") and r["accel"]["reason"]
    assert r["versions"]["qemu"] and r["versions"]["guest_kernel"].startswith(("5.", "6.", "7."))
    assert r["git"]["commit"] and len(r["git"]["commit"]) == 40
    assert set(r["load"]) == {"start", "end"}


def test_latency_from_device_clock(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    (run,) = r["runs"]
    read = run["latency"]["hardirq"]["read"]
    assert read["problems"] == [], read["problems"]
    s = read["latency_ns"]
    assert s["n"] == EVENTS
    assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"] < 10_000_000_000
    hist = read["device_histogram"]
    assert hist["count"] == EVENTS and hist["problems"] == []
    assert read["counters"]["raised"] == EVENTS and read["counters"]["acked"] == EVENTS
    assert "skipped" in run["latency"]["hardirq"]["count"]
    # gpio-cdev: the generator on a GPIO line, each edge ACKed as its device seq.
    gpio = run["latency"]["hardirq"]["gpio-cdev"]
    assert gpio["problems"] == [], gpio["problems"]
    assert gpio["latency_ns"]["n"] == EVENTS and gpio["latency_ns"]["exact"] is True
    assert gpio["device_histogram"]["count"] == EVENTS
    assert gpio["counters"]["acked"] == EVENTS
    # UIO (the driver's UIO mode): the agent ACKs through the mapping, only the
    # device histogram has the latencies.
    uio = run["latency"]["hardirq"]["uio"]
    assert uio["problems"] == [], uio["problems"]
    assert uio["latency_ns"]["n"] == EVENTS and uio["latency_ns"]["exact"] is False
    assert uio["counters"]["acked"] == EVENTS
    assert 0 < uio["latency_ns"]["p50"] <= uio["latency_ns"]["p99"]
    m = r["metrics"]["latency.hardirq.read.p50"]
    assert m["value"] == s["p50"] and m["noise"] is not None


def test_storm_counts_add_up(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    n = round(STORM_RATE * STORM_SECONDS)
    for path in ("read", "count", "gpio-cdev", "uio"):
        (s,) = r["storm"]["paths"][path]
        assert s["raised"] == n, s
        # gpio-cdev has no marker: its storm ends when the seqnos account for every edge
        assert (s["end"] == "accounted") if path == "gpio-cdev" else s["marker_seen"], s
        assert s["observed"] + s["lost"] == s["raised"], s
        assert s["unexplained"] == 0, s
        assert s["delivered"] + s["coalesced"] >= 1
    assert set(r["storm"]["highest_lossless"]) == {"read", "count", "gpio-cdev", "uio"}
    assert r["storm"]["skipped"] == {}


def test_host_figures(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    (run,) = r["runs"]
    inj = run["injection"]
    assert inj["problems"] == [] and inj["injections"] >= 200
    assert 0 < inj["round_trip_ns"]["p50"] < 1_000_000_000 and inj["rate_per_s"] > 10
    b = run["boot"]
    assert 0 < b["console_ready"] <= b["ssh"] <= b["module"] <= b["agent_ready"] < 300
    assert r["boot"]["boots"] == 1 and r["boot"]["phases"]["agent_ready"]["median"] > 0
    cyc = run["cyclictest"]
    assert cyc["cycles"] == LOOPS and 0 < cyc["min_us"] <= cyc["max_us"]


def test_report_files(result: tuple[dict[str, Any], Path]) -> None:
    _, path = result
    out = report.write_all(path)
    assert "Raise -> userspace ACK latency" in out["text"].read_text()
    assert "<table>" in out["html"].read_text()
