"""The invoke tasks that are `irqlab` subcommands take exactly the CLI's options and pass
them through (no second copy of the options)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from invoke import Context

from irqlab.cli import main as cli
from irqlab.paths import repo_root

COMMANDS = ("build-qemu", "build-image", "probe-accel", "bench", "buildroot-build",
            "buildroot-check")  # fmt: skip


def _tasks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("irqlab_tasks", repo_root() / "tasks.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["irqlab_tasks"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("command", COMMANDS)
def test_task_options_are_the_cli_options(command: str) -> None:
    t = getattr(_tasks(), command.replace("-", "_"))
    parser, _ = cli.command_parser(command)
    cli_opts = {a.option_strings[-1] for a in parser._actions if a.option_strings} - {"--help"}
    task_opts = {"--" + arg.name.replace("_", "-") for arg in t.get_arguments()}
    assert task_opts == cli_opts


def test_given_options_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    tasks = _tasks()
    tasks.bench(Context(), quick=True, runs="3", storm_ring_size="0", no_rt_tests=False)
    tasks.build_image(Context())
    assert calls == [["bench", "--quick", "--runs", "3", "--storm-ring-size", "0"], ["build-image"]]

    def failing(argv: list[str]) -> int:
        return 2

    monkeypatch.setattr(cli, "main", failing)
    with pytest.raises(SystemExit) as e:
        tasks.probe_accel(Context())
    assert e.value.code == 2


def test_the_cli_parses_what_the_tasks_pass(tmp_path: Path) -> None:
    args: Any = cli.build_parser().parse_args(
        ["bench", "--quick", "--runs", "3", "--storm-rates", "1000,2000", "--out", str(tmp_path)]
    )
    assert (args.quick, args.runs, args.storm_rates, args.out) == (True, 3, (1000, 2000), tmp_path)


def test_cli_reports_irqlab_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["buildroot-check", "--tree", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("irqlab: ") and "not a Buildroot source tree" in err


class _Recorder(Context):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []
        self.cwds: list[str] = []  # where each command runs

    def run(self, command: str, **kw: Any) -> None:  # type: ignore[override]
        self.commands.append(command)
        self.cwds.append(self.cwd)


@pytest.mark.parametrize(
    ("jobs", "cores", "expected"),
    [
        (0, 2, " -n 2 --dist loadgroup"),
        (0, 4, " -n 4 --dist loadgroup"),
        (0, 1, " -p no:xdist"),
        (1, 4, " -p no:xdist"),
        (3, 1, " -n 3 --dist loadgroup"),
    ],
)
def test_test_all_runs_one_xdist_worker_per_core_unless_told(
    monkeypatch: pytest.MonkeyPatch, jobs: int, cores: int, expected: str
) -> None:
    from irqlab.testing import parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: cores)
    tasks = _tasks()
    monkeypatch.setattr(tasks, "build", lambda c: None)
    c = _Recorder()
    tasks.test_all(c, jobs=jobs, junit="out.xml")
    (cmd,) = c.commands
    junit = f"--junitxml={Path.cwd() / 'out.xml'}"
    assert cmd.endswith(f"pytest tests{expected} {junit}") or (
        f"pytest tests{expected} {junit} -p no:cacheprovider" in cmd
    ), cmd


@pytest.mark.parametrize(
    ("jobs", "cores", "expected"),
    [(None, 2, " -n 2 --dist loadgroup"), ("1", 2, " -p no:xdist"), ("3", 1, " -n 3")],
)
def test_test_unit_runs_one_xdist_worker_per_core_unless_told(
    monkeypatch: pytest.MonkeyPatch, jobs: str | None, cores: int, expected: str
) -> None:
    """`invoke test-unit` ran the unit tests on one process: 2139 of them took 7 minutes
    on the 2-core machine, where the README said 1-2 minutes; it takes -j as the other
    test tasks do."""
    from irqlab.testing import parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: cores)
    tasks = _tasks()
    c = _Recorder()
    if jobs is None:
        tasks.test_unit(c, k="regs")
    else:
        tasks.test_unit(c, k="regs", jobs=jobs)
    (cmd,) = c.commands
    assert f"pytest tests/unit{expected}" in cmd and cmd.endswith(" -k regs"), cmd


def test_tasks_run_in_the_checkout_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """invoke finds tasks.py in a parent directory: `cd docs && invoke test-unit` found no
    tests/unit, `invoke lint` no files, and `invoke clean` removed docs/build/logs.  A
    path the user gives (--junit) is still relative to where they typed it."""
    tasks = _tasks()
    monkeypatch.setattr(tasks, "build", lambda c: None)
    (tmp_path / "build" / "logs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    c = _Recorder()
    tasks.test_unit(c)
    tasks.lint(c)
    tasks.clean(c)
    tasks.test_all(c, junit="reports/r.xml")
    assert len(c.commands) == 6 and set(c.cwds) == {str(repo_root())}, c.cwds
    assert f"--junitxml={tmp_path / 'reports' / 'r.xml'}" in c.commands[-1]


@pytest.mark.parametrize(
    ("jobs", "said"),
    [
        ("x", "-j 'x': not a whole number of workers"),
        ("1.5", "-j '1.5': not a whole number"),
        ("-1", "-j -1: must be 0 (one worker per core) or more"),
        ("9", "-j 9: at most 8 workers here (4 per usable core"),
    ],
)
def test_a_bad_worker_count_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, jobs: str, said: str
) -> None:
    """`-j x` was invoke's ValueError traceback, `-j -1` the default, and `-j 1000` ran
    1000 guests."""
    from invoke.exceptions import Exit

    from irqlab.testing import parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    tasks = _tasks()
    monkeypatch.setattr(tasks, "build", lambda c: pytest.fail("built"))
    c = _Recorder()
    for run in (tasks.test_all, tasks.test_unit, tasks.test_device, tasks.test_e2e, tasks.soak):
        with pytest.raises(Exit) as e:
            run(c, jobs=jobs)
        assert e.value.code == 2 and said in str(e.value.message)
    assert c.commands == []
    assert tasks.workers("8") == 8


def test_an_unwritable_junit_file_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed at the end of the whole suite, in pytest's traceback, with no report."""
    from invoke.exceptions import Exit

    tasks = _tasks()
    monkeypatch.setattr(tasks, "build", lambda c: pytest.fail("built"))
    afile = tmp_path / "afile"
    afile.write_text("")
    c = _Recorder()
    for junit, said in [
        ("/proc/nope/x.xml", "cannot write into /proc/nope"),
        (str(tmp_path), "is a directory, not a file"),
        (str(afile / "x.xml"), f"cannot write into {afile}"),
    ]:
        with pytest.raises(Exit) as e:
            tasks.test_all(c, junit=junit)
        assert e.value.code == 2 and f"--junit {junit}: {said}" in str(e.value.message)
    assert c.commands == []
    assert tasks.junit_path(str(tmp_path / "new" / "r.xml")) == tmp_path / "new" / "r.xml"
