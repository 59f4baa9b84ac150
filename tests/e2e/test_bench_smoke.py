"""A tiny real bench run (own guest): the result JSON has every field, with sane values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from irqlab.bench import SCHEMA, report
from irqlab.bench.runner import BenchConfig, run_bench
from irqlab.vm.guest import PrerequisiteMissing

EVENTS = 60  # enough for every statistic; 10 series at 3 ms each (200 took 4 s more)
STORM_RATE = 1_000
STORM_SECONDS = 0.2
LOOPS = 300


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig.quick_config(
        events=EVENTS,
        paths=("read", "count", "gpio-cdev", "uio", "uio-generic"),
        placements=("hardirq",),
        storm_rates=(STORM_RATE,),
        storm_seconds=STORM_SECONDS,
        storm_paths=("read", "count", "gpio-cdev", "uio", "uio-generic"),
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
    assert r["complete"] is True and "interrupted" not in r
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
    # nothing lost (device, ring) and nothing pending: from the driver's counters
    assert read["lost"] == {"device_dropped": 0, "reported": 0, "driver": 0, "pending": 0}
    # The counting file and gpio-cdev (the generator on a GPIO line) ACK by order
    # through a second fd; UIO (the driver's UIO mode, and uio_pci_generic on a second
    # guest) ACKs through the mapping and reads the latency back: all exact.
    for path in ("count", "gpio-cdev", "uio", "uio-generic"):
        p = run["latency"]["hardirq"][path]
        assert p["problems"] == [], (path, p["problems"])
        assert p["latency_ns"]["n"] == EVENTS and p["latency_ns"]["exact"] is True
        assert p["counters"]["acked"] == EVENTS and p["counters"]["ack_invalid"] == 0
        assert p["device_histogram"]["count"] == EVENTS
        assert 0 < p["latency_ns"]["min"] <= p["latency_ns"]["p50"] <= p["latency_ns"]["max"]
    m = r["metrics"]["latency.hardirq.read.p50"]
    assert m["value"] == s["p50"] and m["noise"] is not None


def test_storm_counts_add_up(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    n = round(STORM_RATE * STORM_SECONDS)
    (run,) = r["runs"]
    assert run["latency"]["hardirq"]["uio-generic"]["module_params"]["driver"] == "uio_pci_generic"
    for path in ("read", "count", "gpio-cdev", "uio", "uio-generic"):
        (s,) = r["storm"]["paths"][path]
        assert s["raised"] == n, s
        # gpio-cdev has no marker: its storm ends when the seqnos account for every edge
        assert (s["end"] == "accounted") if path == "gpio-cdev" else s["marker_seen"], s
        assert s["observed"] + s["lost"] == s["raised"], s
        assert s["unexplained"] == 0, s
        assert s["delivered"] + s["coalesced"] >= 1
    paths = {"read", "count", "gpio-cdev", "uio", "uio-generic"}
    assert set(r["storm"]["highest_lossless"]) == paths
    assert r["storm"]["skipped"] == {}


def test_host_figures(result: tuple[dict[str, Any], Path]) -> None:
    r, _ = result
    (run,) = r["runs"]
    inj = run["injection"]
    assert inj["problems"] == [] and inj["injections"] >= 200
    assert 0 < inj["round_trip_ns"]["p50"] < 1_000_000_000 and inj["rate_per_s"] > 10
    pipe = inj["pipelined"]
    assert pipe["injections"] >= 200 and pipe["rate_per_s"] > 10 and pipe["window"] > 1
    assert r["metrics"]["injection.pipelined_rate"]["value"] == pipe["rate_per_s"]
    b = run["boot"]
    assert 0 < b["console_ready"] <= b["ssh"] <= b["module"] <= b["agent_ready"] < 300
    assert r["boot"]["boots"] == 1 and r["boot"]["phases"]["agent_ready"]["median"] > 0
    (cold,) = r["boot"]["samples"]
    (restore,) = r["restore"]["samples"]
    assert "console_ready" in cold and "restored" in restore, (cold, restore)
    assert 0 < restore["restored"] <= restore["agent_ready"] < restore["whole"] < 300
    assert cold["agent_ready"] < cold["whole"]
    assert r["metrics"]["restore.agent_ready"]["value"] == restore["agent_ready"]
    cyc = run["cyclictest"]
    assert cyc["cycles"] == LOOPS and 0 < cyc["min_us"] <= cyc["max_us"]


def test_report_files(result: tuple[dict[str, Any], Path]) -> None:
    _, path = result
    out = report.write_all(path)
    assert "Raise -> userspace ACK latency" in out["text"].read_text()
    assert "<table>" in out["html"].read_text()


def test_native_series_of_default_mode_paths_come_in_interleaved_rounds(
    result: tuple[dict[str, Any], Path],
) -> None:
    r, _ = result
    (run,) = r["runs"]
    rounds = BenchConfig.quick_config().native_rounds
    for path in ("read", "count", "gpio-cdev"):
        nat = run["native"][path]
        assert nat["problems"] == [], (path, nat["problems"])
        assert nat["rounds"] == rounds and len(nat["round_p50_ns"]) == rounds, path
        assert nat["events"] == EVENTS == nat["latency_ns"]["n"], path
        assert nat["native"]["acks"] == EVENTS == nat["counters"]["acked"], path
    # UIO's mode is a module reload: its native series is one, in that mode
    assert "rounds" not in run["native"]["uio"] and run["native"]["uio"]["problems"] == []


def test_bench_peers_times_an_irqlab_restore_as_a_whole_process(tmp_path: Path) -> None:
    """bench-peers' irqlab row is a process of its own, as labgrid's is: its parts
    (interpreter and imports, set-up, start, the command, stop, exit) add up to the
    wall time from spawn to exit."""
    from irqlab.bench.peers import IrqlabRunner
    from irqlab.vm.guest import GuestConfig, ensure_snapshot

    ensure_snapshot(GuestConfig(name="peer-smoke-snapshot"))
    s = IrqlabRunner(tmp_path)("peer-smoke", snapshot=True)
    assert s["restored"] is True
    parts = s["parts"]
    assert parts["python_and_imports"] > 0 and parts["to_agent_ready"] > 0
    assert 0 < s["inner"] < s["whole"]
    assert sum(parts.values()) == pytest.approx(s["whole"], abs=0.01)
    assert s["phases"]["agent_ready"] == pytest.approx(parts["to_agent_ready"], abs=0.002)
