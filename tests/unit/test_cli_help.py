"""What `irqlab --help`, `irqlab COMMAND --help` and the invoke tasks show is written for
users: no developer text (function names, reST markup) in any description."""

from __future__ import annotations

import argparse
import re

import pytest

from irqlab.cli.main import build_parser

DEVELOPER_TEXT = re.compile(r"``|\bcmd_\w+|\badd_\w+_parser\b|\(subparsers\)|:mod:|:func:")


def _commands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_has_no_developer_text(command: str) -> None:
    text = _commands()[command].format_help()
    assert not DEVELOPER_TEXT.search(text), text


def test_task_docs_have_no_developer_text() -> None:
    from test_tasks import _tasks  # same directory (rootdir-relative import)

    tasks = _tasks()
    for name in ("bench", "bench_peers", "buildroot_check", "build_qemu"):
        doc = getattr(tasks, name).__doc__ or ""
        assert doc and not DEVELOPER_TEXT.search(doc), doc


def test_version_names_the_package_and_the_commit(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    from importlib.metadata import version

    from irqlab.cli.main import main
    from irqlab.paths import checkout_root

    root = checkout_root()
    assert root is not None  # the tests run from a checkout
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        rf"irqlab {re.escape(version('irqlab'))} \(git {head[:12]}(, modified)?\)\n", out
    )


def test_version_outside_a_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from irqlab import __version__
    from irqlab.cli.main import main

    monkeypatch.setattr("irqlab.paths.checkout_root", lambda: None)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"irqlab {__version__}\n"


@pytest.mark.parametrize("command", ["build-qemu", "build-image", "probe-accel", "regs"])
def test_every_command_says_what_it_does(command: str) -> None:
    """These had a one-line summary and no description in their --help."""
    assert _commands()[command].description


@pytest.mark.parametrize("action", ["pulse", "set-lines", "push"])
def test_inject_arguments_have_help(action: str) -> None:
    """LINE, WORD and MASK had none: no range, no word of hex."""
    inject = _commands()["inject"]
    sub = next(a for a in inject._actions if isinstance(a, argparse._SubParsersAction))
    positional = [a for a in sub.choices[action]._actions if not a.option_strings]
    assert positional and all(a.help and "0x" in a.help for a in positional)


def test_the_exit_statuses_of_run_and_shell_are_theirs() -> None:
    """The epilog said 255 for both when the guest died; shell exits 1 then (255 when
    the SSH connection dropped), as the README says."""
    text = " ".join(build_parser().format_help().split())
    assert "irqlab run: the command's (255 when the guest died or the SSH connection" in text
    assert "irqlab shell: the shell's (1 when the guest died, 255 when the SSH" in text


def test_the_ci_report_commands_help_is_written_for_users(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m irqlab.testing.reports --help`, the command the README gives a driver
    project's CI, showed the module's docstring: reST markup (``...``, :data:`...`)
    and no exit status of 1 for a missing report, which fails the job's summary step."""
    from irqlab.testing.reports import FAILED_LISTED, main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert not DEVELOPER_TEXT.search(text), text
    assert f"the first {FAILED_LISTED}" in text
    flat = " ".join(text.split())
    assert "1 when a test failed or erred, or a report is missing or unreadable" in flat


def test_injects_help_names_the_values_as_the_readme_does() -> None:
    """The README writes `--qmp SOCKET`, `--device-id ID` and `burst COUNT [--period-us
    US] [--line LINE]`; the help said `--qmp QMP`, `--device-id DEVICE_ID`, `--period-us
    PERIOD_US` and `count`: a reader matching the two saw other options."""
    from irqlab.paths import repo_root

    readme = " ".join((repo_root() / "README.md").read_text(encoding="utf-8").split())
    said = readme.split("`irqlab inject`'s actions:", 1)[1].split(". ", 1)[0]
    inject = _commands()["inject"]
    sub = next(a for a in inject._actions if isinstance(a, argparse._SubParsersAction))
    burst = " ".join(sub.choices["burst"].format_usage().split())
    for option, value in re.findall(r"(--[a-z-]+) ([A-Z]+)", said):
        assert f"[{option} {value}]" in burst, (option, value, burst)
    assert re.search(r"`burst COUNT ", said) and burst.endswith(" COUNT"), burst
    assert len(re.findall(r"(--[a-z-]+) ([A-Z]+)", said)) >= 4, said
