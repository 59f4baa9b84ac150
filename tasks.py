"""irqlab tasks: `invoke --list` shows them, `invoke test-all` is the front door.

The build, probe, bench and Buildroot tasks are the `irqlab` command's subcommands:
their options are read from the CLI's parser (`irqlab.cli.main`) and passed through
to it, so `invoke bench --quick` is `irqlab bench --quick` (`irqlab <command> --help`).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from invoke import Context, Task, task
from invoke.exceptions import Exit

PYTEST = f"{sys.executable} -m pytest"
# Every task's commands run here, whatever directory invoke was started in (it finds
# tasks.py in a parent directory); a path the user gives stays relative to theirs.
ROOT = Path(__file__).resolve().parent


def _run(c: Context, command: str, **kw: Any) -> None:
    """*command* run in :data:`ROOT`, echoed."""
    with c.cd(str(ROOT)):
        c.run(command, echo=True, **kw)


def _pytest(c: Context, args: str) -> None:
    _run(c, f"{PYTEST} {args}", pty=False)


def cli_task(command: str) -> Task[Any]:
    """A task running ``irqlab <command>``, with that subcommand's options (booleans as flags,
    the others as strings argparse converts), each passed through when given."""
    from irqlab.cli.main import command_parser

    parser, summary = command_parser(command)
    options: dict[str, tuple[str, bool]] = {}  # parameter -> (CLI option, is a flag)
    helps: dict[str, str] = {}
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = isinstance(action, argparse._StoreTrueAction)
        options[action.dest] = (action.option_strings[-1], flag)
        # as argparse shows it: %(default)s filled in, %% as %
        helps[action.dest] = parser._get_formatter()._expand_help(action) if action.help else ""
        params.append(
            inspect.Parameter(
                action.dest, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False if flag else ""
            )
        )

    def run(c: Context, **given: Any) -> None:
        from irqlab.cli.main import main

        argv = [command]
        for name, value in given.items():
            opt, flag = options[name]
            if flag and value:
                argv.append(opt)
            elif not flag and value != "":
                argv += [opt, str(value)]
        rc = main(argv)
        if rc:
            raise SystemExit(rc)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__name__ = command.replace("-", "_")
    run.__doc__ = f"`irqlab {command}`: {summary}." + (
        f"\n\n{parser.description}" if parser.description else ""
    )
    return Task(run, help=helps, auto_shortflags=False)


build_qemu = cli_task("build-qemu")
build_image = cli_task("build-image")
probe_accel = cli_task("probe-accel")
# ``invoke bench``                      full run (10,000 events per path and placement, 10 s storms)
# ``invoke bench --quick``              minutes: small counts, 0.2 s storms
# ``invoke bench --compare OLD.json``   also print what got slower beyond noise (exit 1 if any)
# ``invoke bench --runs 3``             three fresh boots: the spread of every figure
# ``invoke bench --test-all``           also time a warm ``invoke test-all`` (long)
bench = cli_task("bench")
# ``invoke bench-peers``  labgrid vs irqlab restore vs cold boot, interleaved rounds
bench_peers = cli_task("bench-peers")
# ``invoke buildroot-build``  download the pinned Buildroot, build the image (30-60 min cold)
# ``invoke buildroot-check``  offline checks of buildroot/ against a Buildroot source tree
buildroot_build = cli_task("buildroot-build")
buildroot_check = cli_task("buildroot-check")


@task
def build(c: Context) -> None:
    """Build everything the tests need: QEMU and the guest image."""
    build_qemu(c)
    build_image(c)


@task
def lint(c: Context) -> None:
    """ruff (lint, format check) and mypy over the Python code."""
    _run(c, "ruff check harness tests tasks.py docs/examples")
    _run(c, "ruff format --check harness tests tasks.py docs/examples")
    _run(c, "mypy")


def _filters(k: str = "", m: str = "") -> str:
    """pytest's -k / -m options for the given expressions, quoted for the shell."""
    return "".join(f" {opt} {shlex.quote(v)}" for opt, v in (("-k", k), ("-m", m)) if v)


def _ci_args() -> str:
    """Under CI (``$CI`` set) pytest leaves no cache directory behind."""
    return " -p no:cacheprovider" if os.environ.get("CI") else ""


def _usage_error(message: str) -> Exit:
    """What a task raises for a bad option, before anything starts: *message* on one
    line, exit status 2 (as the irqlab command's usage errors)."""
    return Exit(f"invoke: {message}", code=2)


WORKERS_PER_CORE = 4  # -j beyond this many per usable core is refused (each is a guest)


def workers(jobs: int | str) -> int:
    """How many pytest-xdist workers ``-j`` asks for: 0 (the default) one per usable core
    (:func:`irqlab.testing.parallel.default_workers`); a usage error for what is not a
    whole number, is negative, or exceeds :data:`WORKERS_PER_CORE` per usable core."""
    from irqlab.testing.parallel import default_workers, usable_cpus

    try:
        n = int(jobs)
    except ValueError:
        raise _usage_error(f"-j {jobs!r}: not a whole number of workers") from None
    limit = WORKERS_PER_CORE * usable_cpus()
    if n < 0:
        raise _usage_error(f"-j {jobs}: must be 0 (one worker per core) or more")
    if n > limit:
        raise _usage_error(
            f"-j {jobs}: at most {limit} workers here ({WORKERS_PER_CORE} per usable core; "
            "each runs its own guests)"
        )
    return n or default_workers()


def workers_args(jobs: int | str) -> str:
    """pytest's options for *jobs* pytest-xdist workers (:func:`workers`); 1 runs without
    xdist.  ``--dist loadgroup`` keeps tests marked ``xdist_group`` on one worker."""
    n = workers(jobs)
    return f" -n {n} --dist loadgroup" if n > 1 else " -p no:xdist"


_WORKERS_HELP = (
    "pytest-xdist workers (default 0: one per core; 1: no xdist; at most "
    f"{WORKERS_PER_CORE} per core)"
)
_JOBS_HELP = (
    "pytest-xdist workers, one guest each (default 0: one per core; 1: no xdist; at most "
    f"{WORKERS_PER_CORE} per core)"
)


def junit_path(junit: str) -> Path:
    """``--junit FILE`` as an absolute path (relative to the user's directory), checked
    before anything starts: a usage error if it is a directory or no file can be written
    there (its missing directories are made, as pytest would)."""
    path = Path(junit).absolute()
    if path.is_dir():
        raise _usage_error(f"--junit {junit}: is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        why = e.strerror or e
        raise _usage_error(f"--junit {junit}: cannot write into {path.parent}: {why}") from None
    return path


@task(help={"k": "only tests matching this pytest -k expression", "jobs": _WORKERS_HELP})
def test_unit(c: Context, k: str = "", jobs: str = "0") -> None:
    """Unit tests: no QEMU, no guest (a few minutes: 2139 took 135-164 s on 2 workers).

    On -j N pytest-xdist workers (default: one per core), as the other test tasks."""
    _pytest(c, "tests/unit" + workers_args(jobs) + _filters(k))


@task(help={"k": "only tests matching this pytest -k expression", "jobs": _WORKERS_HELP})
def test_device(c: Context, k: str = "", jobs: str = "0") -> None:
    """Device tests: the real built QEMU under the qtest accelerator, no guest."""
    _pytest(c, "tests/device" + workers_args(jobs) + _filters(k))


@task(help={"k": "only tests matching this pytest -k expression", "jobs": _JOBS_HELP})
def test_e2e(c: Context, k: str = "", jobs: str = "0") -> None:
    """Build what is missing, then the end-to-end tests (a booted guest per worker).

    What is missing: QEMU with the irqlab device, the guest image."""
    args = workers_args(jobs)
    build(c)
    _pytest(c, "tests/e2e" + args + _filters(k))


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "m": "only tests matching this pytest -m marker expression (e.g. 'not e2e')",
        "junit": "also write a JUnit XML report to this file (-u: -j is --jobs); checked "
        "before anything starts",
        "jobs": _JOBS_HELP,
    }
)
def test_all(c: Context, k: str = "", m: str = "", jobs: str = "0", junit: str = "") -> None:
    """Build what is missing, then run every test: lint, unit, device, end-to-end.

    On ``-j N`` pytest-xdist workers (default: one per core); the soak tests run short
    (``invoke soak`` runs them at full length)."""
    # relative to where the user typed it, not to ROOT, where pytest runs
    junit_arg = f" --junitxml={shlex.quote(str(junit_path(junit)))}" if junit else ""
    args = workers_args(jobs)
    build(c)
    _pytest(c, "tests" + args + _filters(k, m) + junit_arg + _ci_args())


@task(help={"k": "only tests matching this pytest -k expression", "jobs": _JOBS_HELP})
def soak(c: Context, k: str = "", jobs: str = "0") -> None:
    """Build what is missing, then run the soak tier: repeated user loops at full length.

    The loops of what users repeat (copy then run, restore, unbind/bind, arm/disarm,
    unplug/replug, the long storm), hundreds of rounds each (``invoke test-all`` runs
    them short)."""
    args = workers_args(jobs)
    build(c)
    _pytest(c, "tests -m soak --soak" + args + _filters(k) + _ci_args())


@task
def clean(c: Context) -> None:
    """Remove this checkout's logs (build/logs); the build cache stays.

    The cache evicts old outputs itself (IRQLAB_CACHE_KEEP; snapshots
    IRQLAB_SNAPSHOT_KEEP); `irqlab cache` lists it, `irqlab cache --prune N --dry-run`
    shows what `--prune N` would remove: never a build output this checkout or a
    running guest uses (then the QEMU trees and .debs nothing left needs), but
    snapshots count like any other group (N per architecture),
    and the suite restores about 30 configurations, so a small N makes its next run
    cold-boot the others."""
    _run(c, "rm -rf build/logs")
