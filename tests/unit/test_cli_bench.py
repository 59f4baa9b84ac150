"""irqlab bench's checks of what it is given, made before anything boots or is
written: result files (--report, --compare), lists (--paths and the like) and
numbers (--events, --period-us and the like)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_bench_report import fixture_result  # same directory (rootdir-relative import)

from irqlab.cli.bench import STAGES_HELP
from irqlab.cli.main import build_parser, main


@pytest.fixture(autouse=True)
def no_bench_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def boot(config: object) -> Path:
        raise AssertionError("the bench ran")

    monkeypatch.setattr("irqlab.bench.runner.run_bench", boot)


@pytest.fixture
def result(tmp_path: Path) -> Path:
    p = tmp_path / "good" / "result.json"
    p.parent.mkdir()
    p.write_text(json.dumps(fixture_result()))
    return p


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"root:x:0:0:root:/root:/bin/bash\n", "not JSON (Expecting value at line 1)"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"{}", "schema missing"),
        (b"[1, 2]", "schema missing"),
        (b'{"schema": "irqlab-bench-peers/1"}', "schema 'irqlab-bench-peers/1'"),
    ],
)
def test_report_of_what_is_no_bench_result_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    bad = tmp_path / "input.json"
    bad.write_bytes(content)
    assert main(["bench", "--report", str(bad)]) == 2  # a usage error, naming the option
    err = capsys.readouterr().err
    assert err == f"irqlab: --report {bad}: not a bench result: {why}" + err.split(why, 1)[1]
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.json"], "nothing written"


def test_compare_with_what_is_no_bench_result_fails_before_anything(
    tmp_path: Path, result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "old.json"
    empty.write_text("{}")
    for argv in (["--report", str(result)], ["--quick"]):
        assert main(["bench", *argv, "--compare", str(empty)]) == 2
        assert f"--compare {empty}: not a bench result: schema missing" in capsys.readouterr().err
    assert sorted(p.name for p in result.parent.iterdir()) == ["result.json"]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda r: r["runs"][0]["latency"]["hardirq"]["read"].pop("latency_ns"), "'latency_ns'"),
        (lambda r: r["storm"]["paths"]["read"][0].pop("raised"), "KeyError: 'raised'"),
        (lambda r: r.update(machine=None), "AttributeError"),
        (lambda r: r.update(runs="x"), "AttributeError"),
        (lambda r: r["metrics"]["boot.agent_ready"].pop("value"), "KeyError: 'value'"),
    ],
)
@pytest.mark.parametrize("argv", [["--report"], ["--quick", "--compare"]])
def test_a_damaged_result_is_one_line_before_anything_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[dict[str, Any]], object],
    why: str,
    argv: list[str],
) -> None:
    """A result of the right schema with a part missing or of another shape (edited, or
    another version's) was a traceback; with --compare after the whole bench had run."""
    r = fixture_result()
    damage(r)
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps(r))
    out = tmp_path / "out"
    assert main(["bench", *argv, str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"irqlab: {argv[-1]} {bad}: a bench result that this irqlab cannot read (edited, or "
        "written by another version): "
    )
    assert why in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("option", ["--report", "--compare"])
@pytest.mark.parametrize(
    ("name", "problem"), [("gone.json", "no such file"), (".", "is a directory")]
)
def test_a_result_that_is_no_file_is_a_usage_error_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, name: str, problem: str
) -> None:
    """``--report /nonexistent.json`` said "No such file or directory: /nonexistent.json"
    and exited 1."""
    given = tmp_path / name
    assert main(["bench", option, str(given), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"irqlab: {option} {given}: {problem}")
    assert not (tmp_path / "out").exists()


def test_report_and_compare_of_bench_results(
    result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--report", str(result), "--compare", str(result)]) == 0
    out = capsys.readouterr().out
    assert "worse beyond noise: 0" in out
    assert (result.parent / "report.html").is_file()


def test_report_with_out_writes_there(result: Path, tmp_path: Path) -> None:
    """--out was ignored with --report: the report overwrote the one beside the result."""
    out = tmp_path / "elsewhere"
    assert main(["bench", "--report", str(result), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "report.txt").is_file()
    assert not (result.parent / "report.html").exists()


def test_report_of_an_incomplete_result_says_what_is_missing_and_fails(
    result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--report of an interrupted bench's partial result exited 0 (a CI step scripted
    on it was green): it still renders what is there, names the parts not measured
    and exits 1."""
    r = fixture_result()
    r.update(complete=False, interrupted="KeyboardInterrupt()", paths=["read", "poll", "count"])
    r["config"].update(
        runs=1, placements=["hardirq", "thread", "workqueue"], storm_rates=[1000, 10000],
        boots=3, rt_tests=True, skip=[], test_all=True,
    )  # fmt: skip
    r["runs"][0]["native"] = {"read": r["runs"][0]["latency"]["hardirq"]["read"]}
    r["storm"]["paths"]["count"].pop()
    result.write_text(json.dumps(r))
    assert main(["bench", "--report", str(result)]) == 1
    out, err = capsys.readouterr()
    lack = [
        "the run: latency wakeup=workqueue (all 3 paths); native: poll, count; "
        "storm poll (0 of 2 rates); storm count (1 of 2 rates)",
        "cold boots and restores of the standard image (x3)",
        "invoke test-all",
    ]
    assert err == (
        f"irqlab bench: {result}: INCOMPLETE (interrupted: KeyboardInterrupt()): "
        f"not measured: {'; '.join(lack)}\n"
    )
    assert out.startswith(
        "INCOMPLETE (interrupted: KeyboardInterrupt()): only the stages before the stop "
        "were measured; the figures below are partial\nnot measured (the bench stopped "
        "first):\n" + "".join(f"  {m}\n" for m in lack) + "\nirqlab bench 20261122"
    )
    latency = out.split("Raise -> userspace ACK latency (device clock), wakeup=hardirq")[1]
    assert "\npoll " in latency.split("\n\n")[0]  # what is there is rendered
    page = (result.parent / "report.html").read_text()
    assert "<li>invoke test-all</li>" in page
    del r["complete"], r["interrupted"]  # a complete one (older results: no "complete")
    result.write_text(json.dumps(r))
    assert main(["bench", "--report", str(result)]) == 0
    assert "INCOMPLETE" not in capsys.readouterr().out


def test_a_report_never_overwrites_another_results(
    result: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--report R --out DIR overwrote the report of another result in DIR without a
    word: now that is a usage error naming the file, nothing written; the same result's
    report (the same file, or a copy of it) is rewritten."""
    other = tmp_path / "other" / "result.json"
    other.parent.mkdir()
    other.write_text(json.dumps(fixture_result(scale=2.0)))
    assert main(["bench", "--report", str(other)]) == 0  # beside it, in its own directory
    out = tmp_path / "out"
    assert main(["bench", "--report", str(result), "--out", str(out)]) == 0
    text = (out / "report.txt").read_text()
    assert (
        text.rstrip().rsplit("\n", 1)[1].startswith(f"rendered from {result.resolve()} (sha256 ")
    )  # its last line: which result it renders
    assert "<a href='../good/result.json'>" in (out / "report.html").read_text()
    capsys.readouterr()

    def unchanged(d: Path) -> dict[str, bytes]:
        return {f.name: f.read_bytes() for f in sorted(d.iterdir())}

    before = {d: unchanged(d) for d in (out, other.parent, result.parent)}
    # another result's report in --out
    assert main(["bench", "--report", str(other), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"irqlab: --out {out}: {out / 'report.txt'} is another result's report (rendered "
        f"from {result.resolve()}): it would be overwritten by {other}'s; give another "
        "--out or remove it\n"
    )
    # another run's directory as --out
    assert main(["bench", "--report", str(result), "--out", str(other.parent)]) == 2
    assert capsys.readouterr().err.startswith(
        f"irqlab: --out {other.parent}: {other.parent} is the directory of another bench "
        f"result ({other}): its report would be overwritten by {result}'s; "
    )
    # another result copied into a run's directory, rendered beside itself
    copied = result.parent / "old.json"
    copied.write_bytes(other.read_bytes())
    before[result.parent]["old.json"] = copied.read_bytes()
    assert main(["bench", "--report", str(copied)]) == 2
    assert capsys.readouterr().err.startswith(
        f"irqlab: --report {copied}: {result.parent} is the directory of another bench "
        f"result ({result}): its report would be overwritten by {copied}'s; give --out DIR\n"
    )
    # a live bench into a directory holding a report
    assert main(["bench", "--quick", "--out", str(out)]) == 2
    assert "holds report.txt already (an earlier report's" in capsys.readouterr().err
    assert {d: unchanged(d) for d in before} == before, "nothing overwritten"
    # a report that names no result (an older irqlab's) is no report of this one
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "report.txt").write_text("irqlab bench 20261101-000000 (quick)\n")
    assert main(["bench", "--report", str(result), "--out", str(legacy)]) == 2
    assert "is another result's report (of a result it does not name)" in capsys.readouterr().err
    # the same result again, and a copy of it: the same data, rewritten
    assert main(["bench", "--report", str(result), "--out", str(out)]) == 0
    twin = tmp_path / "twin.json"
    twin.write_bytes(result.read_bytes())
    assert main(["bench", "--report", str(twin), "--out", str(out)]) == 0
    assert main(["bench", "--report", str(twin), "--out", str(result.parent)]) == 0


def test_report_and_compare_warn_of_a_loaded_machine(
    result: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A result taken at a load of 2.6 on 2 cores was rendered and compared with a quiet
    one without a word: the figures were queueing behind other processes."""
    r = fixture_result()
    r["load"] = {"start": {"1min": 2.6, "cores": 2}, "end": {"1min": 1.9, "cores": 2}}
    result.write_text(json.dumps(r))
    quiet = tmp_path / "quiet.json"
    quiet.write_text(json.dumps(fixture_result()))  # 0.2 and 0.4 on 2 cores
    assert main(["bench", "--report", str(result), "--compare", str(quiet)]) == 0  # a warning
    out = capsys.readouterr().out
    assert (
        "\nWARNING: a loaded machine: the 1-min load average exceeded 0.5 per core at bench "
        "start 2.6 on 2 cores (1.30 per core), bench end 1.9 on 2 cores (0.95 per core): "
    ) in out
    assert (
        "\nWARNING: measured at unlike loads (the 1-min load average per core reached 0.20 "
        "in the old result, 1.30 in the new: they differ by more than 0.5)"
    ) in out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--paths", "bogus", "--quick"], "argument --paths: unknown path 'bogus'; known: read,"),
        (["--paths", "read,nope,poll"], "unknown path 'nope'; known: read, nonblock,"),
        (["--paths", ","], "argument --paths: no path; known: read,"),
        (["--storm-paths", "reed"], "argument --storm-paths: unknown path 'reed'"),
        (["--placements", "irq"], "unknown placement 'irq'; known: hardirq, thread, workqueue"),
        (["--skip", "storms"], "argument --skip: unknown stage 'storms'; known: latency,"),
        (["--storm-rates", "1000,fast"], "expected a comma list of positive numbers"),
        (["--storm-rates", "0"], "expected a comma list of positive numbers"),
        (["--storm-rates", "inf"], "expected a comma list of positive numbers"),  # traceback
        (["--storm-rates", "1000,1.9"], "expected a comma list of positive numbers"),
        # numbers: --events -5 and --period-us 0 started a bench that ran for minutes
        (["--events=-5"], "argument --events: '-5': must be 1 or more"),
        (["--runs", "0"], "argument --runs: '0': must be 1 or more"),
        (["--runs", "2x"], "argument --runs: not an integer: '2x'"),
        (["--period-us", "0"], "argument --period-us: '0': must be more than 0"),
        (["--storm-seconds", "nan"], "argument --storm-seconds: 'nan': not a finite number"),
        (["--storm-ring-size=-1"], "argument --storm-ring-size: '-1': must be 0 or more"),
        (["--noise-floor=-0.1"], "argument --noise-floor: '-0.1': must be 0 or more"),
        (["--wakeup-runs=-1"], "argument --wakeup-runs: '-1': must be 0 or more"),
        (["--injections", "0"], "argument --injections: '0': must be 1 or more"),
        (["--cyclictest-loops", "0"], "argument --cyclictest-loops: '0': must be 1 or more"),
        (["--boots=-1"], "argument --boots: '-1': must be 0 or more"),
    ],
)
def test_lists_are_checked_before_anything_boots(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2
    assert error in capsys.readouterr().err


def test_the_known_names_are_the_benchs() -> None:
    from irqlab.bench import runner
    from irqlab.cli.bench import STAGES_HELP
    from irqlab.cli.main import build_parser
    from irqlab_agent.agent import ALL_PATH_KINDS, INPUT_PATH_KINDS

    assert STAGES_HELP.split(",") == list(runner.STAGES)
    # every path the agent measures device events on can be named
    assert set(ALL_PATH_KINDS) - set(INPUT_PATH_KINDS) <= set(runner.WANTED_PATHS)
    args = build_parser().parse_args(
        ["bench", "--paths", ",".join(runner.WANTED_PATHS), "--skip", STAGES_HELP,
         "--placements", "thread", "--storm-rates", "1e3,2000"]
    )  # fmt: skip
    assert args.paths == runner.WANTED_PATHS and args.skip == runner.STAGES
    assert args.storm_rates == (1000, 2000)


def test_a_series_whose_checks_failed_fails_the_bench(
    result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A series with problems (events dropped at the device and lost in the ring) was
    reported as fine and exited 0: now its checks show, it is not called pending, and
    the exit status is 1 with one line per such series."""
    r = fixture_result()
    read = r["runs"][0]["latency"]["hardirq"]["read"]
    read["problems"] = ["got 256 of 1500 events (idle)"]
    read["latency_ns"]["n"] = 256
    read["lost"] = {"device_dropped": 475, "reported": 0, "driver": 769, "pending": 0}
    r["runs"][0]["latency"]["thread"]["poll"]["problems"] = ["3 events flagged"]
    result.write_text(json.dumps(r))
    assert main(["bench", "--report", str(result)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "irqlab bench: checks failed: agent read (wakeup=hardirq): got 256 of 1500 events (idle)",
        "irqlab bench: checks failed: agent poll (wakeup=thread): 3 events flagged",
    ]
    assert "events still pending" not in out
    (row,) = [ln for ln in out.splitlines() if ln.startswith("read ") and "256" in ln]
    assert row.rstrip().endswith("got 256 of 1500 events (idle)")


def test_native_is_said_to_be_taken_at_hardirq_only(capsys: pytest.CaptureFixture[str]) -> None:
    from irqlab.bench import report

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "native responder (C: the kernel's part without Python), at wakeup=hardirq only" in text
    assert "the native responder runs at hardirq only" in text
    r = fixture_result()
    r["runs"][0]["native"] = {"read": r["runs"][0]["latency"]["hardirq"]["read"]}
    (title,) = [t for t, _ in report.sections(r) if t.startswith("Native responder")]
    assert "wakeup=hardirq only (no native series at other placements)" in title


def test_an_out_directory_holding_a_result_is_refused(
    result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = result.read_bytes()
    assert main(["bench", "--quick", "--out", str(result.parent)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"irqlab: --out {result.parent}: holds a result.json already (an earlier bench's); "
        "give another directory or remove it\n"
    )
    assert result.read_bytes() == before


def test_values_the_device_refuses_and_repeated_names_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from irqlab.contract.regs import REGS

    shortest_us = REGS.MIN_BURST_PERIOD_NS / 1000
    longest_us = REGS.MAX_BURST_PERIOD_NS / 1000  # it booted, then the device refused it
    for argv, error in (
        (["--period-us", f"{shortest_us / 2:g}"], "below the device's shortest burst period"),
        (
            ["--period-us", f"{longest_us * 2:g}"],
            f"above the device's longest burst period, {longest_us:.15g} µs",
        ),
        (["--paths", "read,read"], "argument --paths: path named twice: 'read'"),
        (["--skip", "storm,boot,storm"], "argument --skip: stage named twice: 'storm'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["bench", "--quick", *argv])
        assert e.value.code == 2
        assert error in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "--period-us", f"{shortest_us:g}"])
    assert round(args.period_us * 1000) == REGS.MIN_BURST_PERIOD_NS
    args = build_parser().parse_args(["bench", "--period-us", f"{longest_us:.15g}"])
    assert round(args.period_us * 1000) == REGS.MAX_BURST_PERIOD_NS


def test_the_help_lists_the_paths_and_what_quick_sets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from irqlab.bench import runner
    from irqlab.cli.bench import PATHS_HELP, QUICK_HELP

    assert PATHS_HELP.split(", ") == list(runner.WANTED_PATHS)
    quick = runner.BenchConfig.quick_config()
    full = runner.BenchConfig()
    said = dict(zip(QUICK_HELP.split()[::2], QUICK_HELP.split()[1::2], strict=False))
    for opt, field in (("--events", "events"), ("--storm-seconds", "storm_seconds"),
                       ("--injections", "injections"), ("--boots", "boots"),
                       ("--cyclictest-loops", "cyclictest_loops"),
                       ("--native-rounds", "native_rounds")):  # fmt: skip
        assert float(said[opt]) == getattr(quick, field) != getattr(full, field), opt
    assert quick.injection_seconds == 0 and "(no 5 s minimum)" in QUICK_HELP
    changed = {f for f in vars(quick) if getattr(quick, f) != getattr(full, f)}
    assert changed == {"quick", "events", "storm_seconds", "injections", "injection_seconds",
                       "boots", "cyclictest_loops", "native_rounds"}  # fmt: skip
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = "".join(capsys.readouterr().out.split())  # wrapped at spaces and hyphens
    assert "".join(PATHS_HELP.split()) in text and "".join(QUICK_HELP.split()) in text


@pytest.mark.parametrize("command", ["bench", "bench-peers"])
def test_out_must_be_a_directory_that_holds_no_result(
    result: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """``--out ''`` benched into the current directory, ``--out /etc/passwd`` said 'File
    exists' after booting, and bench-peers overwrote an earlier result.json."""
    monkeypatch.setattr("irqlab.bench.peers.run_peers", lambda *a: pytest.fail("ran"))
    afile = tmp_path / "afile"
    afile.write_text("")
    for out, said in [
        (str(afile), f"irqlab: --out {afile}: is not a directory\n"),
        (str(result.parent), f"irqlab: --out {result.parent}: holds a result.json already"),
    ]:
        assert main([command, "--out", out]) == 2
        assert capsys.readouterr().err.startswith(said)
    with pytest.raises(SystemExit) as e:
        main([command, "--out", ""])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --out: an empty path: give a directory" in err


def test_report_refuses_the_options_that_measure(
    result: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were ignored without a word."""
    argv = ["bench", "--report", str(result), "--quick", "--events", "5", "--paths", "poll"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "irqlab: --report re-renders a result and measures nothing: --events, --paths, "
        "--quick do not apply to it\n"
    )
    # a value of 0 is given too (0 == False hid it), and one option "does" not apply
    assert main(["bench", "--report", str(result), "--boots", "0"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("nothing: --boots does not apply to it\n"), err


def test_bench_peers_takes_the_bench_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two benches disturb each other's figures; bench-peers took no lock."""
    from irqlab.bench import peers
    from irqlab.bench.runner import LOCK_WHAT, lock_path
    from irqlab.build import cache

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(peers, "_run_peers", lambda *a: pytest.fail("ran"))
    with cache.exclusive_lock(lock_path(), LOCK_WHAT), pytest.raises(cache.LockHeld):
        peers.run_peers(1, tmp_path / "out")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--skip", STAGES_HELP],
            f"--skip {STAGES_HELP}: every stage is skipped, nothing to measure",
        ),
        (
            ["--paths", "read", "--storm-paths", "uio,poll"],
            "--storm-paths uio,poll: uio is stormed only in the set-up of its latency "
            "series: add it to --paths too",
        ),
    ],
)
def test_a_bench_that_would_measure_nothing_or_storm_nothing_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """--skip of every stage still built and booted; --storm-paths uio without uio in
    --paths silently stormed nothing (while poll, not in --paths either, was)."""
    monkeypatch.setattr("irqlab.bench.runner.run_bench", None)  # a bench run fails loudly
    assert main(["bench", *argv]) == 2
    assert capsys.readouterr().err == f"irqlab: {said}\n"


def test_what_the_storm_paths_rule_lets_through() -> None:
    from irqlab.cli.bench import check_measures

    parse = build_parser().parse_args
    for argv in (
        ["--paths", "read", "--storm-paths", "poll"],  # the standard set-up: stormed
        ["--paths", "read,uio", "--storm-paths", "uio"],
        ["--storm-paths", "uio"],  # --paths: all
        ["--skip", STAGES_HELP, "--test-all"],
    ):
        check_measures(parse(["bench", *argv]))


def test_an_irqlab_kmod_that_names_no_file_is_a_usage_error_before_the_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It exited 1 with "irqlab bench: ..." once the bench had begun, where run, shell
    and build-image say it as a usage error naming the variable."""
    monkeypatch.setenv("IRQLAB_KMOD", str(tmp_path / "none.ko"))
    monkeypatch.setattr("irqlab.bench.runner.run_bench", None)  # a bench begun fails loudly
    assert main(["bench", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "IRQLAB_KMOD names a build of the irqlab driver" in err, err
