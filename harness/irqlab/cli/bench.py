"""The ``bench`` subcommand: ``add_bench_parser(subparsers)`` + ``cmd_bench(args)``.

``irqlab bench [--quick] [--runs N] [--compare OLD.json] ...`` boots the guest,
measures, writes ``build/bench/<stamp>/{result.json,report.txt,report.html,*.png}``
(``<cache>/bench/<stamp>`` for an installed wheel) and prints the text report (and the
comparison).  ``irqlab bench --report R.json`` only re-renders an existing result;
``--compare`` with ``--report`` compares two results without booting anything.  Exit
status: 0, or 1 if the bench had errors, a series' checks failed (one line each on
stderr), the result is incomplete (``--report`` of an interrupted bench's: one line on
stderr naming what was not measured) or ``--compare`` found figures worse beyond noise
(``--no-fail-on-worse`` keeps 0).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from irqlab.cli.argtypes import UsageError, count, finite, non_negative, positive

__all__ = [
    "DESCRIPTION",
    "MEASURING",
    "PATHS_HELP",
    "QUICK_HELP",
    "STAGES_HELP",
    "add_bench_arguments",
    "add_bench_parser",
    "check_measures",
    "check_out_dir",
    "check_report_out",
    "cmd_bench",
    "config_from_args",
    "load_given_result",
    "out_path",
]


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _ints(s: str) -> tuple[int, ...]:
    """A comma list of whole numbers >= 1, written as integers or as floats (``1e3``);
    ``inf`` or ``1.9`` is a usage error (inf was an OverflowError's traceback)."""
    try:
        floats = [finite(x) for x in _csv(s)]
    except argparse.ArgumentTypeError:
        floats = []
    if not floats or min(floats) < 1 or any(x != int(x) for x in floats):
        raise argparse.ArgumentTypeError(f"{s!r}: expected a comma list of positive numbers")
    return tuple(int(x) for x in floats)


def _names(what: str, known: Callable[[], Sequence[str]]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma list of *what* (names that *known()* lists, asked only
    when the option is given: the bench's modules load then), else a usage error
    naming the unknown ones and the known ones."""

    def parse(s: str) -> tuple[str, ...]:
        names, allowed = _csv(s), known()
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            bad = f"unknown {what} {', '.join(map(repr, unknown))}" if unknown else f"no {what}"
            raise argparse.ArgumentTypeError(f"{bad}; known: {', '.join(allowed)}")
        twice = sorted({n for n in names if names.count(n) > 1}, key=names.index)
        if twice:
            raise argparse.ArgumentTypeError(f"{what} named twice: {', '.join(map(repr, twice))}")
        return names

    return parse


def out_path(s: str) -> Path:
    """An argparse type: ``--out DIR``, not empty (``--out ''`` was the current
    directory)."""
    if not s.strip():
        raise argparse.ArgumentTypeError("an empty path: give a directory")
    return Path(s)


def check_out_dir(out: Path | None) -> None:
    """A usage error unless ``--out`` *out* can take a new result: not a file, no
    ``result.json`` of an earlier run in it (bench and bench-peers)."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is not a directory")
    if (out / "result.json").exists():
        raise UsageError(
            f"--out {out}: holds a result.json already (an earlier bench's); "
            "give another directory or remove it"
        )


def _period_us(s: str) -> float:
    """A latency series' period in µs: within the burst periods the device's generator
    takes (``IRQLAB_MIN_BURST_PERIOD_NS`` to ``IRQLAB_MAX_BURST_PERIOD_NS``; the device
    refused another once the bench had booted)."""
    from irqlab.contract.regs import REGS

    us = positive(s)
    if round(us * 1000) < REGS.MIN_BURST_PERIOD_NS:
        raise argparse.ArgumentTypeError(
            f"{s!r}: below the device's shortest burst period, "
            f"{REGS.MIN_BURST_PERIOD_NS / 1000:.15g} µs"
        )
    if round(us * 1000) > REGS.MAX_BURST_PERIOD_NS:
        raise argparse.ArgumentTypeError(
            f"{s!r}: above the device's longest burst period, "
            f"{REGS.MAX_BURST_PERIOD_NS / 1000:.15g} µs"
        )
    return us


def _paths() -> Sequence[str]:
    from irqlab.bench.runner import WANTED_PATHS

    return WANTED_PATHS


def _storm_paths() -> Sequence[str]:
    from irqlab.bench.runner import NO_STORM, WANTED_PATHS

    return [p for p in WANTED_PATHS if p not in NO_STORM]


def _placements() -> Sequence[str]:
    from irqlab.bench.runner import PLACEMENTS

    return PLACEMENTS


def _stages() -> Sequence[str]:
    from irqlab.bench.runner import STAGES

    return STAGES


# the help's list (a unit test checks it is irqlab.bench.runner.STAGES)
STAGES_HELP = "latency,native,wakeup,storm,injection,boot,cyclictest"
# the help's lists (unit tests check them against irqlab.bench.runner: its modules load
# only when the bench runs)
PATHS_HELP = (
    "read, nonblock, poll, select, epoll-lt, epoll-et, sigio, setsig, count, eventfd, "
    "gpio-cdev, uio, uio-generic"
)
QUICK_HELP = (
    "--events 300 --storm-seconds 0.2 --injections 500 (no 5 s minimum) --boots 2 "
    "--cyclictest-loops 1000 --native-rounds 2"
)


DESCRIPTION = """\
Boots the guest and measures the latency from the device raising an interrupt to
userspace acknowledging it on every notification path (for each wakeup placement of
the driver), interrupt storms at rising rates, QMP injection speed, boot and restore
times and cyclictest.  Writes result.json, report.txt, report.html and plots into
--out (default: build/bench/<stamp> in a checkout, else <cache>/bench/<stamp>, the
build cache's: $IRQLAB_CACHE_DIR or ~/.cache/irqlab) and prints the text report.
--quick takes minutes, a full run much longer.  Every path is also measured through
the native responder (C: the kernel's part without Python), at wakeup=hardirq only.

--report RESULT.json re-renders an earlier result without booting anything;
--compare OLD.json also prints the figures worse beyond noise (with --report it
compares the two results, again without booting).  The report warns of a loaded
machine (a 1-min load average above 0.5 per core at the start or end of the bench or
a run: the figures are then mostly queueing), --compare of two results whose loads
per core differ by more than 0.5.

Exit status: 0; 1 if the bench had errors, if the checks of a latency series or
storm failed (events missing, out of order, lost, the device histogram disagreeing:
the report's "checks" columns; one line per series on stderr), if the result is
INCOMPLETE (--report of an interrupted bench's partial result: rendered all the same,
what was not measured listed in the report and in one line on stderr; the bench
itself, stopped by a signal, exits 128 + its number), or if --compare found
figures worse beyond noise (--no-fail-on-worse keeps 0), or if another bench runs
on this machine (refused before booting, naming its pid: two benches disturb each
other's figures); 2 for a usage error, among them an --out that holds a result.json
or a report already, a --report or --compare that names no bench result (or one this
irqlab cannot read: edited, or another version's), and a --report whose report would
overwrite another result's: its --out (default: the result's directory) holds another
result.json or a report rendered from another result (report.txt's last line names
the result it renders); the same result's report is rewritten.
"""


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    s: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure latency per path, storms, QMP and boot speed; JSON + HTML report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(s)
    s.set_defaults(func=cmd_bench)
    return s


def add_bench_arguments(s: argparse.ArgumentParser) -> None:
    quick = f"small counts, minutes, not the full run: {QUICK_HELP} (options given win)"
    s.add_argument("--quick", action="store_true", help=quick)
    runs = "fresh boots measuring everything (spread); default 1"
    s.add_argument("--runs", type=count(1), help=runs)
    s.add_argument("--events", type=count(1), help="latency events per path (full 10000)")
    rounds = (
        "native series of the driver's default-mode paths in N interleaved rounds, each "
        "path its share of --events per round, so that a slow spell of the host meets "
        "every path alike (default 5; 1: one path after another)"
    )
    s.add_argument("--native-rounds", type=count(1), help=rounds)
    period = "latency series period, µs (default 3000; at least the device's minimum)"
    s.add_argument("--period-us", type=_period_us, help=period)
    s.add_argument(
        "--paths",
        type=_names("path", _paths),
        help=f"comma list of agent paths (default: all): {PATHS_HELP}",
    )
    s.add_argument(
        "--placements",
        type=_names("placement", _placements),
        help="wakeup placements of the agent's series (hardirq,thread,workqueue); the native "
        "responder runs at hardirq only",
    )
    wakeup_runs = "measure the non-default placements in the first N runs only (default: every run)"
    s.add_argument("--wakeup-runs", type=count(0), help=wakeup_runs)
    s.add_argument("--storm-rates", type=_ints, help="events/s (default 1000,10000,50000,100000)")
    s.add_argument("--storm-seconds", type=positive, help="storm length per rate (full 10)")
    s.add_argument(
        "--storm-paths",
        type=_names("path", _storm_paths),
        help="paths stormed (default: as --paths); a path not in --paths is stormed in the "
        "standard set-up, but uio and uio-generic need their own and must be in --paths "
        "too (else a usage error)",
    )
    acks = "record paths' ACK in storms: an ioctl per event, one write(2) per read (default)"
    s.add_argument("--storm-ack", choices=("ioctl", "write", "none"), help=acks + ", none")
    ring = "driver ring_size (records per open file) in storms (default 4096; 0: the module's)"
    s.add_argument("--storm-ring-size", type=count(0), help=ring)
    s.add_argument("--injections", type=count(1), help="QMP injections (full 5000, >= 5 s)")
    s.add_argument("--boots", type=count(0), help="extra boots of the standard image (full 5)")
    loops = "cyclictest cycles of 1 ms (full 10000)"
    s.add_argument("--cyclictest-loops", type=count(1), help=loops)
    s.add_argument("--no-rt-tests", action="store_true", help="no cyclictest (image without it)")
    s.add_argument(
        "--skip",
        type=_names("stage", _stages),
        default=(),
        help=f"stages to skip: {STAGES_HELP} (not all of them: nothing would be measured, "
        "unless --test-all)",
    )
    s.add_argument(
        "--test-all",
        action="store_true",
        help="also time `invoke test-all` (long; only in a source checkout)",
    )
    s.add_argument(
        "--out",
        type=out_path,
        help="output directory (default build/bench/<stamp> in a checkout, else "
        "<cache>/bench/<stamp>; with --report: where the "
        "report goes, default beside RESULT.json; refused if it holds another result's "
        "report or result.json)",
    )
    s.add_argument("--compare", type=Path, metavar="OLD.json", help="compare with an old result")
    floor = (
        "compare: the smallest relative change counted as worse, beyond each figure's own "
        "noise (default 0.10: 10 %%)"
    )
    s.add_argument("--noise-floor", type=non_negative, default=0.10, help=floor)
    s.add_argument("--report", type=Path, metavar="RESULT.json", help="re-render; do not measure")
    s.add_argument("--no-fail-on-worse", action="store_true", help="exit 0 even if worse")


# what configures a measurement (passed to BenchConfig as given), and the options that
# measure besides them: --report measures nothing, so none of them applies to it
CONFIG_OPTIONS = ("runs", "wakeup_runs", "events", "paths", "placements", "storm_rates",
                  "storm_seconds", "storm_paths", "storm_ack", "storm_ring_size", "injections",
                  "boots", "cyclictest_loops", "native_rounds")  # fmt: skip
MEASURING = (*CONFIG_OPTIONS, "quick", "period_us", "no_rt_tests", "skip", "test_all")


def _measuring_given(args: argparse.Namespace) -> list[str]:
    """The measuring options given (as typed: ``--events``), in the parser's order."""
    return [
        "--" + name.replace("_", "-")
        for name in MEASURING
        if (v := getattr(args, name, None)) is not None and v is not False and v != ()
    ]


def config_from_args(args: argparse.Namespace) -> Any:
    from irqlab.bench.runner import BenchConfig

    kw: dict[str, Any] = {}
    for name in CONFIG_OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if args.period_us is not None:
        kw["period_ns"] = round(args.period_us * 1000)
    if args.no_rt_tests:
        kw["rt_tests"] = False
    kw["skip"] = tuple(args.skip or ())
    kw["test_all"] = bool(args.test_all)
    kw["out_dir"] = args.out
    if args.quick:
        return BenchConfig.quick_config(**kw)
    return BenchConfig(**kw)


def load_given_result(path: Path, option: str) -> dict[str, Any]:
    """The bench result *path* that *option* (``--report``, ``--compare``) names, else
    a usage error naming the option ("No such file or directory: /x.json" named none).
    Its contents are read through as the report and compare will (a result of the
    right schema with a part missing or of another shape: edited, or another version's
    was a traceback, with ``--compare`` after the whole bench had run)."""
    from irqlab.bench import compare, report
    from irqlab.cli.guestcmd import not_a_file

    problem = not_a_file(path, "a file")
    if problem:
        raise UsageError(f"{option} {path}: {problem}")
    try:
        result = report.load_result(path)
    except report.NotABenchResult as e:
        raise UsageError(f"{option} {e}") from None
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot be read: {e.strerror or e}") from None
    try:
        report.render_text(result)
        compare.compare(result, result)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        where = traceback.extract_tb(e.__traceback__)[-1].name
        raise UsageError(
            f"{option} {path}: a bench result that this irqlab cannot read (edited, or "
            f"written by another version): {type(e).__name__}: {e} (in {where})"
        ) from None
    return result


def check_report_out(result_path: Path, out: Path | None) -> None:
    """A usage error naming the file unless ``--report`` *result_path*'s report may
    be written into ``--out`` *out* (default: beside the result): a directory of another
    result (its ``result.json``) or holding another result's report was overwritten
    without a word (:func:`irqlab.bench.report.check_report_dir`); the same result's
    report is rewritten."""
    from irqlab.bench import report

    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is not a directory")
    try:
        report.check_report_dir(result_path, out if out is not None else result_path.parent)
    except report.ReportInTheWay as e:
        where = f"--out {out}" if out is not None else f"--report {result_path}"
        hint = "give another --out or remove it" if out is not None else "give --out DIR"
        raise UsageError(f"{where}: {e}; {hint}") from None


def check_measures(args: argparse.Namespace) -> None:
    """A usage error for a bench that would measure nothing (every stage in --skip, no
    --test-all: it built and booted all the same) or storm a path it cannot: uio and
    uio-generic are stormed in their own set-up (module reloaded, a second guest),
    which only their latency series makes, so they must be in --paths too (they were
    skipped without a word, while a path of the standard set-up not in --paths, such
    as poll, is stormed)."""
    from irqlab.bench.runner import MODULE_MODES, OTHER_DRIVER, STAGES

    if set(STAGES) <= set(args.skip or ()) and not args.test_all:
        raise UsageError(
            f"--skip {','.join(args.skip)}: every stage is skipped, nothing to measure"
        )
    apart = [
        p
        for p in args.storm_paths or ()
        if (p in MODULE_MODES or p in OTHER_DRIVER) and args.paths and p not in args.paths
    ]
    if apart:
        raise UsageError(
            f"--storm-paths {','.join(args.storm_paths)}: {' and '.join(apart)} "
            f"{'is' if len(apart) == 1 else 'are'} stormed only in the set-up of "
            f"{'its' if len(apart) == 1 else 'their'} latency series: add "
            f"{'it' if len(apart) == 1 else 'them'} to --paths too"
        )


def cmd_bench(args: argparse.Namespace) -> int:
    from irqlab.bench import compare, queueing, report

    status = 0
    # every result given is checked before anything boots or is written
    old = load_given_result(args.compare, "--compare") if args.compare is not None else None
    if args.report is not None:
        if given := _measuring_given(args):
            raise UsageError(
                f"--report re-renders a result and measures nothing: {', '.join(given)} "
                f"{'does' if len(given) == 1 else 'do'} not apply to it"
            )
        result_path = Path(args.report)
        load_given_result(result_path, "--report")
        check_report_out(result_path, args.out)
    else:
        from irqlab.bench.runner import run_bench
        from irqlab.vm.guest import PrerequisiteMissing

        check_out_dir(args.out)
        if args.out is not None and (there := report.report_files(args.out)):
            raise UsageError(
                f"--out {args.out}: holds {there[0].name} already (an earlier report's, "
                "which this bench's would overwrite); give another directory or remove it"
            )
        check_measures(args)
        from irqlab.cli.guestcmd import check_env_kmod

        check_env_kmod()  # a usage error naming the variable, before the bench begins
        if args.test_all:
            from irqlab.bench.host import NO_CHECKOUT
            from irqlab.paths import checkout_root

            if checkout_root() is None:
                raise UsageError(f"--test-all: {NO_CHECKOUT}")
        try:
            result_path = run_bench(config_from_args(args))
        except PrerequisiteMissing as e:
            print(f"irqlab bench: {e}", file=sys.stderr)
            return 1
    # --report with --out: the report goes there (it was written beside the result,
    # over an earlier report, --out ignored); never over another result's
    # (check_report_out)
    written = report.write_all(result_path, args.out if args.report is not None else None)
    sys.stdout.write(written["text"].read_text())
    print(f"\nresult: {result_path}\nreport: {written['html']}")
    new = report.load_result(result_path)
    if new.get("errors"):
        status = 1
    if report.incomplete(new):  # a partial result (--report): it was green
        stop = new.get("interrupted")
        why = f"interrupted: {stop}" if stop else "interrupted, or still running"
        lack = "; ".join(report.missing_parts(new)) or "nothing the configuration names"
        print(
            f"irqlab bench: {result_path}: INCOMPLETE ({why}): not measured: {lack}",
            file=sys.stderr,
        )
        status = 1
    if failed := queueing.failed_checks(new):
        for label, problems in failed:
            print(f"irqlab bench: checks failed: {label}: {problems}", file=sys.stderr)
        status = 1
    if old is not None:
        text, worse = compare.render(old, new, floor=args.noise_floor)
        print()
        sys.stdout.write(text)
        if worse and not args.no_fail_on_worse:
            status = 1
    return status
