"""The bench's stages and their order (no VM: a scripted guest and measurements stand in)."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from test_bench_report import _lat

from irqlab.bench import runner

ALL = ("read", "poll", "uio", "uio-generic")


class FakeGuest:
    """A BenchGuest whose every step is written to the shared *calls*."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, config: Any) -> None:
        self.config = SimpleNamespace(name=config.name, smp=1, snapshot=config.snapshot)
        self.restored = config.snapshot  # a restore restores (see the fallback test)
        self.phases = {"console_ready": 1.0, "agent_ready": 2.0}
        self.accel = SimpleNamespace(accel="tcg", reason="fake", probed=False)
        self.agent = SimpleNamespace(hello={"paths": {p: {} for p in ("read", "poll", "uio")}})
        self.qemu = self.image = None
        self.dev = "/dev/irqlab0"

    def start(self) -> None:
        self.calls.append(("boot", self.config.name))
        if self.config.name == "bench-restore":  # another guest's save prunes meanwhile
            from irqlab.vm import snapshot as snapshots

            self.calls.append(("pruned", tuple(snapshots.prune(0))))

    def close(self) -> None:
        self.calls.append(("close", self.config.name))

    def switch_module(self, **params: Any) -> None:
        self.calls.append(("module", self.config.name, params))

    def sh(self, cmd: str) -> str:
        return "4096" if "ring_size" in cmd else "x"

    def module_name(self) -> str:
        return "irqlab"

    def bind_uio_pci_generic(self) -> tuple[str, Any]:
        return "0000:00:04.0", SimpleNamespace(rc=0, err="")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[tuple[Any, ...]]]:
    log: list[tuple[Any, ...]] = []
    monkeypatch.setattr(FakeGuest, "calls", log)
    monkeypatch.setattr(runner, "BenchGuest", FakeGuest)
    monkeypatch.setattr(runner, "lock_path", lambda: tmp_path / "bench.lock")

    def series(kind: str) -> Any:
        def measure(g: FakeGuest, path: str, **_kw: Any) -> dict[str, Any]:
            log.append((kind, g.config.name, path))
            return _lat(path, 500_000)

        return measure

    def storm(g: FakeGuest, path: str, *, rate: int, **_kw: Any) -> dict[str, Any]:
        log.append(("storm", g.config.name, path))
        return {"path": path, "rate": rate, "raised": 10, "delivered": 10, "coalesced": 0,
                "observed": 10, "lost": 0, "device_dropped": 0, "reported_lost": 0,
                "unexplained": 0, "end": "until", "lossless": True}  # fmt: skip

    monkeypatch.setattr(runner.latency, "measure", series("latency"))
    monkeypatch.setattr(runner.native, "measure", series("native"))
    monkeypatch.setattr(runner.storm, "measure", storm)
    yield log


def bench(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "paths": ALL,
        "rt_tests": False,
        "boots": 0,
        "storm_rates": (1000,),
        "native_rounds": 1,  # one native series per path (rounds: their own test)
    }
    cfg = runner.BenchConfig.quick_config(**{**base, "out_dir": tmp_path, **kw})
    b = runner.Bench(cfg, log=lambda _m: None)
    b.run()
    return b.result


def test_skip_latency_keeps_the_native_series_without_reloading(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    r = bench(tmp_path, skip=("latency", "storm", "injection"))
    (run,) = r["runs"]
    assert set(run["native"]) == set(ALL) and not r.get("errors")
    assert not [c for c in calls if c[0] == "latency"]
    # no reload on the main guest but UIO's mode and back
    assert [c[2] for c in calls if c[:2] == ("module", "bench-0")] == [
        {"uio": 1},
        {"wakeup": "hardirq"},
    ]


def test_skip_native_keeps_the_latency_series(tmp_path: Path, calls: list[tuple[Any, ...]]) -> None:
    r = bench(tmp_path, skip=("native", "storm", "injection", "wakeup"))
    (run,) = r["runs"]
    assert set(run["latency"]["hardirq"]) == set(ALL) and run["native"] == {}
    assert not [c for c in calls if c[0] == "native"]


def test_native_runs_at_hardirq_when_only_other_placements_are_measured(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    r = bench(tmp_path, placements=("thread",), skip=("storm", "injection"), paths=("read",))
    (run,) = r["runs"]
    assert set(run["latency"]) == {"thread"} and set(run["native"]) == {"read"}
    mods = [c[2] for c in calls if c[0] == "module"]
    assert mods == [{"wakeup": "thread"}, {"wakeup": "hardirq"}]
    assert calls.index(("native", "bench-0", "read")) > calls.index(("module", "bench-0", mods[1]))


def test_nothing_to_measure_reloads_nothing(tmp_path: Path, calls: list[tuple[Any, ...]]) -> None:
    bench(tmp_path, skip=("latency", "native", "storm", "injection"))
    assert [c[0] for c in calls] == ["boot", "close"]


def test_storm_paths_of_another_set_up_not_in_paths_are_said_skipped(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    r = bench(tmp_path, paths=("read",), storm_paths=("read", "uio", "uio-generic"))
    assert set(r["storm"]["paths"]) == {"read"}
    assert r["storm"]["skipped"] == dict.fromkeys(("uio", "uio-generic"), runner.NOT_IN_PATHS)
    assert not [c for c in calls if c[0] == "boot" and c[1] != "bench-0"]
    from irqlab.bench import report

    assert "not stormed: uio (not in --paths" in report.render_text(r)


def test_a_second_bench_is_refused_naming_the_first(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    import os

    from irqlab.build import cache

    with (
        cache.exclusive_lock(runner.lock_path(), "running a bench"),
        pytest.raises(cache.LockHeld) as e,
    ):
        bench(tmp_path / "second")
    assert e.value.holder == os.getpid()
    assert str(e.value).startswith(f"process {os.getpid()} is running a bench (two at once")
    assert calls == [] and not (tmp_path / "second").exists()  # nothing booted or written
    bench(tmp_path / "third")  # once it is free
    assert ("boot", "bench-0") in calls


def test_the_run_guest_stops_before_the_second_guest_boots(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    r = bench(tmp_path, skip=("injection",))
    assert not r.get("errors")
    boots = [c for c in calls if c[0] == "boot"]
    assert boots == [("boot", "bench-0"), ("boot", "bench-0-uio-generic")]
    first_close = calls.index(("close", "bench-0"))
    assert first_close < calls.index(boots[1])
    # nothing measured on the run's guest after it stopped
    assert all(c[1] != "bench-0" for c in calls[first_close:] if c[0] != "close")
    assert r["storm"]["paths"]["uio-generic"] and r["runs"][0]["native"]["uio-generic"]


def test_an_interrupted_bench_leaves_a_result_marked_incomplete(
    tmp_path: Path, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from irqlab.bench import report

    def interrupted(*_a: Any, **_kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.native, "measure", interrupted)
    said: list[str] = []
    cfg = runner.BenchConfig.quick_config(
        paths=("read",), rt_tests=False, out_dir=tmp_path, native_rounds=1
    )
    with pytest.raises(KeyboardInterrupt):
        runner.Bench(cfg, log=said.append).run()
    path = tmp_path / "result.json"
    assert said[-1] == (
        f"stopped (KeyboardInterrupt()): the partial result is {path} "
        f"(irqlab bench --report {path})"
    )
    r = json.loads(path.read_text())
    assert r["complete"] is False and r["interrupted"] == "KeyboardInterrupt()"
    assert r["runs"][0]["latency"]["hardirq"]["read"]  # what it had
    assert ("close", "bench-0") in calls
    text = report.render_text(r)
    assert text.startswith("INCOMPLETE (interrupted: KeyboardInterrupt()): only the stages")
    assert "<strong>INCOMPLETE (interrupted" in report.render_html(r, [])
    assert report.missing_parts(r) == [  # what the stop left unmeasured
        "the run: latency wakeup=thread: read; latency wakeup=workqueue: read; native: read; "
        "storms",
        "cold boots and restores of the standard image (x2)",
    ]
    done = bench(tmp_path / "whole", skip=("native",))
    assert done["complete"] is True and "interrupted" not in done
    assert "INCOMPLETE" not in report.render_text(done)


def test_the_load_and_cores_at_each_start_and_end_are_recorded_and_a_high_one_warned_of(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    """A bench on a loaded machine gave figures dominated by queueing behind other
    processes, and its report did not say so: each reading (the injected reader's)
    is in the result with the cores, the report prints them and warns of those above
    0.5 per core."""
    from irqlab.bench import env, report

    def reader(ones: list[float]) -> Any:
        said = iter(ones)
        return lambda: env.load(lambda: (next(said), 1.0, 0.5), lambda: 2)

    cfg = runner.BenchConfig.quick_config(
        paths=("read",), rt_tests=False, boots=0, runs=2, out_dir=tmp_path / "loaded",
        skip=("latency", "native", "storm", "injection"),
    )  # fmt: skip
    b = runner.Bench(cfg, log=lambda _m: None, read_load=reader([0.4, 0.6, 1.0, 0.8, 2.4, 1.2]))
    b.run()
    r = b.result
    assert r["load"] == {
        "start": {"1min": 0.4, "5min": 1.0, "15min": 0.5, "cores": 2},
        "end": {"1min": 1.2, "5min": 1.0, "15min": 0.5, "cores": 2},
    }
    assert [(run["load_start"]["1min"], run["load_end"]["1min"]) for run in r["runs"]] == [
        (0.6, 1.0),
        (0.8, 2.4),
    ]
    assert all(run["load_end"]["cores"] == 2 for run in r["runs"])
    text = report.render_text(r)
    assert (
        "load average (1/5/15 min): start 0.4/1.0/0.5 on 2 cores, end 1.2/1.0/0.5 on 2 "
        "cores; 1 min: run 1 start 0.6, run 1 end 1, run 2 start 0.8, run 2 end 2.4\n"
    ) in text
    assert (
        "\nWARNING: a loaded machine: the 1-min load average exceeded 0.5 per core at run 2 "
        "end 2.4 on 2 cores (1.20 per core), bench end 1.2 on 2 cores (0.60 per core): "
        "other processes competed for the CPUs, so the figures include queueing"
    ) in text
    assert "<strong>WARNING: a loaded machine" in report.render_html(r, [])
    quiet = runner.Bench(
        dataclasses.replace(cfg, out_dir=tmp_path / "quiet"),
        log=lambda _m: None,
        read_load=reader([0.4, 0.6, 1.0, 0.8, 0.9, 1.0]),  # 0.5 per core at most
    )
    quiet.run()
    assert "WARNING" not in report.render_text(quiet.result)


def test_errors_and_test_all_are_in_every_result(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    """docs/bench.md lists them; they were absent unless something failed or ran."""
    r = bench(tmp_path, paths=("read",), skip=("latency", "native", "injection", "storm"))
    assert r["errors"] == [] and r["test_all"] is None


def test_the_storms_ring_size_is_a_number_in_the_result(
    tmp_path: Path, calls: list[tuple[Any, ...]]
) -> None:
    r = bench(tmp_path, paths=("read",), skip=("latency", "native", "injection", "wakeup"))
    assert r["storm"]["ring_size"] == 4096  # it was the string "4096"


def test_native_rounds_interleave_the_paths_and_pool_each(
    tmp_path: Path, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every round measures every default-mode path for its share of the events, the
    order reversed every other round; each path's result pools its rounds."""
    from irqlab.bench import native

    def series(g: FakeGuest, path: str, *, events: int, **_kw: Any) -> Any:
        calls.append(("native-round", path, events))
        r = _lat(path, 100_000 * (1 + len([c for c in calls if c[:2] == ("native-round", path)])))
        r.update(events=events, wall_s=1.0, counters={"raised": events, "next_seq": 7},
                 lost={"pending": 0, "driver": None}, native={"acks": events, "exit": "ok"},
                 pending_at_end=0, problems=["late"] if path == "poll" else [])  # fmt: skip
        r["device_histogram"] = {"count": events, "problems": []}
        return r, [r["latency_ns"]["p50"]] * events, ([], None)

    monkeypatch.setattr(native, "_series", series)
    r = bench(tmp_path, native_rounds=3, events=10, skip=("latency", "storm", "injection"))
    rounds = [c[1:] for c in calls if c[0] == "native-round"]
    assert rounds == [("read", 4), ("poll", 4), ("poll", 3), ("read", 3), ("read", 3), ("poll", 3)]
    read = r["runs"][0]["native"]["read"]
    assert read["rounds"] == 3 and read["events"] == 10
    assert read["round_p50_ns"] == [224_000, 324_000, 424_000]  # _lat's p50: base + 24 µs
    assert read["counters"] == {"raised": 10, "next_seq": 7}  # a count summed, a state last
    assert read["native"] == {"acks": 10, "exit": "ok"} and read["lost"]["driver"] is None
    assert r["runs"][0]["native"]["poll"]["problems"] == [f"round {i}/3: late" for i in (1, 2, 3)]
    # one series each for the paths of another set-up (UIO's mode, a second guest)
    assert [c[2] for c in calls if c[0] == "native"] == ["uio", "uio-generic"]


def test_a_failed_native_round_is_an_error_of_the_bench(
    tmp_path: Path, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was logged and its path left None, with no entry in errors: exit status 0."""
    from irqlab.bench import native

    def series(g: FakeGuest, path: str, *, events: int, **_kw: Any) -> Any:
        if path == "poll" and len([c for c in calls if c[:2] == ("native-round", "poll")]) == 1:
            raise RuntimeError("the responder died")
        calls.append(("native-round", path, events))
        r = _lat(path, 100_000)
        r.update(events=events, wall_s=1.0, counters={}, lost={}, native={}, pending_at_end=0)
        r["device_histogram"] = {"count": events, "problems": []}
        return r, [r["latency_ns"]["p50"]] * events, ([], None)

    monkeypatch.setattr(native, "_series", series)
    r = bench(tmp_path, native_rounds=3, events=9, skip=("latency", "storm", "injection"))
    assert r["runs"][0]["native"]["poll"] is None and r["runs"][0]["native"]["read"]["rounds"] == 3
    (err,) = r["errors"]
    assert err["stage"] == "native poll round 2/3" and "the responder died" in err["error"]
    assert [c[1] for c in calls if c[0] == "native-round"] == ["read", "poll", "read", "read"]


def test_the_storms_ring_size_is_read_with_the_path_one_word(
    tmp_path: Path, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module's name went into the ``cat`` command unquoted."""
    said: list[str] = []

    def sh(g: FakeGuest, cmd: str) -> str:
        said.append(cmd)
        return "4096"

    monkeypatch.setattr(FakeGuest, "sh", sh)
    monkeypatch.setattr(FakeGuest, "module_name", lambda g: "my drv;x")
    r = bench(tmp_path, paths=("read",), skip=("latency", "native", "injection", "wakeup"))
    assert r["storm"]["ring_size"] == 4096
    read = [shlex.split(c) for c in said if "ring_size" in c]
    assert read == [["cat", "/sys/module/my drv;x/parameters/ring_size"]], said


def test_the_restore_rounds_hold_the_snapshot_and_count_cold_fallbacks(
    tmp_path: Path, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other guests' saves prune the snapshot cache: the bench holds its snapshot through
    the cold-boot/restore rounds (bench-peers did, the main bench did not), and a
    "restore" that booted cold anyway is counted and said, not averaged in silently."""
    from irqlab.bench.report import host_table
    from irqlab.build import cache
    from irqlab.vm import snapshot as snapshots

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    snap = cache.cached_build(
        snapshots.RECIPE, "0" * 16, lambda t: (t / snapshots.STATE_FILE).write_bytes(b"x")
    )
    monkeypatch.setattr(runner, "ensure_snapshot", lambda: snap)
    only_starts = ("latency", "native", "storm", "injection", "wakeup")
    r = bench(tmp_path, boots=2, skip=only_starts)
    assert not r.get("errors"), r["errors"]
    assert [c for c in calls if c[0] == "pruned"] == [("pruned", ())] * 2
    assert r["restore"]["boots"] == 2 and "cold_fallbacks" not in r["restore"]
    assert not cache.in_use(snap) and snapshots.prune(0) == [snap]  # released at the end

    def cold(self: FakeGuest) -> None:
        self.restored = False

    monkeypatch.setattr(FakeGuest, "start", cold)
    r = bench(tmp_path / "again", boots=2, skip=only_starts)
    assert r["restore"]["cold_fallbacks"] == 2 and "cold_fallbacks" not in r["boot"]
    rows = dict(host_table(r)[1])
    assert rows["restore: NOT restores"].startswith("2 of 2 booted cold"), rows
