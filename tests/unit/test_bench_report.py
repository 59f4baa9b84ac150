"""Bench report and compare from fixture results (no VM): text, HTML, PNGs, metrics, targets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from irqlab.bench import compare, metrics, report, stats


def _lat(path: str, base_ns: int, n: int = 500) -> dict[str, Any]:
    lat = [base_ns + (i % 50) * 1000 for i in range(n)]
    s = stats.summarize(lat)
    return {
        "path": path,
        "events": n,
        "period_ns": 3_000_000,
        "latency_ns": s,
        "chunks_ns": stats.chunk_percentiles(lat, 5),
        "device_histogram": {"problems": []},
        "cdf": stats.cdf_points(lat, 50),
        "problems": [],
    }


def fixture_result(scale: float = 1.0, runs: int = 1) -> dict[str, Any]:
    def run(i: int) -> dict[str, Any]:
        k = scale * (1 + 0.01 * i)
        return {
            "run": i,
            "boot": {"console_ready": 1.8, "ssh": 1.9, "module": 2.0, "agent_ready": 3.1},
            "cyclictest": {"cycles": 1000, "p50_us": 140, "p99_us": 300, "max_us": 2000},
            "injection": {
                "injections": 5000,
                "elapsed_s": 5.0,  # a sustained rate: at least 5 s
                "rate_per_s": 1000.0 / k,
                "round_trip_ns": stats.summarize([int(900_000 * k)] * 10),
                "noop_round_trip_ns": stats.summarize([500_000] * 10),
                "chunks_ns": {"p50": [900_000 * k] * 5},
            },
            "latency": {
                pl: {
                    "read": _lat("read", int(700_000 * k)),
                    "poll": _lat("poll", int(850_000 * k)),
                    "count": {"path": "count", "skipped": "no records"},
                }
                for pl in ("hardirq", "thread")
            },
        }

    def storm_r(rate: int, lost: int) -> dict[str, Any]:
        return {"rate": rate, "raised": rate // 5, "delivered": rate // 5, "coalesced": 0,
                "observed": rate // 5 - lost, "lost": lost, "device_dropped": 0,
                "reported_lost": lost, "lossless": lost == 0}  # fmt: skip

    r: dict[str, Any] = {
        "schema": "irqlab-bench/1",
        "stamp": "20261122-000000",
        "started": "2026-11-22T00:00:00+0000",
        "duration_s": 80.0,
        "config": {"quick": True, "events": 500, "period_ns": 3_000_000},
        "machine": {"cpu_model": "AMD EPYC", "cores": 2, "host_kernel": "6.18"},
        "load": {"start": {"1min": 0.2}, "end": {"1min": 0.4}},
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "accel": {"accel": "tcg", "reason": "fixture", "probed": True},
        "versions": {"qemu": "7.2.22", "guest_kernel": "6.1.0-56-amd64"},
        "missing_paths": {"uio": "the guest agent has no such path yet"},
        "runs": [run(i) for i in range(runs)],
        "storm": {
            "placement": "hardirq",
            "ring_size": "256",
            "seconds": 10.0,
            "paths": {
                "read": [storm_r(1000, 0), storm_r(10000, 5)],
                "count": [storm_r(1000, 0), storm_r(10000, 0)],
            },
            "highest_lossless": {"read": 1000, "count": 10000},
        },
        "boot": {
            "boots": 3,
            "samples": [{"console_ready": 1.8, "agent_ready": a} for a in (3.0, 3.1, 3.3)],
            "phases": {"agent_ready": stats.spread([3.0, 3.1, 3.3])},
        },
    }
    r["metrics"] = metrics.extract(r)
    r["targets"] = metrics.targets(r)
    return r


def test_metrics_extract() -> None:
    m = fixture_result()["metrics"]
    assert m["latency.hardirq.read.p50"]["value"] == pytest.approx(724_000)
    assert m["latency.hardirq.read.p50"]["noise_from"] == "chunks"
    assert "latency.hardirq.count.p50" not in m  # skipped paths give no figure
    assert m["injection.rate"]["better"] == "higher"
    assert m["boot.agent_ready"]["value"] == pytest.approx(3.1)
    assert m["boot.agent_ready"]["noise"] == pytest.approx(0.15 / 3.1)
    assert m["storm.count.highest_lossless_rate"]["value"] == 10000


def test_metrics_noise_from_runs() -> None:
    m = fixture_result(runs=3)["metrics"]["latency.hardirq.read.p50"]
    assert m["noise_from"] == "runs" and len(m["samples"]) == 3
    assert m["noise"] == pytest.approx((m["samples"][-1] - m["samples"][0]) / 2 / m["value"])


def test_targets() -> None:
    t = {x["name"].split(" ")[0]: x for x in fixture_result()["targets"]}
    assert t["boot"]["met"] is False  # 3.1 s > 2.5 s
    assert t["zero"]["met"] is False and "read" in t["zero"]["value"]
    assert t["QMP"]["met"] is False  # 1000/s < 1500/s
    assert t["spread"]["met"] is None  # one run
    t3 = {x["name"].split(" ")[0]: x for x in fixture_result(runs=3)["targets"]}
    assert t3["spread"]["met"] is True  # 1 % apart


def test_text_report(tmp_path: Path) -> None:
    txt = report.render_text(fixture_result())
    assert "wakeup=hardirq" in txt and "wakeup=thread" in txt
    assert "1.19x" in txt or "1.20x" in txt  # poll p50 / read p50 in the same run
    assert "n/a: no records" in txt
    assert "read 1k/s" in txt and "count 10k/s" in txt
    assert "MISSED" in txt and "not measured" in txt
    assert "uio (the guest agent has no such path yet)" in txt


def test_write_all_html_and_pngs(tmp_path: Path) -> None:
    p = tmp_path / "result.json"
    p.write_text(json.dumps(fixture_result()))
    out = report.write_all(p)
    page = out["html"].read_text()
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<table>" in page and "result.json" in page
    for name in ("latency_cdf_hardirq", "latency_cdf_thread", "storm_loss"):
        png = out[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{png.name}'" in page


def test_write_all_refuses_to_overwrite_another_results_report(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fixture_result()))
    b.write_text(json.dumps(fixture_result(scale=2.0)))
    out = tmp_path / "out"
    report.write_all(a, out)
    page = (out / "report.html").read_bytes()
    with pytest.raises(report.ReportInTheWay) as e:
        report.write_all(b, out)
    assert e.value.path == out / "report.txt" and f"rendered from {a.resolve()}" in str(e.value)
    assert (out / "report.html").read_bytes() == page
    assert report.write_all(a, out)["html"] == out / "report.html"  # its own: rewritten


def test_compare_flags_only_beyond_noise() -> None:
    old = fixture_result()
    same = fixture_result(scale=1.05)  # 5 % slower: inside the 10 % floor
    slow = fixture_result(scale=1.5)  # 50 % slower latency, 33 % lower injection rate
    changes, only = compare.compare(old, same)
    assert not [c for c in changes if c.verdict == "worse"] and only == []
    changes, _ = compare.compare(old, slow)
    worse = {c.name for c in changes if c.verdict == "worse"}
    assert "latency.hardirq.read.p50" in worse
    assert "injection.rate" in worse  # higher-is-better, went down
    assert "boot.agent_ready" not in worse
    text, n = compare.render(old, slow)
    assert n == len(worse) and "WORSE" in text


def test_compare_threshold_adds_noises_and_floor() -> None:
    old, new = fixture_result(), fixture_result()
    for r, noise in ((old, 0.2), (new, 0.15)):
        r["metrics"]["latency.hardirq.read.p50"]["noise"] = noise
    new["metrics"]["latency.hardirq.read.p50"]["value"] *= 1.30  # < 0.35
    (c,) = [c for c in compare.compare(old, new)[0] if c.name == "latency.hardirq.read.p50"]
    assert c.threshold == pytest.approx(0.35) and c.verdict == "same"
    new["metrics"]["latency.hardirq.read.p50"]["value"] *= 1.1  # 1.43 > 0.35
    (c,) = [c for c in compare.compare(old, new)[0] if c.name == "latency.hardirq.read.p50"]
    assert c.verdict == "worse"


def test_compare_better_and_only_in_one() -> None:
    old = fixture_result()
    new = copy.deepcopy(old)
    new["metrics"]["injection.rate"]["value"] *= 2
    del new["metrics"]["cyclictest.p50"]
    changes, only = compare.compare(old, new)
    assert {c.name for c in changes if c.verdict == "better"} == {"injection.rate"}
    assert only == ["cyclictest.p50"]


def test_compare_warns_on_different_accel() -> None:
    old = fixture_result()
    new = copy.deepcopy(old)
    new["accel"]["accel"] = "kvm"
    assert "accelerators differ" in compare.render(old, new)[0]


def test_compare_warns_when_settings_cpu_or_a_stop_make_the_figures_unlike() -> None:
    # a --quick run (300 events at 3 ms) against a full baseline (10,000 at 1 ms), or
    # against an interrupted bench's partial result, was compared without a word
    old = fixture_result()
    assert "WARNING" not in compare.render(old, copy.deepcopy(old))[0]
    new = copy.deepcopy(old)
    new["config"].update(quick=False, events=10_000, period_ns=1_000_000)
    new["machine"]["cpu_model"] = "Intel Xeon"
    text = compare.render(old, new)[0]
    assert (
        "WARNING: measured with other settings (--quick vs full; --events 500 vs 10000; "
        "--period-us 3000 vs 1000): the figures that depend on them are not comparable"
    ) in text
    assert "WARNING: different CPU models (AMD EPYC vs Intel Xeon)" in text
    new = copy.deepcopy(old)
    new.update(complete=False, interrupted="KeyboardInterrupt()", stamp="20261123-000000")
    text = compare.render(old, new)[0]
    assert (
        "WARNING: the new result (20261123-000000) is INCOMPLETE (interrupted: "
        "KeyboardInterrupt()): its figures are partial, those it lacks were not measured"
    ) in text
    assert "the old result" not in text


def _loaded(r: dict[str, Any], *ones: float, cores: int | None = 2) -> dict[str, Any]:
    """*r* with its bench's start and end readings *ones* (no cores: an older result's)."""
    r["load"] = {k: {"1min": one, **({"cores": cores} if cores else {})}
                 for k, one in zip(("start", "end"), ones, strict=True)}  # fmt: skip
    return r


def test_a_load_above_half_a_core_is_warned_of_and_unlike_loads_in_compare() -> None:
    """Figures taken on a loaded machine (dominated by queueing behind other processes)
    were reported and compared without a word about it."""
    assert report.LOAD_PER_CORE_LIMIT == 0.5
    assert report.load_warning(_loaded(fixture_result(), 1.0, 0.2)) is None  # 0.5: not above
    warned = report.load_warning(_loaded(fixture_result(), 0.2, 1.02))
    assert warned == (
        "WARNING: a loaded machine: the 1-min load average exceeded 0.5 per core at bench "
        "end 1.02 on 2 cores (0.51 per core): other processes competed for the CPUs, so the "
        "figures include queueing behind them, not only what is measured; compare them only "
        "with results taken at a like load, or measure again on a quiet machine"
    )
    # an older result's readings without cores: the machine's (2)
    older = report.load_warning(_loaded(fixture_result(), 3.0, 0.2, cores=None))
    assert older is not None and "bench start 3 on 2 cores (1.50 per core)" in older
    # compare: highest per core 0.2 vs 1.3, more than 0.5 apart
    quiet, busy = _loaded(fixture_result(), 0.4, 0.2), _loaded(fixture_result(), 2.6, 1.0)
    unlike = [w for w in compare.warnings(quiet, busy) if "loads" in w]
    assert unlike == [
        "WARNING: measured at unlike loads (the 1-min load average per core reached 0.20 "
        "in the old result, 1.30 in the new: they differ by more than 0.5): the more loaded "
        "one's figures include more queueing behind other processes, so a change may be the "
        "load's, not the code's"
    ]
    assert unlike[0] in compare.render(quiet, busy)[0]
    like = _loaded(fixture_result(), 1.4, 1.0)  # 0.70 per core: within 0.5 of 0.20
    assert not [w for w in compare.warnings(quiet, like) if "loads" in w]


def test_the_load_reading_says_the_cores() -> None:
    from irqlab.bench import env

    assert env.load(lambda: (1.234, 0.5, 0.25), lambda: 4) == {
        "1min": 1.23, "5min": 0.5, "15min": 0.25, "cores": 4,
    }  # fmt: skip


def test_cli_report_and_compare_without_booting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from irqlab.cli import main as cli

    old, new = tmp_path / "old" / "result.json", tmp_path / "new" / "result.json"
    for p, r in ((old, fixture_result()), (new, fixture_result(scale=1.5))):
        p.parent.mkdir()
        p.write_text(json.dumps(r))
    assert cli.main(["bench", "--report", str(new), "--compare", str(old)]) == 1
    out = capsys.readouterr().out
    assert "worse beyond noise:" in out and (new.parent / "report.html").is_file()
    args = ["bench", "--report", str(new), "--compare", str(old), "--no-fail-on-worse"]
    assert cli.main(args) == 0
    assert cli.main(["bench", "--report", str(old), "--compare", str(old)]) == 0


def test_cli_config() -> None:
    import argparse

    from irqlab.cli import bench as cli

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli.add_bench_parser(sub)
    a = p.parse_args(["bench", "--quick", "--paths", "read,poll", "--storm-rates", "1e3,2000",
                      "--period-us", "2500", "--skip", "boot"])  # fmt: skip
    c = cli.config_from_args(a)
    assert c.quick and c.paths == ("read", "poll") and c.storm_rates == (1000, 2000)
    assert c.period_ns == 2_500_000 and c.skip == ("boot",) and c.events == 300
    full = cli.config_from_args(p.parse_args(["bench"]))
    assert full.events == 10_000 and full.storm_seconds == 10.0 and full.runs == 1
    assert full.wakeup_runs == 0  # every run measures every placement
    w = cli.config_from_args(p.parse_args(["bench", "--runs", "3", "--wakeup-runs", "1"]))
    assert (w.runs, w.wakeup_runs) == (3, 1)


def test_spread_table_lists_figures_repeated_across_runs() -> None:
    result = {
        "runs": [{}, {}, {}],
        "metrics": {
            "latency.hardirq.read.p50": {"value": 2000.0, "unit": "ns", "noise": 0.25,
                                         "noise_from": "runs", "samples": [1500.0, 2000.0, 2500.0]},
            "latency.thread.read.p50": {"value": 9.0, "unit": "ns", "noise": 0.1,
                                        "noise_from": "chunks", "samples": [9.0]},
        },
    }  # fmt: skip
    t = report.spread_table(result)
    assert t is not None
    (row,) = t[1]
    assert row[0] == "latency.hardirq.read.p50" and row[3] == "±25.0%"
    assert row[2] == "1.5 µs / 2.0 µs / 2.5 µs"
    assert "Spread across 3 runs" in report.render_text(result)


def test_the_cyclictest_comparison_says_the_priorities() -> None:
    from irqlab.bench import cyclic

    r = fixture_result()
    r["runs"][0]["native"] = {"read": r["runs"][0]["latency"]["hardirq"]["read"]}
    txt = report.render_text(r)
    assert f"cyclictest: {cyclic.VERSUS}" in txt
    assert "SCHED_FIFO priority 80 (-p 80), the native responder and the agent SCHED_OTHER" in txt
    assert "cyclictest, SCHED_FIFO priority 80 (run 1, same boot)" in txt
    assert f" -p {cyclic.PRIORITY} " in cyclic.command(10)


def test_plots_of_failed_series_warn_nothing(tmp_path: Path) -> None:
    import warnings

    r = {
        "runs": [{"latency": {"hardirq": {"read": None}}}],
        "storm": {"seconds": 1, "paths": {"read": [{"rate": 1000, "raised": 0, "lost": 0}]}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = report.plot_all(r, tmp_path)
    assert [f.name for f in files] == ["latency_cdf_hardirq.png", "storm_loss.png"]


def test_every_plot_says_what_it_was_measured_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the PNGs are shared on their own (README, issues): the storm plot named no machine
    # or accelerator, the CDFs only the accelerator, neither an interrupted bench's
    from matplotlib.figure import Figure

    shown: dict[str, str] = {}
    savefig = Figure.savefig

    def spy(fig: Figure, fname: Any, *a: Any, **kw: Any) -> Any:
        words = [t.get_text() for t in fig.texts] + [ax.get_title() for ax in fig.axes]
        shown[Path(fname).name] = "\n".join(words)
        return savefig(fig, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", spy)
    r = fixture_result()
    files = report.plot_all(r, tmp_path)
    assert sorted(shown) == sorted(f.name for f in files) and "storm_loss.png" in shown
    for name, words in shown.items():
        assert "AMD EPYC, 2 cores, tcg, QEMU 7.2.22, guest 6.1.0-56-amd64" in words, name
        assert "irqlab 0123456789ab, 2026-11-22, --quick, 500 events per path at 3 ms" in words
        assert "INCOMPLETE" not in words
    r.update(complete=False, interrupted="KeyboardInterrupt()")
    shown.clear()
    report.plot_all(r, tmp_path)
    assert all("INCOMPLETE (interrupted): partial" in w for w in shown.values()), shown


def test_measured_figures_carry_their_units() -> None:
    # the targets table said "3.1" for a boot of 3.1 s and "1e+03" for 1000 injections
    # per second; compare and the spread table "140 us" and "1000 1/s"
    r = fixture_result(runs=3)
    rows = {row[0].split(" ")[0]: row for row in report.targets_table(r)[1]}
    assert rows["boot"][1:3] == ["<= 2.5 s", "3.10 s"]
    assert rows["QMP"][1:3] == [">= 1500/s", "990/s"]  # the median of 1000, 990, 980
    spread = {row[0]: row for row in (report.spread_table(r) or ([], []))[1]}
    assert spread["injection.rate"][1] == "990/s"
    assert spread["cyclictest.p50"][1:3] == ["140 µs", "140 µs / 140 µs / 140 µs"]
    new = copy.deepcopy(r)
    for run in new["runs"]:
        run["cyclictest"]["p99_us"] = 600
        run["injection"]["rate_per_s"] = 500.0
    new["metrics"] = metrics.extract(new)
    text = compare.render(r, new)[0]
    assert "cyclictest.p99: 300 µs -> 600 µs (+100.0%" in text
    assert "injection.rate: 990/s -> 500/s (-49.5%" in text


def test_a_quick_burst_of_injections_is_no_sustained_rate() -> None:
    # --quick injects 500 in ~0.3 s: the target (>= 1500/s sustained, over >= 5 s)
    # was judged MET or MISSED on it, while a 0.2 s storm's was "not measured"
    r = fixture_result()
    inj = r["runs"][0]["injection"]
    inj.update(injections=500, elapsed_s=0.25, rate_per_s=2000.0)
    inj["pipelined"] = {"window": 8, "injections": 500, "elapsed_s": 6.0, "rate_per_s": 1200.0}
    r["metrics"] = metrics.extract(r)
    t = {x["name"]: x for x in metrics.targets(r)}
    one = t["QMP injection sustained (one at a time)"]
    assert one["met"] is None
    assert one["value"] == "2000/s over 0.25 s (sustained: over >= 5 s)"
    assert t["QMP injection sustained (pipelined)"]["met"] is False  # 6 s: judged
    inj["elapsed_s"] = 5.0
    r["metrics"] = metrics.extract(r)
    t = {x["name"]: x for x in metrics.targets(r)}
    assert t["QMP injection sustained (one at a time)"]["met"] is True


def test_targets_say_skipped_storms_and_the_runs_taken() -> None:
    r = fixture_result(runs=2)
    r["config"]["skip"] = ["storm"]
    del r["storm"]
    t = {x["name"].split(" ")[0]: x for x in metrics.targets(r)}
    assert t["zero"]["value"] == "skipped (--skip storm)" and t["zero"]["met"] is None
    assert t["spread"]["name"] == "spread across runs"
    assert t["spread"]["value"].startswith("2 runs: worst ±") and t["spread"]["met"] is None
    txt = report.render_text(r)
    assert "None" not in txt.split("Targets", 1)[1]
