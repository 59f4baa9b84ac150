"""pytest fixtures for irqlab (loaded through the ``pytest11`` entry point).

Every fixture is ``irqlab_``-prefixed and documented (``pytest --fixtures``); all
behaviour lives in the library, the fixtures only wire it together.

Options (each falls back to its environment variable, then the default):
``--irqlab-accel kvm|tcg|auto`` ($IRQLAB_ACCEL), ``--irqlab-image debian|buildroot``
($IRQLAB_IMAGE), ``--irqlab-log-dir DIR`` ($IRQLAB_LOG_DIR, then the ini option
``irqlab_log_dir`` relative to the rootdir; default ``<rootdir>/.irqlab/logs``, one
``pytest-<stamp>-<pid>`` directory per run, the newest ten kept and ten more that did
not pass; ``latest`` links to the newest).

Device level (a QEMU under the qtest accelerator, no guest):
``irqlab_qemu``, ``irqlab_accel``, ``irqlab_qtest_factory``, ``irqlab_qtest_machine``,
``irqlab_qtest_injector``.  The last injects into *that* qtest QEMU, never into a
booted guest: a guest's device is ``irqlab_device`` / ``irqlab_fresh_device``.

Booted guest (end to end): ``irqlab_guest`` (session), ``irqlab_agent``,
``irqlab_device``, ``irqlab_wait_stats`` (before each test that has the session guest
among its fixtures, the autouse ``irqlab_guest_alive`` replaces one an earlier test
killed, and resets it for a test that takes it); ``irqlab_fresh_guest``,
``irqlab_fresh_agent`` and ``irqlab_fresh_device`` for a guest of the test's own (a
test uses one guest: mixing the two kinds, or the marker with the shared guest's
fixtures or with none, is an error), configured by ``@pytest.mark.irqlab(...)``: its
keywords and their defaults
are :data:`MARKER_DEFAULTS` (``pytest --markers`` lists them; the README says what
each does).  Relative KO and FILE paths are relative to the test file's directory; a
``modules=`` entry may carry parameters, ``"KO PARAM=VALUE ..."``.

When a test that started machines fails, the report gets a section naming their logs;
for the shared guest, the test's own part of the console log and of the agent's streams
is copied into the test's log directory and named in the report.  A guest the test
builds itself (``Guest(GuestConfig(...))``, no log directory named) logs into the
test's log directory (:mod:`irqlab.vm.logplace`), and its failure report names it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

import pytest

from irqlab import notice, paths
from irqlab.build import arch as arches
from irqlab.build.imagekind import IMAGE_ENV, IMAGE_KINDS
from irqlab.contract.regs import QOM, REGS
from irqlab.errors import IrqlabError
from irqlab.sigsafe import SafeRaise, clear_caught_interrupt
from irqlab.teardown_watch import TeardownWatch
from irqlab.testing.diagnostics import GuestDiagnostics, built_guest_report
from irqlab.testing.helpers import hide_test_frame
from irqlab.testing.logslice import LogSlicer
from irqlab.testing.parallel import DEFAULT_DIR, forward_interrupt
from irqlab.vm import accel, logplace
from irqlab.vm.machine import Machine, MachineConfig
from irqlab.vm.qmp.injector import DEVICE_ID, DEVICE_TYPE, Injector

if TYPE_CHECKING:
    from types import FrameType

    from irqlab.build.qemu import QemuInstall
    from irqlab.testing.helpers import DeviceControl
    from irqlab.vm.agent_client import AgentClient
    from irqlab.vm.guest import Guest, GuestConfig
    from irqlab.vm.kernlog import KernelProblems

_MACHINES = pytest.StashKey[list[Machine]]()
_GUEST_LOGS = pytest.StashKey[tuple[LogSlicer, Path]]()
_DIAGNOSTICS = pytest.StashKey[list[tuple[GuestDiagnostics, Path]]]()
_CALL_FAILED = pytest.StashKey[bool]()  # the test's own call failed (set by makereport)
_CALL_PASSED = pytest.StashKey[bool]()  # the test's own call passed (set by makereport)
# the marker on a test that names no guest fixture: checked once it ran (it may take
# one through request.getfixturevalue)
_MARKER_UNCLAIMED = pytest.StashKey[bool]()
# the test took the session guest through request.getfixturevalue (_taken_at_run_time)
_TAKEN = pytest.StashKey[bool]()
# the guest fixtures of function scope set up for the test (pytest_fixture_setup)
_GUEST_FIXTURES_TAKEN = pytest.StashKey[set[str]]()
_MORE_LOGS = pytest.StashKey[list[Path]]()  # more of a test's logs (a kernel log check's)
_DIAGNOSED = pytest.StashKey[bool]()  # a failure of the test's reported its diagnostics
# guests the test built itself (their configuration named no log directory: placed in
# the test's directory by _placer), for its failure report
_BUILT = pytest.StashKey[list["Guest"]]()
FRESH_DIR = "fresh"  # a test's own guest's diagnostics, in the test's log directory
# the session guest's replacements so far, each said as a line with the test file it
# came in ("" outside one), and the last test to take the session guest (its node id):
# which test a death came after
_REVIVALS = pytest.StashKey[list[tuple[str, str]]]()
_LAST_USER = pytest.StashKey[str]()
# each test's start on the session guest: (its QEMU's Machine: a replacement's clock
# starts again, the guest's clock in s from the agent's heartbeats, the test's node
# id), for the session's kernel-log check to say which test a report came during
_TIMELINE = pytest.StashKey[list[tuple[object, float, str]]]()
_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]")
_USER_BEFORE = pytest.StashKey[str]()  # the one before the last (this test's setup: the last)
# the last test the session guest was reset for without error (its node id; gone when
# the guest is replaced): what a later reset cannot undo, it or a test before it left
_RESET_FOR = pytest.StashKey[str]()
# the session guest replaced one that could not be reset, and has not been reset since
_NEW_FOR_UNRESETTABLE = pytest.StashKey[bool]()
# the session guest (once its fixture has it: ours, or a conftest's that overrides it;
# _hold_session_guest), and the wider-scoped fixtures that took it
# with their requests (set up again after a replacement: _renew_after_replacement)
_SESSION_GUEST = pytest.StashKey["Guest"]()
_GuestFixture = tuple[pytest.FixtureDef[Any], pytest.FixtureRequest]
_GUEST_FIXTURES = pytest.StashKey[list[_GuestFixture]]()
# the renewal pending: those of them that took a session guest since replaced (moved
# here by revive() once the replacement's restart returned, whichever hook or fixture
# replaced it), torn down before the next test that takes the session guest
_STALE_FIXTURES = pytest.StashKey[list[_GuestFixture]]()
# what each replaced session guest's console reported as bugs before it died: (which
# guest, its problems), for the session's end kernel log check
_REPLACED_PROBLEMS = pytest.StashKey[list[tuple[str, "KernelProblems"]]]()
# the run directories whose console was read for it (each once: a replacement whose
# restart failed left the guest's run directory the replaced one's, read already)
_CONSOLES_READ = pytest.StashKey[set[Path]]()
QTEST_DEVICE = f"{DEVICE_TYPE},id={DEVICE_ID}"  # the qtest machines' device, as a guest's


class QtestMachineFactory(Protocol):
    def __call__(
        self,
        device: str = QTEST_DEVICE,
        *,
        extra_args: Sequence[str] = (),
        machine: str = "q35",
        memory: str = "128M",
    ) -> Machine: ...


_OPTIONS = (  # (option, environment variable, help)
    (
        "--irqlab-accel",
        accel.ENV_VAR,
        f"accelerator: {', '.join(accel.CHOICES[:-1])} or {accel.CHOICES[-1]} (probe; default)",
    ),
    ("--irqlab-image", IMAGE_ENV, "guest image: debian (default) or buildroot"),
    (
        "--irqlab-arch",
        arches.ARCH_ENV,
        f"guest architecture: {' or '.join(arches.ARCHES)} (default {arches.DEFAULT.name}; "
        "amd64 and arm64 are taken too)",
    ),
    (
        "--irqlab-log-dir",
        "IRQLAB_LOG_DIR",
        "where irqlab's logs go (default: <rootdir>/.irqlab/logs, a directory per run)",
    ),
)


CHECK_KERNEL_LOG_INI = "irqlab_check_kernel_log"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irqlab", "irqlab (QEMU interrupt test harness)")
    for option, env, text in _OPTIONS:
        group.addoption(option, default=None, help=f"{text}; falls back to ${env}")
    parser.addini(
        CHECK_KERNEL_LOG_INI,
        "check the session guest's kernel log at the session's end: a WARN, BUG, oops "
        "or an unexpected taint is an error (default true)",
        type="bool",
        default=True,
    )
    parser.addini(
        "irqlab_log_dir",
        "irqlab's log directory, relative to the rootdir (after --irqlab-log-dir and "
        "$IRQLAB_LOG_DIR; default .irqlab/logs)",
        default="",
    )


def _choices(env: str) -> tuple[str, ...] | None:
    """The values the option of *env* may take (the library's lists), None: any."""
    if env == accel.ENV_VAR:
        return accel.CHOICES
    if env == IMAGE_ENV:
        return IMAGE_KINDS
    if env == arches.ARCH_ENV:
        return tuple(arches.ARCHES)
    return None


def _as_read(env: str, value: str) -> str:
    """*value* of *env* as the library reads it (case, an architecture's other name)."""
    if env == accel.ENV_VAR:
        return value.strip().lower()
    if env == arches.ARCH_ENV:
        with contextlib.suppress(ValueError):
            return arches.by_name(value).name
    return value


def check_options(config: pytest.Config) -> None:
    """A value no test could use (``--irqlab-accel bogus``, or its environment variable
    when the option is not given; a bad $IRQLAB_CACHE_KEEP or $IRQLAB_SNAPSHOT_KEEP) is a
    usage error at startup, naming the option or the variable."""
    for option, env, _ in _OPTIONS:
        given = config.getoption(option)
        value = given or os.environ.get(env, "")
        choices = _choices(env) if value else None
        if choices is None or _as_read(env, value) in choices:
            continue
        where = f"{option} {value!r}" if given else f"${env}={value!r} (no {option} given)"
        raise pytest.UsageError(f"{where}: use one of {', '.join(choices)}")
    from irqlab.build.cache import CacheKeepError, check_keep_env

    try:  # read only once a build or a snapshot's save runs: a bad one went unsaid
        check_keep_env()
    except CacheKeepError as e:
        raise pytest.UsageError(str(e)) from None


def apply_options(config: pytest.Config) -> None:
    """The options win over their environment variables (which the library and the
    processes it starts read); with no log directory configured at all, logs go under
    pytest's rootdir instead of the installed package's directory."""
    for option, env, _ in _OPTIONS:
        value = config.getoption(option)
        if value:
            if env == "IRQLAB_LOG_DIR":
                value = str(Path(value).expanduser().resolve())
            if env == accel.ENV_VAR:  # "kvm forced by --irqlab-accel kvm", not by $...
                os.environ[accel.SOURCE_ENV] = f"{option} {value}"
            os.environ[env] = value
    given = os.environ.get("IRQLAB_LOG_DIR")
    if given:  # made absolute: a test that changes directory keeps the run's
        os.environ["IRQLAB_LOG_DIR"] = str(Path(given).expanduser().resolve())
    else:
        ini = str(config.getini("irqlab_log_dir") or f"{DEFAULT_DIR}/logs")
        os.environ["IRQLAB_LOG_DIR"] = str((Path(config.rootpath) / ini).resolve())


@pytest.fixture(scope="session")
def irqlab_log_dir(request: pytest.FixtureRequest) -> Path:
    """This run's log directory (``<log dir>/pytest-<stamp>-<pid>``, and ``<worker id>/``
    below it in a pytest-xdist worker; the log dir is ``--irqlab-log-dir``,
    $IRQLAB_LOG_DIR or ``<rootdir>/.irqlab/logs``); older runs beyond the newest ten
    are removed, but for the newest ten that did not pass
    (:func:`irqlab.paths.prune_logs`)."""
    from irqlab.testing.parallel import run_log_dir
    from irqlab.vm.machine import LogDirError

    try:
        return run_log_dir(request.config)
    except LogDirError as e:
        why = str(e)
    pytest.fail(why, pytrace=False)  # what to change, not the plugin's frames


@pytest.fixture(scope="session")
def irqlab_qemu() -> QemuInstall:
    """The QEMU build with the irqlab device (:func:`irqlab.build.qemu.ensure_qemu`,
    built on first use); a failed build fails the tests with its log's path."""
    from irqlab.build.qemu import BuildError, ensure_qemu

    try:
        return ensure_qemu(log=lambda msg: print(f"[irqlab build] {msg}"))
    except BuildError as e:
        pytest.fail(f"building QEMU failed: {e}", pytrace=False)


@pytest.fixture(scope="session")
def irqlab_accel(irqlab_qemu: QemuInstall) -> accel.AccelChoice:
    """The accelerator guests use here (``--irqlab-accel``/$IRQLAB_ACCEL, else the
    probe: KVM only where it really runs a guest) and why."""
    return accel.choose(irqlab_qemu.binary, datadir=irqlab_qemu.datadir)


def _test_log_root(request: pytest.FixtureRequest, base: Path) -> Path:
    return _node_log_root(request.node, base)


def _node_log_root(node: pytest.Item, base: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.nodeid)[-120:]
    return base / name


_RUNNING: list[pytest.Item] = []  # the test being run, for its guests' logs (_placer)
# the scopes of the fixtures being set up, innermost last (pytest_fixture_setup): a
# guest a module's or the session's fixture builds is no single test's
_SETTING_UP: list[str] = []


def _placer(config: pytest.Config) -> logplace.Placer:
    """Where a guest whose configuration names no log directory logs
    (:mod:`irqlab.vm.logplace`): built while a test runs (the test itself, a
    function-scoped fixture, a thread of its), in the test's log directory, and the
    test's failure report names it; else (a wider-scoped fixture's, between tests) in
    the run's directory.  Beside the run's other logs, never in the log directory's
    root (where another run's pruning removes what carries irqlab's stamp)."""
    from irqlab.testing.parallel import run_log_dir

    def place(guest: Guest) -> Path:
        if not _RUNNING or any(scope != "function" for scope in _SETTING_UP):
            return run_log_dir(config)
        item = _RUNNING[-1]
        built = item.stash.setdefault(_BUILT, [])
        if not any(g is guest for g in built):  # a restart places it again
            built.append(guest)
        return _node_log_root(item, run_log_dir(item.config))

    return place


# the test a Ctrl-C or SIGTERM stopped, with the library's notes of what it was doing
_INTERRUPTED: list[tuple[pytest.Item, list[str]]] = []
# the run was stopped by Ctrl-C or SIGTERM: the session guest's end-of-run check is
# skipped (a kmemleak scan of minutes, and a report pytest's interrupted exit crashed on)
_RUN_INTERRUPTED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _RUNNING.append(item)
    try:
        return (yield)
    except KeyboardInterrupt as e:
        _INTERRUPTED[:] = [(item, _interrupted_notes(e))]
        item.config.stash[_RUN_INTERRUPTED] = True
        raise
    finally:
        _RUNNING.pop()


def _interrupted_notes(e: BaseException) -> list[str]:
    """What the library noted on the interrupt: the guest command running, the agent's
    message waited for (``interrupted ...``)."""
    return [n for n in getattr(e, "__notes__", ()) if n.startswith("interrupted ")]


def interrupted_line(item: pytest.Item, notes: Sequence[str] = ()) -> str:
    """What a stopped run says of the test it stopped: its id and its log directory
    (pytest's own summary names only the signal handler's line), then what it was
    doing in the guest when the library knows (*notes*)."""
    from irqlab.testing.parallel import run_log_dir

    try:
        logs = _node_log_root(item, run_log_dir(item.config))
    except Exception as e:  # the line, whatever the log directory's state
        where = f"its log directory unknown ({e})"
    else:
        where = (
            f"its logs: {logs}"
            if logs.exists()
            else f"no logs of its own; the run's: {logs.parent}"
        )
    doing = "".join(f"; {n}" for n in notes)
    return f"irqlab: the run was interrupted during {item.nodeid} ({where}){doing}"


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    if _INTERRUPTED:
        item, notes = _INTERRUPTED.pop()
        _terminal_sink(item.config)(interrupted_line(item, notes))


@pytest.fixture
def irqlab_qtest_factory(
    request: pytest.FixtureRequest, irqlab_qemu: QemuInstall, irqlab_log_dir: Path
) -> Generator[QtestMachineFactory, None, None]:
    """``factory(device="irqlab,id=irqlab0", *, extra_args=(), machine="q35",
    memory="128M")`` starts a device-level QEMU (``-accel qtest``, no guest: the test
    drives MMIO and sees interrupt lines through qtest); all are stopped at teardown."""
    started: list[Machine] = []
    # the test's machines for its failure report: a fresh guest's too (this list
    # replaced the one a fresh guest set up before this fixture had put its QEMU in)
    listed = request.node.stash.setdefault(_MACHINES, [])
    log_root = _test_log_root(request, irqlab_log_dir)

    def start(
        device: str = QTEST_DEVICE,
        *,
        extra_args: Sequence[str] = (),
        machine: str = "q35",
        memory: str = "128M",
    ) -> Machine:
        args = ["-machine", machine, "-m", memory]
        if device:
            args += ["-device", device]
        cfg = MachineConfig(
            binary=irqlab_qemu.binary,
            datadir=irqlab_qemu.datadir,
            args=[*args, *extra_args],
            qtest=True,
            console=False,
            name=f"qtest{len(started)}",
            log_root=log_root,
        )
        m = Machine(cfg)
        started.append(m)
        listed.append(m)
        return m.start()

    try:
        yield start
    finally:
        errors = []
        for m in reversed(started):
            try:
                m.close()
            except Exception as e:  # close them all, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def irqlab_qtest_machine(irqlab_qtest_factory: QtestMachineFactory) -> Machine:
    """One device-level QEMU (qtest, no guest) with ``-device irqlab,id=irqlab0`` (the
    id guests have too: :data:`irqlab.vm.qmp.injector.DEVICE_ID`)."""
    return irqlab_qtest_factory()


@pytest.fixture
def irqlab_qtest_injector(irqlab_qtest_machine: Machine) -> Injector:
    """The injector of :func:`irqlab_qtest_machine`'s device: QMP to a qtest QEMU with
    no guest.  To inject into a booted guest use ``irqlab_device`` (or
    ``irqlab_fresh_device``) instead."""
    return Injector(irqlab_qtest_machine)


def start_guest(config: GuestConfig | None = None, *, configured_by: str = "") -> Guest:
    """Boot a guest for tests (the caller closes it); a missing prerequisite (QEMU build,
    image, module) fails the test with its name, never a skip; a module that fails to
    load or a guest that dies while it starts fails it with the cause alone (no
    traceback; :meth:`Guest.start` raises them, for a test that expects one).  Called during a test,
    the guest logs into that test's directory of the run's logs (unless *config* names
    a log directory).  *configured_by*: what made *config* (a test's marker, as written),
    the lead of a configuration error its start finds (a module parameter its driver
    does not take), as of the errors found before it."""
    from irqlab.vm.guest import (
        Guest,
        GuestConfig,
        GuestConfigError,
        GuestError,
        ModuleLoadError,
        PrerequisiteMissing,
        UnusableModule,
    )
    from irqlab.vm.health import GuestFault
    from irqlab.vm.machine import QemuExited

    config = config or GuestConfig(name="e2e")
    g = Guest(config)  # no log directory named: the test's (_placer)
    try:
        g.start()  # stops whatever it started when it fails
    except UnusableModule as e:  # the user's module: a mistake of theirs, not a missing build
        why = f"the guest {config.name!r} cannot load a module it was given: {e}"
    except (PrerequisiteMissing, paths.CacheDirError) as e:
        why = f"end-to-end prerequisite missing: {e}"
    except GuestConfigError as e:  # e.g. module={"nosuch": 1}, before anything booted
        lead = configured_by or "the guest's configuration cannot work"
        why = f"{lead}: {e}"
    except QemuExited as e:  # QEMU refused its command line: its own words first
        why = (
            f"QEMU refused to start the guest {config.name!r}:\n{e.said}\n"
            f"(exit status {e.status}; {e.logs})"
        )
    except (ModuleLoadError, GuestFault, GuestError) as e:
        # a module that fails to load or bind, oopses or panics the guest (often the
        # user's own, or its parameters): the cause and the kernel's words, not 50
        # lines of the harness's frames
        notes = "".join(f"\n{n}" for n in getattr(e, "__notes__", ()))
        why = f"the guest {config.name!r} did not start: {e}{notes}"
    else:
        return g
    pytest.fail(why, pytrace=False)


@contextlib.contextmanager
def start_uio_generic_guest(config: GuestConfig) -> Iterator[Guest]:
    """:func:`start_guest` with the irqlab function moved to the kernel's uio_pci_generic
    (give *config* ``irq-mode=intx``: uio_pci_generic takes INTx functions only); the
    guest is closed on exit."""
    g = start_guest(config)
    try:
        _, r = g.bind_uio_pci_generic()
        assert r.rc == 0, r
        yield g
    finally:
        g.close()


@pytest.fixture(scope="session")
def irqlab_guest(
    request: pytest.FixtureRequest, irqlab_log_dir: Path
) -> Generator[Guest, None, None]:
    """One guest for the whole session, restored from the ready-state snapshot (or
    cold-booted, and saved as the snapshot, when there is none: the first of several
    xdist workers boots, the others wait for its snapshot); tests share it through a
    soft reset.  A save that fails (a full cache) leaves the booted guest in use.  At
    the session's end its kernel log is checked (a WARN, BUG, oops or an unexpected
    taint during any test, one that passed too, is an error of the last test's
    teardown, which names the test it came during; the ini option
    ``irqlab_check_kernel_log = false`` turns it off; not
    after a Ctrl-C or SIGTERM), and so is what each session guest replaced after it died
    had reported on its console before (its console prints warnings too)."""
    from irqlab.testing.parallel import worker_id
    from irqlab.vm.guest import GuestConfig

    config = GuestConfig(
        name=f"e2e-{worker_id()}" if worker_id() else "e2e", log_dir=irqlab_log_dir
    )
    g = start_guest(config)  # a missing prerequisite fails with its name
    try:
        _console_warnings(g)
        yield g
        interrupted = request.config.stash.get(_RUN_INTERRUPTED, False)
        if request.config.getini(CHECK_KERNEL_LOG_INI) and not interrupted:
            lead = (
                f"the session guest's kernel reported problems during this session's tests "
                f"(not checked with the ini option {CHECK_KERNEL_LOG_INI} = false)"
            )
            replaced = request.config.stash.get(_REPLACED_PROBLEMS, [])
            reports = [p.report(f"{lead}: the replaced {which}") for which, p in replaced]
            now = f"{lead}: the session guest at the end" if replaced else lead
            log = irqlab_log_dir / "session-dmesg.log"
            timeline = [
                (t, test)
                for on, t, test in request.config.stash.get(_TIMELINE, [])
                if on is g.machine
            ]
            last = _kernel_log_failure(g, now, log, scan_leaks=True, timeline=timeline)
            reports += [last] if last is not None else []
            if reports:
                pytest.fail("\n\n".join(reports), pytrace=False)
    finally:
        g.close()


def pytest_report_header(config: pytest.Config) -> str:
    from irqlab.testing.diagnostics import report_header

    return report_header()


_SAFE_RAISE = pytest.StashKey[SafeRaise]()
# A signal this soon after the one that interrupted the run is the same stop, sent
# twice: ignored.  One later than that interrupts again (as Python's own Ctrl-C does).
REPEATED_SIGNAL_S = 1.0
# How long the teardown after pytest's interrupt (every fixture's, the shared guests')
# may take before it is ended (_StopWatch); each guest's close is bounded (about 10 s).
TEARDOWN_LIMIT_S = 60.0


class _StopWatch:
    """After pytest's own interrupt (Ctrl-C, or SIGTERM turned into it), the teardown
    that follows is watched: one still running after :data:`TEARDOWN_LIMIT_S` is ended
    with every thread's stack, its children (QEMU) killed, status 128 + the signal (a
    KeyboardInterrupt raised where it left a lock held wedged a CI run's pytest for 20
    minutes with its QEMU).  A KeyboardInterrupt a test catches itself starts nothing:
    only the one pytest ends the run with."""

    def __init__(self, config: pytest.Config, last: list[int]) -> None:
        self.config = config
        self.last = last  # the signal of the handler's last raise (0: none of ours)
        self.watch: TeardownWatch | None = None

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if self.watch is None:
            self.watch = TeardownWatch(TEARDOWN_LIMIT_S, "pytest's teardown", self._cut_short)
            self.watch.start(self.last[0] or signal.SIGINT)
        meant = getattr(excinfo.value, "returncode", None)  # pytest.exit()'s
        self.config.stash[_STOPPED] = pytest.ExitCode.INTERRUPTED if meant is None else meant

    def _cut_short(self, status: int) -> None:
        """The run's outcome before the watch ends the process: interrupted, its teardown
        cut short, and the status it ends with (it said ``interrupted (exit status 2)``,
        pytest's, or nothing when the teardown hung before the session's end)."""
        from irqlab.testing.parallel import mark_outcome

        assert self.watch is not None
        mark_outcome(self.config, status, f"interrupted; {self.watch.cut_short()}: cut short")

    def pytest_unconfigure(self) -> None:
        if self.watch is not None:
            self.watch.end()


def _install_interrupts(config: pytest.Config) -> None:
    """SIGTERM (timeout(1), CI cancellation) and SIGHUP (the terminal closed) tear down
    like Ctrl-C: every guest and machine fixture stops its QEMU and removes its sockets
    (after SIGHUP its QEMU outlived pytest by its parent-death signal's moment, and its
    socket folder until the next start).  Both raise KeyboardInterrupt
    as Python's own Ctrl-C does, but never where it could wedge the run (see
    :mod:`irqlab.sigsafe`: raised inside logging's lock, every thread that logged
    waited for ever).  Handlers someone else set stay theirs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    defaults: dict[int, Any] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
        signal.SIGHUP: signal.SIG_DFL,
    }
    mine = [sig for sig, default in defaults.items() if signal.getsignal(sig) is default]
    if not mine:
        return
    last = [0]  # the signal the last KeyboardInterrupt of ours came from
    raised_at = [-REPEATED_SIGNAL_S]  # when it was raised (monotonic)
    safe = SafeRaise(lambda e: last[0] or None if isinstance(e, KeyboardInterrupt) else None)

    def handler(signum: int, frame: FrameType | None) -> None:
        again = safe.redelivered(signum)
        if not again and time.monotonic() - raised_at[0] < REPEATED_SIGNAL_S:
            # the same stop sent twice (timeout(1) signals pytest and then its process
            # group; a CI runner the group too): a second KeyboardInterrupt inside
            # pytest's own interrupt handling spoilt its report and exit status
            return
        if safe.deferred(signum, frame):  # see irqlab.sigsafe: a raise here could wedge us
            return
        last[0] = signum
        raised_at[0] = time.monotonic()
        forward_interrupt(config, signum)  # an xdist controller's workers stop with it
        raise (
            KeyboardInterrupt()
            if signum == signal.SIGINT
            else KeyboardInterrupt(f"signal {signum}")
        )

    safe.set_handlers(mine, handler)
    config.stash[_SAFE_RAISE] = safe
    config.stash[_MINE] = mine
    config.pluginmanager.register(_StopWatch(config, last), "irqlab-stop-watch")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # after every plugin's configure: pytest's own unraisable-exception hook is set by
    # then, and ours goes in front of it (a raise of ours lost in a finaliser is
    # delivered again; anything else goes on to pytest's)
    safe = session.config.stash.get(_SAFE_RAISE, None)
    if safe is not None:
        safe.install_hook()
    _junit_log_dir(session)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OLD_SINK in config.stash:
        notice.set_sink(config.stash[_OLD_SINK])
    if _OLD_PLACER in config.stash:
        logplace.set_placer(config.stash[_OLD_PLACER])
    safe = config.stash.get(_SAFE_RAISE, None)
    if safe is not None:  # what Python had: nothing of ours after the run
        safe.restore()  # and a signal deferred in the run's last moments is not lost
        stopped = config.stash.get(_STOPPED, None)
        if stopped is not None and _command_runs(config):
            signals: list[int] = config.stash[_MINE]
            _end_at_once(signals, int(stopped))
    # pytest caught every KeyboardInterrupt of the run (ours for SIGTERM among them) and
    # chose its status: `python -m pytest` does not end by SIGINT instead (sigsafe's notes)
    clear_caught_interrupt()


_OLD_SINK = pytest.StashKey[notice.Sink]()
_OLD_PLACER = pytest.StashKey["logplace.Placer | None"]()
_MINE = pytest.StashKey[list[int]]()  # the signals the plugin's handlers took
_STOPPED = pytest.StashKey[int]()  # the status pytest's interrupt ended the run with


def _command_runs(config: pytest.Config) -> bool:
    """Whether pytest's own command (``pytest``, ``python -m pytest``) runs *config*'s
    session, so that the process exits as it ends: the frame of pytest's ``_main`` that
    holds *config* was called by its console entry point, not by ``pytest.main()`` (a
    program's, or pytester's in-process run, which go on afterwards).  False where
    pytest no longer has those functions."""
    import _pytest.config as pytest_config

    entry = getattr(pytest_config, "_console_main", None) or getattr(
        pytest_config, "console_main", None
    )
    main = getattr(pytest_config, "_main", None)
    entry_code, main_code = getattr(entry, "__code__", None), getattr(main, "__code__", None)
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and main_code is not None:
        if frame.f_code is main_code and frame.f_locals.get("config") is config:
            caller = frame.f_back
            return caller is not None and caller.f_code is entry_code
        frame = frame.f_back
    return False


def _end_at_once(signals: Sequence[int], status: int) -> None:
    """After a run that an interrupt ended, in a process pytest's command runs (it is
    about to exit): a further Ctrl-C, SIGTERM or SIGHUP of *signals* ends it at once with
    the run's *status*; from its exit handlers on, they are ignored.  With Python's own
    handlers back, a user still pressing Ctrl-C (or a second ``kill``) interrupted
    pytest's own end: a KeyboardInterrupt traceback, ``Exception ignored in: ...
    KeyboardInterrupt`` as a PytestUnraisableExceptionWarning, or the process killed by
    the signal (status -2, -15) after its summary had said ``interrupted`` (5 runs in 5
    with Ctrl-C every 0.1 s, 4 in 7 every 0.4 s; chaos review 2026-12-08).  The run's
    teardown is over by then: its guests are closed."""
    import atexit

    def stop(signum: int, frame: FrameType | None) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a stream already closed, a reader gone
                stream.flush()
        os._exit(status)

    def ignore() -> None:  # Python's finalisation puts SIG_DFL back for a handler of ours
        for signum in signals:
            signal.signal(signum, signal.SIG_IGN)

    for signum in signals:
        signal.signal(signum, stop)
    atexit.register(ignore)


def pytest_configure(config: pytest.Config) -> None:
    _install_interrupts(config)
    # a wait on another run's lock (its cold boot, its build) is said on the terminal
    config.stash[_OLD_SINK] = notice.set_sink(_terminal_sink(config))
    # a guest built without a log directory logs into the test's (or the run's)
    config.stash[_OLD_PLACER] = logplace.set_placer(_placer(config))
    check_options(config)
    apply_options(config)
    config.addinivalue_line("markers", marker_help())


# The marker's keywords and their defaults, in the order `pytest --markers` shows them:
# the one list the parser (fresh_guest_config) and the marker's help read.
MARKER_DEFAULTS: Mapping[str, object] = {
    "device": None,
    "module": None,
    "smp": 1,
    "hotplug": False,
    "gpio_edges": None,
    "modules": (),
    "files": None,
    "load_irqlab": True,
    "kernel_modules": (),
    "devices": (),
    "check_kernel_log": True,
    "module_load_timeout": None,
}
MARKER_KEYWORDS = frozenset(MARKER_DEFAULTS)


def marker_help() -> str:
    """The ``irqlab`` marker's line of ``pytest --markers``: its keywords with their
    defaults (:data:`MARKER_DEFAULTS`), then what they configure."""
    signature = ", ".join(f"{k}={v!r}" for k, v in MARKER_DEFAULTS.items())
    return (
        f"irqlab({signature}): configure the test's own guest (irqlab_fresh_guest): device "
        "properties, module parameters, vCPUs, the device behind a hotplug-capable PCIe "
        "root port, GPIO lines armed for edge events (a list of lines or a bit mask), your "
        "own modules ('KO PARAM=VALUE ...') and files, whether ours loads, more of the "
        "guest kernel's modules in the image, more QEMU devices (-device specs; a cold "
        "boot), whether its kernel log is checked at the end, the seconds a module's load may "
        "take before it is said as a hang (default 60)"
    )


# The marker's keywords whose values are dicts: merged key by key across markers.
MERGED_KEYWORDS = ("device", "module", "files")


class IrqlabMarker(NamedTuple):
    """All ``@pytest.mark.irqlab(...)`` markers of a test as one (:func:`irqlab_marker`)."""

    args: tuple[object, ...]
    kwargs: Mapping[str, object]


def irqlab_marker(item: pytest.Item) -> IrqlabMarker | None:
    """The test's ``irqlab`` markers merged (None: it has none): the test's own, its
    class's, its module's (``pytestmark``).  Per keyword the closest marker wins (of
    decorators on one test, the lowest); the dicts ``device=``, ``module=`` and
    ``files=`` are merged key by key, the closest winning.  Everything that reads the
    marker reads it here."""
    marks = list(item.iter_markers("irqlab"))  # closest first
    if not marks:
        return None
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for mark in reversed(marks):  # farthest first: each closer one overrides
        args[:0] = mark.args
        for key, value in mark.kwargs.items():
            if key in MERGED_KEYWORDS:
                value = {**_marker_mapping(kwargs, key), **_marker_mapping(mark.kwargs, key)}
            kwargs[key] = value
    return IrqlabMarker(tuple(args), kwargs)


def fresh_guest_config(request: pytest.FixtureRequest, log_dir: Path | None = None) -> GuestConfig:
    """The GuestConfig of a test's own guest, from its ``@pytest.mark.irqlab(...)``; a
    value that cannot work fails the test here, before anything boots.  Relative paths
    in ``modules=`` and ``files=`` are relative to the test file's directory."""
    from irqlab.vm.guest import GuestConfig

    marker = irqlab_marker(request.node)
    args, given = (marker.args, marker.kwargs) if marker is not None else ((), {})
    kw = {**MARKER_DEFAULTS, **given}
    unknown = set(given) - MARKER_KEYWORDS
    if unknown or args:
        import difflib

        known = MARKER_KEYWORDS
        got = [*(repr(a) for a in args), *sorted(unknown)]
        like = [m for u in sorted(unknown) for m in difflib.get_close_matches(u, known, n=1)]
        pytest.fail(
            f"@pytest.mark.irqlab takes {', '.join(f'{k}=' for k in sorted(known))}, "
            f"not {', '.join(f'{g}=' if g in unknown else g for g in got)}"
            + (f" (did you mean {' or '.join(f'{m}=' for m in like)}?)" if like else ""),
            pytrace=False,
        )
    device, module, files = (_marker_mapping(kw, k) for k in ("device", "module", "files"))
    params = dict(module)
    edges = kw.get("gpio_edges")
    if edges is not None:
        from irqlab.vm.guest import device_gpio_lines, param_key

        for name, value in module.items():  # the shortcut's value went in silently
            if param_key(name) == "gpio_edges":
                _marker_error(
                    f"module={{{name!r}: {value!r}}}, gpio_edges={edges!r}",
                    "both set our driver's gpio_edges: give one of them",
                )
        params["gpio_edges"] = gpio_mask(edges, device_gpio_lines(device))
    smp = kw["smp"]
    if type(smp) is not int or smp < 1:
        _marker_error(f"smp={smp!r}", "give the number of vCPUs, an int of at least 1")
    modules = kw["modules"] or ()
    if isinstance(modules, (str, Path)) or not isinstance(modules, Iterable):
        _marker_error(f"modules={modules!r}", "give a list of .ko files")
    here = request.node.path.parent
    extra_modules, extra_params = _marker_modules(here, modules)
    kmods = kw["kernel_modules"] or ()
    if (
        isinstance(kmods, str)
        or not isinstance(kmods, Iterable)  # 5 was a TypeError from all()
        or not all(isinstance(n, str) for n in kmods)
    ):
        _marker_error(f"kernel_modules={kmods!r}", "give a list of module names")
    devices = kw["devices"] or ()
    if isinstance(devices, str) or not isinstance(devices, Iterable):
        _marker_error(f"devices={devices!r}", "give a list of -device specs, e.g. ['edu']")
    devices = tuple(devices)
    from irqlab.vm.guest import extra_device_problem

    for spec in devices:
        problem = extra_device_problem(spec)
        if problem:
            _marker_error(f"devices=[{spec!r}]", problem)
    load_timeout = kw["module_load_timeout"]
    from irqlab.vm.guest import KERNEL_STEP_TIMEOUT_S
    from irqlab.vm.loadscale import check_timeout

    try:
        if load_timeout is not None:
            check_timeout(load_timeout, "module_load_timeout")
    except (TypeError, ValueError) as e:
        _marker_error(f"module_load_timeout={load_timeout!r}", str(e))
    assert load_timeout is None or isinstance(load_timeout, int | float)  # checked
    for flag in ("check_kernel_log", "hotplug", "load_irqlab"):  # "false" was True
        if not isinstance(kw[flag], bool):
            _marker_error(f"{flag}={kw[flag]!r}", "give True or False")
    from irqlab.vm.guest import GuestConfigError, check_device_props, guest_file_problem

    problem = None
    try:
        check_device_props(dict(device))
    except GuestConfigError as e:  # failed outside the except: said once, not twice
        problem = str(e)
    if problem is not None:
        _marker_error(f"device={dict(device)!r}", problem)
    for remote in files:
        problem = guest_file_problem(str(remote))
        if problem:
            _marker_error(f"files={{{remote!r}: ...}}", problem)
    try:
        return GuestConfig(
            name="fresh",
            device_props=dict(device),
            module_params=params,
            smp=smp,
            hotplug=bool(kw["hotplug"]),  # a bool: checked above
            log_dir=log_dir,
            extra_modules=extra_modules,
            extra_module_params=extra_params,
            extra_files={str(g): _marker_file(here, "files", f) for g, f in files.items()},
            load_irqlab=bool(kw["load_irqlab"]),
            kernel_modules=tuple(kmods),
            extra_devices=devices,
            module_load_timeout=KERNEL_STEP_TIMEOUT_S if load_timeout is None else load_timeout,
        )
    except GuestConfigError as e:  # what the checks above missed: still the marker's
        problem = str(e)
    _marker_error("...", str(problem))


def _marker_as_written(item: pytest.Item) -> str:
    """``@pytest.mark.irqlab(module={'wakeup': 'sometimes'})``: the test's markers merged,
    their keywords as given ("" for a test without one)."""
    marker = irqlab_marker(item)
    if marker is None or not marker.kwargs:
        return ""
    return f"@pytest.mark.irqlab({', '.join(f'{k}={v!r}' for k, v in marker.kwargs.items())})"


def _marker_error(argument: str, problem: str) -> NoReturn:
    pytest.fail(f"@pytest.mark.irqlab({argument}): {problem}", pytrace=False)


def _marker_mapping(kw: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = kw.get(key) or {}
    if not isinstance(value, Mapping):
        mixup = key == "module" and isinstance(value, (list, tuple, str))
        hint = " of our driver's parameters; your own modules go in modules=[...]"
        _marker_error(f"{key}={value!r}", "give a dict" + (hint if mixup else ""))
    return value


def _marker_modules(
    here: Path, modules: Iterable[object]
) -> tuple[list[Path], dict[str, dict[str, str | None]]]:
    """``modules=`` of the marker: each a .ko path, or ``"KO PARAM=VALUE ..."`` as insmod
    takes it -> the files and their parameters by module name."""
    from irqlab.vm.guest import module_specs

    try:
        files, params = module_specs(modules, lambda name: _marker_path(here, "modules", name))
    except ValueError as e:
        _marker_error("modules=...", str(e))
    return [_marker_file(here, "modules", f) for f in files], params


def _marker_path(here: Path, key: str, name: object) -> Path:
    """A path the marker names: absolute, or relative to the test file's directory
    *here* (not the current directory)."""
    if not isinstance(name, (str, os.PathLike)):
        _marker_error(f"{key}=...", f"{name!r} is not a path")
    path = Path(name).expanduser()
    return (here / path).resolve() if not path.is_absolute() else path


def _marker_file(here: Path, key: str, name: object) -> Path:
    """A file the marker names (:func:`_marker_path`); it must exist."""
    path = _marker_path(here, key, name)
    if not path.is_file():
        _marker_error(f"{key}=...", f"not found: {path}")
    return path


def gpio_mask(edges: object, lines: int | None = None) -> int:
    """``gpio_edges=`` of the marker: a bit mask, or an iterable of line numbers, of a
    device with *lines* GPIO lines (default the header's maximum; the driver refused any
    other after a boot)."""
    if lines is None:  # read here, not at import: pytest starts whatever the header holds
        lines = REGS.MAX_GPIO_LINES
    beyond = f"beyond the device's {lines} GPIO lines (0 to {lines - 1}; device="
    beyond += f"{{{QOM.PROP_GPIO_LINES!r}: N}} sets how many)"
    if isinstance(edges, int) and not isinstance(edges, bool):
        if edges < 0:
            _marker_error(f"gpio_edges={edges!r}", "a bit mask is not negative")
        if edges >> lines:
            _marker_error(f"gpio_edges={edges:#x}", f"names lines {beyond}")
        return edges
    if isinstance(edges, (list, tuple, set, frozenset, range)):
        mask = 0
        for line in edges:
            if not isinstance(line, int) or isinstance(line, bool) or line < 0:
                pytest.fail(f"gpio_edges: {line!r} is not a line number", pytrace=False)
            if line >= lines:
                _marker_error(f"gpio_edges={edges!r}", f"line {line} is {beyond}")
            mask |= 1 << line
        return mask
    pytest.fail(f"gpio_edges={edges!r}: give a bit mask or a list of lines", pytrace=False)


@pytest.fixture
def irqlab_fresh_guest(
    request: pytest.FixtureRequest, irqlab_log_dir: Path
) -> Generator[Guest, None, None]:
    """A guest of this test's own, restored from the ready-state snapshot of its
    configuration (``@pytest.mark.irqlab(device={...}, module={...}, smp=N)``; the
    first test of a configuration pays one cold boot that saves it).  Whatever the test
    does to it (panic, unload the module, odd device state) ends with the test."""
    config = fresh_guest_config(request, _test_log_root(request, irqlab_log_dir))
    g = start_guest(config, configured_by=_marker_as_written(request.node))
    request.node.stash.setdefault(_MACHINES, []).append(g.machine)
    request.node.stash.setdefault(_DIAGNOSTICS, []).append(
        (GuestDiagnostics.start(g, own=True), _test_log_root(request, irqlab_log_dir) / FRESH_DIR)
    )
    try:
        yield g
        marker = irqlab_marker(request.node)
        wanted = marker is None or marker.kwargs.get(
            "check_kernel_log", MARKER_DEFAULTS["check_kernel_log"]
        )
        # a failed test has its story already: no second error, no wait on its guest
        if wanted and not request.node.stash.get(_CALL_FAILED, False):
            lead = (
                "the guest kernel reported problems during the test (a test that expects "
                "them: @pytest.mark.irqlab(check_kernel_log=False))"
            )
            log = _test_log_root(request, irqlab_log_dir) / "dmesg.log"
            request.node.stash.setdefault(_MORE_LOGS, []).append(log)
            _check_kernel_log(g, lead, log)
    finally:
        g.close()


def _check_kernel_log(g: Guest, lead: str, log: Path) -> None:
    """Fail the test (at its teardown) with :func:`_kernel_log_failure`'s report."""
    report = _kernel_log_failure(g, lead, log)
    if report is not None:
        pytest.fail(report, pytrace=False)


def _kernel_log_failure(
    g: Guest,
    lead: str,
    log: Path,
    *,
    scan_leaks: bool = False,
    timeline: list[tuple[float, str]] | None = None,
) -> str | None:
    """The failure's text when *g*'s kernel reported a bug: a WARN(), BUG:, lockdep or
    KASAN report, an unexpected taint; the whole kernel log is then written to *log*
    (a ``quiet`` guest's console has none of it).  None for a guest that died or
    froze (the test met that itself, or caused it: the fault stays the story).
    *scan_leaks*: a kmemleak scan first (slow under TCG: once a session)."""
    from paramiko import SSHException

    from irqlab.vm.kernlog import kernel_problems

    if g.fault is not None or g.ssh is None or g.machine is None or not g.machine.is_running():
        return None
    try:
        problems = kernel_problems(g, scan_leaks=scan_leaks)
    except (IrqlabError, SSHException, OSError, EOFError, ValueError):  # it died or stopped
        return None  # answering as the test ended (SSH's own errors too): that is its story
    if not problems:
        return None
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(problems.log + "\n")
        whole = f"\n(the whole kernel log: {log})"
    except OSError as e:
        whole = f"\n(the whole kernel log {_unsaved(log, e)})"
    return problems.report(lead) + whole + _tests_during(problems.splats, timeline or [])


def _tests_during(splats: list[str], timeline: list[tuple[float, str]]) -> str:
    """Which test ran when each of *splats* was logged (by its kernel timestamp, against
    *timeline*: each test's start in the guest's clock), as lines for the report; the
    check runs at the session's end, in the last test's teardown, which it blamed."""
    starts = sorted(timeline)
    said: list[str] = []
    for line in splats:
        m = _STAMP.match(line.strip())
        if m is None or "kmemleak" in line:  # the session end's own scan logs those
            continue
        before = [test for start, test in starts if start <= float(m.group(1))]
        if before and f"during {before[-1]}" not in said:
            said.append(f"during {before[-1]}")
    if not said:
        return ""
    return "\nlogged (by the guest's clock, against each test's start) " + "; ".join(said)


@pytest.fixture
def irqlab_fresh_device(irqlab_fresh_guest: Guest) -> DeviceControl:
    """:class:`irqlab.testing.helpers.DeviceControl` of :func:`irqlab_fresh_guest`."""
    from irqlab.testing.helpers import DeviceControl

    return DeviceControl(irqlab_fresh_guest)


@pytest.fixture
def irqlab_fresh_agent(
    request: pytest.FixtureRequest, irqlab_fresh_guest: Guest
) -> Generator[AgentClient, None, None]:
    """The agent of :func:`irqlab_fresh_guest`, reset as ``irqlab_agent`` is (no armed
    paths or open files, device counters zero); a path error the test left unread fails
    it at its end, as with ``irqlab_agent``."""
    __tracebackhide__ = hide_test_frame
    irqlab_fresh_guest.reset()
    _mark_test_start(request.node, irqlab_fresh_guest)
    client = irqlab_fresh_guest.agent
    yield client
    _check_path_errors(irqlab_fresh_guest, client)


def _mark_test_start(item: pytest.Item, guest: Guest) -> None:
    """The test's part of *guest*'s kernel log, in a failure's diagnostics, starts at
    the agent's reset of its setup."""
    for diag, _ in item.stash.get(_DIAGNOSTICS, []):
        if diag.guest is guest:
            diag.mark(guest.reset_at_ns)


def _check_path_errors(guest: Guest, client: AgentClient) -> None:
    """End of a test: no path error the test did not read (then the events are dropped)."""
    __tracebackhide__ = hide_test_frame
    if guest.fault is not None:
        return  # the test's own failure names the cause; the next test gets a new guest
    errors = [e for e in client.pending() if e.get("type") == "path_error"]
    client.drain_events()
    assert not errors, f"unexpected path errors: {errors}"


# A test uses one guest: the shared one's fixtures, or those of a guest of its own (the
# counterpart named here; None: none, take the helper over the fresh agent).
_SHARED_TO_FRESH = {
    "irqlab_guest": "irqlab_fresh_guest",
    "irqlab_agent": "irqlab_fresh_agent",
    "irqlab_device": "irqlab_fresh_device",
    "irqlab_wait_stats": None,
}
_FRESH = ("irqlab_fresh_guest", "irqlab_fresh_agent", "irqlab_fresh_device")


def _shared_fixtures(item: pytest.Item) -> list[str]:
    """The shared guest's fixtures *item* uses: those in its closure, except
    ``irqlab_guest`` unless the test reaches it through what it asks for itself (its
    arguments, ``usefixtures``, or a fixture of its own these take, however deep:
    :func:`_requested`), not through an autouse fixture alone (a conftest's autouse
    session fixture may hold it, e.g. for a check of the guest's kernel log)."""
    closure = set(getattr(item, "fixturenames", ()))
    return [
        n
        for n in _SHARED_TO_FRESH
        if n in closure and (n != "irqlab_guest" or n in _requested(item))
    ]


def _requested(item: pytest.Item) -> set[str]:
    """The fixtures *item* asks for itself (its arguments and ``usefixtures``) and those
    they take in turn, but for what the shared guest's own fixtures take (``irqlab_agent``
    is no use of ``irqlab_guest`` of the test's); not the autouse ones' (empty for an
    item that is no function)."""
    if not isinstance(item, pytest.Function):
        return set()
    import inspect

    todo = list(inspect.signature(item.function).parameters)
    todo += [n for m in item.iter_markers("usefixtures") for n in m.args]
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs if info is not None else {}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if name in _SHARED_TO_FRESH:
                continue
            for fixturedef in defs.get(name, ()):  # an override and those it extends
                todo += fixturedef.argnames
    return seen


def _instead(shared: list[str]) -> str:
    return ", ".join(
        f"{_SHARED_TO_FRESH[n]} for {n}"
        if _SHARED_TO_FRESH[n]
        else f"irqlab.testing.helpers.wait_file_stats(irqlab_fresh_agent, ...) for {n}"
        for n in shared
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse, before any guest starts, a test that would get another guest than it
    asks for (:func:`_refuse_other_guests`); then replace a session guest an earlier
    test killed before any fixture is set up (:func:`_renew_after_replacement`)."""
    _refuse_other_guests(item)
    _renew_after_replacement(item)


def _refuse_other_guests(item: pytest.Item) -> None:
    """Fail a test that would get another guest than it asks for: the marker with the
    shared guest's fixtures (the shared guest keeps its defaults) or with no guest at
    all, or the shared guest's fixtures beside a guest of the test's own (two guests,
    the agent of one and the device of the other)."""
    shared = _shared_fixtures(item)
    fresh = [n for n in _FRESH if n in getattr(item, "fixturenames", ())]
    if not shared:
        if not fresh and irqlab_marker(item) is not None:
            # it configured nothing, unless it takes the guest through
            # request.getfixturevalue: said after its call (pytest_runtest_teardown)
            item.stash[_MARKER_UNCLAIMED] = True
        return
    if fresh:
        pytest.fail(_two_guests(item, shared, fresh), pytrace=False)
    if irqlab_marker(item) is not None:
        pytest.fail(_marker_with_shared(item, shared), pytrace=False)


def _marker_with_shared(item: pytest.Item, shared: list[str]) -> str:
    return (
        f"@pytest.mark.irqlab configures a guest of the test's own, but {item.name} "
        f"uses the shared guest ({', '.join(shared)}), which keeps its defaults: use "
        f"irqlab_fresh_guest & co ({_instead(shared)})"
    )


def _one_guest_at_fixture_setup(name: str, item: pytest.Item) -> None:
    """The guest fixture *name* (of function scope) is set up for *item*: fail what
    :func:`_refuse_other_guests` could not see before, a fixture taken through
    ``request.getfixturevalue`` that makes it two guests, or the shared one under the
    marker.  (The session's ``irqlab_guest`` itself, set up once per session, comes
    here from :func:`_taken_at_run_time`.)"""
    if name not in _SHARED_TO_FRESH and name not in _FRESH:
        return
    taken = item.stash.setdefault(_GUEST_FIXTURES_TAKEN, set())
    taken.add(name)
    static = set(getattr(item, "fixturenames", ()))
    shared = _shared_fixtures(item)
    shared += [n for n in _SHARED_TO_FRESH if n in taken and n not in shared]
    fresh = [n for n in _FRESH if n in static or n in taken]
    if shared and fresh:
        pytest.fail(_two_guests(item, shared, fresh), pytrace=False)
    if shared and irqlab_marker(item) is not None:
        pytest.fail(_marker_with_shared(item, shared), pytrace=False)


def _two_guests(item: pytest.Item, shared: list[str], fresh: list[str]) -> str:
    return (
        f"{item.name} uses the shared guest's {', '.join(shared)} and a guest of its own "
        f"({', '.join(fresh)}): that is two guests. Use the own guest's fixtures only "
        f"({_instead(shared)}), or the shared guest's only"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """After the fixtures' teardown: a test with the marker whose call passed without
    ever taking a guest of its own configured nothing (one that names none of the
    fixtures may take it through ``request.getfixturevalue``: not known at setup)."""
    # the frame every fixture's teardown error passes through (irqlab_agent's unread
    # path errors, a conftest's): never the cause, hidden whatever the error (its
    # docstring and `yield` came first); the failures raised below are said without it
    __tracebackhide__ = True
    yield
    taken = item.stash.get(_GUEST_FIXTURES_TAKEN, set())
    if _session_guest_taken_at_run_time(item):  # a session fixture: set up before
        fresh = [n for n in _FRESH if n in getattr(item, "fixturenames", ()) or n in taken]
        if fresh:
            pytest.fail(_two_guests(item, ["irqlab_guest"], fresh), pytrace=False)
        if irqlab_marker(item) is not None:
            pytest.fail(_marker_with_shared(item, ["irqlab_guest"]), pytrace=False)
    if (
        item.stash.get(_MARKER_UNCLAIMED, False)
        and item.stash.get(_CALL_PASSED, False)
        and not taken.intersection(_FRESH)
    ):
        pytest.fail(
            f"@pytest.mark.irqlab configures a guest of the test's own, but {item.name} "
            "took none: take irqlab_fresh_guest (or irqlab_fresh_agent, "
            "irqlab_fresh_device), as an argument or through request.getfixturevalue, "
            "or drop the marker",
            pytrace=False,
        )
    return None


def _session_guest_taken_at_run_time(item: pytest.Item) -> bool:
    """Whether *item* took ``irqlab_guest`` through ``request.getfixturevalue`` (not in
    its closure) but for the test or a function-scoped fixture of its (checked at the
    take: :func:`_taken_at_run_time`): a wider-scoped fixture's take is no fixture setup
    of the test's, so only the request's list of the fixtures it used says so
    (pytest's private ``_request``; tests/unit/test_plugin_options.py pins it)."""
    if "irqlab_guest" in getattr(item, "fixturenames", ()) or item.stash.get(_TAKEN, False):
        return False
    used = getattr(getattr(item, "_request", None), "fixturenames", ())
    return "irqlab_guest" in used


def _renew_after_replacement(item: pytest.Item) -> None:
    """Before *item*'s fixtures are set up: if it takes the session guest and an earlier
    test killed it, replace it now, and tear down the module-, class-, package- and
    session-scoped fixtures that took the replaced one (pytest keeps their values: a
    module's fixture that prepared the guest went on with what was gone, its agent or
    handles stale), so that pytest sets them up again in the new guest.  So too after
    a replacement made elsewhere (:func:`pytest_fixture_setup`, ``irqlab_guest_alive``)
    or one that raised after its restart: whatever replaced the guest left the
    renewal pending (:func:`revive`).  A teardown of theirs that fails against the new
    guest is said, not raised."""
    if "irqlab_guest" not in getattr(item, "fixturenames", ()):
        return
    guest = item.config.stash.get(_SESSION_GUEST, None)  # None: not set up yet
    try:
        if guest is not None:
            revive(guest, item.config, item.nodeid.split("::")[0])
    finally:  # a replacement that raised after its restart: its fixtures go all the same
        # those of this replacement and of one an earlier hook or fixture made
        stale = item.config.stash.get(_STALE_FIXTURES, [])
        item.config.stash[_STALE_FIXTURES] = []
        for fixturedef, request in stale:
            _finish_stale(item.config, fixturedef, request)


def _finish_stale(
    config: pytest.Config, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """Tear down *fixturedef*, which took a session guest since replaced; whatever its
    teardown raises (an error, or pytest.fail()'s or pytest.skip()'s exceptions, which
    are no Exception) is said, not raised: it is no failure of the test being set up,
    and the other fixtures are torn down too.  A Ctrl-C, SIGTERM or pytest.exit() stops
    the run."""
    try:
        fixturedef.finish(request)  # type: ignore[arg-type]  # the SubRequest it had
    except (KeyboardInterrupt, SystemExit, pytest.exit.Exception):
        raise
    except BaseException as e:  # pytest's Failed and Skipped are BaseExceptions
        what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        _terminal_sink(config)(
            f"irqlab: tearing down the fixture {fixturedef.argname!r} set up in the "
            f"replaced session guest failed (it is set up again): {what}"
        )


def _guest_logs(guest: Guest) -> dict[str, Path]:
    logs: dict[str, Path] = {}
    if guest.machine is not None and guest.machine.paths is not None:
        logs["console.log"] = guest.machine.paths.console_log
        logs["qemu.log"] = guest.machine.paths.stderr_log
    agent = guest._agent  # never (re)start an agent just to find its logs
    if agent is not None:
        for suffix in ("rx.jsonl", "tx.jsonl", "stderr.log"):
            logs[f"agent.{suffix}"] = Path(f"{agent.log_base}.{suffix}")
    return logs


def revive(
    guest: Guest,
    config: pytest.Config | None = None,
    where: str = "",
    *,
    unresettable: str | None = None,
) -> str | None:
    """Replace a guest that died or froze (the health watch saw it), or that the host
    cannot reach any more (its SSH connection gone: a test killed the guest's sshd),
    or that could not be reset (*unresettable*: why), with a new one of the same
    configuration: a restore from its snapshot, about half a second.  Says so once on
    the terminal (under pytest-xdist naming the worker, whose line it is among the
    others'); returns the cause (None if the guest was fine).  *where*: the test file
    being set up (a later failure there lists it)."""
    from irqlab.testing.parallel import config_worker_id

    dead = guest.fault is not None or guest.machine is None or not guest.machine.is_running()
    lost = None if dead or unresettable is not None else guest.connection_lost()
    if not dead and lost is None and unresettable is None:
        return None
    worker = config_worker_id(config) if config is not None else None
    who = f"xdist worker {worker}: " if worker is not None else ""
    if unresettable is not None and not dead:
        cause = f"it could not be reset: {unresettable}"
        msg = (
            f"irqlab: {who}the session guest could not be reset ({unresettable}); "
            "starting a new one"
        )
    elif lost is not None:
        cause = lost
        msg = f"irqlab: {who}the session guest cannot be reached ({cause}); starting a new one"
    else:
        cause = guest.fault.cause if guest.fault is not None else "QEMU is not running"
        msg = f"irqlab: {who}the session guest died ({cause}); starting a new one"
    last = config.stash.get(_LAST_USER, None) if config is not None else None
    if last is not None:
        msg += f" (the last test to use it: {last})"
    if config is not None:
        config.stash.setdefault(_REVIVALS, []).append((where, msg.removeprefix("irqlab: ")))
        _terminal_sink(config)(msg)
    else:
        notice.say(msg)
    run = guest.log_dir  # the replaced QEMU's: its console is read once it is closed
    try:
        guest.restart()
        if config is not None:  # the fixtures that took the replaced guest: renewal pending
            taken: list[_GuestFixture] = config.stash.get(_GUEST_FIXTURES, [])
            config.stash.setdefault(_STALE_FIXTURES, []).extend(taken)
            config.stash[_GUEST_FIXTURES] = []  # set up again: listed again
            if _RESET_FOR in config.stash:  # a new guest: no test's state in it
                del config.stash[_RESET_FOR]
    finally:
        read = config.stash.setdefault(_CONSOLES_READ, set()) if config is not None else set()
        if config is not None and run is not None and run not in read:
            read.add(run)
            _keep_console_problems(config, run, len(config.stash[_REVIVALS]), cause, last)
    _console_warnings(guest)
    return cause


def _console_warnings(guest: Guest) -> None:
    """The session guest's console prints warnings too: what its kernel reported stays
    in its console log should it die (:func:`irqlab.vm.kernlog.console_shows_warnings`;
    best effort: a guest that does not answer is said on the terminal, never an
    error)."""
    from irqlab.vm.kernlog import console_shows_warnings

    console_shows_warnings(guest)


def _keep_console_problems(
    config: pytest.Config, run: Path, nth: int, cause: str, last: str | None
) -> None:
    """Keep what the replaced session guest's console (in its run directory *run*)
    reported as bugs before it died, for the session's end (its kernel log cannot be
    read any more): the *nth* replacement, after *cause*."""
    from irqlab.vm.kernlog import console_problems

    console = run / "console.log"
    try:
        problems = console_problems(console.read_text(errors="replace"))
    except OSError as e:
        problems = None
        _terminal_sink(config)(f"irqlab: the replaced session guest's console {console}: {e}")
    if problems is not None:
        after = f", the last test to use it: {last}" if last else ""
        which = (
            f"session guest #{nth} (replaced after: {cause}{after}; its console before "
            f"it died: {console})"
        )
        config.stash.setdefault(_REPLACED_PROBLEMS, []).append((which, problems))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """A module-, class-, package- or session-scoped fixture that takes the session guest
    meets a live one: if an earlier test killed it, it is replaced first (pytest sets
    wider-scoped fixtures up before the autouse ``irqlab_guest_alive``, so such a
    fixture met the dead guest, and every test of its module failed with a fault of
    an earlier test's making).  While a fixture is set up, its scope is known to
    :func:`_placer`.  Under ``--setup-plan`` no fixture runs (pytest's own hook gives
    each the value None): nothing is checked or replaced."""
    # the frame every fixture's error passes through (a conftest's, whatever it does):
    # never the cause, hidden whatever the error (irqlab's own raise below shows its
    # frames all the same)
    __tracebackhide__ = True
    planned = request.config.getoption("setupplan", default=False)
    if not planned and fixturedef.scope != "function" and "irqlab_guest" in fixturedef.argnames:
        where = request.node.nodeid.split("::")[0]  # a session's fixture: ""
        revive(request.getfixturevalue("irqlab_guest"), request.config, where)
        request.config.stash.setdefault(_GUEST_FIXTURES, []).append((fixturedef, request))
    if not planned and fixturedef.scope == "function":
        _one_guest_at_fixture_setup(fixturedef.argname, request.node)
    _SETTING_UP.append(fixturedef.scope)
    try:
        value = yield
    finally:
        _SETTING_UP.pop()
    if fixturedef.argname == "irqlab_guest" and not planned:
        _hold_session_guest(request.config, fixturedef, value)
        _watch_takes_at_run_time(fixturedef)
        _taken_at_run_time(value)  # this first take's (later ones: the watch's)
    return value


def _hold_session_guest(
    config: pytest.Config, fixturedef: pytest.FixtureDef[Any], guest: Any
) -> None:
    """The session guest, once its fixture has it: ours or a conftest's of the same name
    that overrides it (a guest of its own configuration), for
    :func:`_renew_after_replacement`; forgotten when that fixture is torn down."""
    config.stash[_SESSION_GUEST] = guest

    def forget() -> None:
        if config.stash.get(_SESSION_GUEST, None) is guest:
            del config.stash[_SESSION_GUEST]

    fixturedef.addfinalizer(forget)  # run before the fixture's own teardown


def _terminal_sink(config: pytest.Config) -> notice.Sink:
    """A :mod:`irqlab.notice` sink that writes a line on pytest's terminal, past its
    output capture.  An xdist worker's terminal writes into nothing (execnet points
    its stdout at /dev/null): there the line goes to its stderr, which is the
    controller's, past the capture too.  Outside the main thread (suspending pytest's
    capture is the main thread's: guests a test starts in threads wait there) it goes
    to stderr as it is."""
    import threading

    def say(line: str) -> None:
        # a terminal gone (the output's pipe closed: `pytest | head`, a CI runner
        # cancelled) loses the line, not the caller: raised in pytest_keyboard_interrupt
        # it skipped every other plugin's hook, the terminal reporter's among them
        with contextlib.suppress(OSError):
            _say(line)

    def _say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        main = threading.current_thread() is threading.main_thread()
        if capture is None or not main:
            print(line, file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            if reporter is None or hasattr(config, "workerinput"):
                # on a line of its own: the controller's terminal may be in the middle
                # of a test's line (-v: "[gw1] ... FAILED test_x irqlab: ...")
                print(f"\n{line}", file=sys.stderr, flush=True)
            else:
                reporter.write_line("")
                reporter.write_line(line, yellow=True)

    return say


@pytest.fixture(autouse=True)
def irqlab_guest_alive(request: pytest.FixtureRequest) -> Guest | None:
    """Before every test that has the session guest among its fixtures (``irqlab_guest``
    itself, ``irqlab_agent``, ``irqlab_device``, ``irqlab_wait_stats`` or a
    function-scoped fixture of your own that takes it; a wider-scoped one, set up before
    this, gets the same from :func:`pytest_fixture_setup`): if an earlier test killed it (panic,
    QEMU gone, frozen) or left it out of reach (its SSH connection gone), it is
    replaced by a new one first (a restore) and the terminal says once
    why.  What the health watch already knows decides: no round trip to a
    healthy guest.  Then a test that takes it (itself, through the fixtures above or one
    of its own of any scope; not through a conftest's autouse session fixture alone)
    gets it reset (:func:`_reset_session_guest`), once, whichever of them it takes, and
    after its wider-scoped fixtures' setup as ``irqlab_agent``'s reset was: what those
    armed or opened through the agent is gone too.  Returns the guest (None for a test
    without it; no guest is started for such a test).  A test that takes it only
    through ``request.getfixturevalue`` gets the same there (:func:`_taken_at_run_time`)."""
    __tracebackhide__ = hide_test_frame
    if "irqlab_guest" not in request.fixturenames:
        return None
    guest: Guest = request.getfixturevalue("irqlab_guest")  # session scope: set up already
    _session_guest_for(request.node, guest, uses=bool(_shared_fixtures(request.node)))
    return guest


def _session_guest_for(item: pytest.Item, guest: Guest, *, uses: bool) -> None:
    """*item* has the session guest *guest* (``irqlab_guest_alive``, or
    :func:`_taken_at_run_time`): replaced if an earlier test killed it (:func:`revive`),
    and for a test that *uses* it, its logs' and diagnostics' start marked for its
    failure report and the guest reset (:func:`_reset_session_guest`)."""
    __tracebackhide__ = hide_test_frame
    from irqlab.testing.parallel import run_log_dir

    config = item.config
    revive(guest, config, item.nodeid.split("::")[0])
    if _LAST_USER in config.stash:
        config.stash[_USER_BEFORE] = config.stash[_LAST_USER]
    config.stash[_LAST_USER] = item.nodeid
    # A failure's report names this test's part of the guest's logs and its diagnostics,
    # whichever of the session guest's fixtures the test took, itself or through a
    # fixture of its own (not a test that has it only through a conftest's autouse
    # session fixture: it uses a guest of its own, or none).  A report's extra: it
    # never fails the test's setup.
    if not uses:
        return
    estimate = None
    with contextlib.suppress(Exception):
        log_root = _node_log_root(item, run_log_dir(config))
        item.stash[_GUEST_LOGS] = (LogSlicer(_guest_logs(guest)), log_root)
        diag = GuestDiagnostics.start(guest)
        item.stash.setdefault(_DIAGNOSTICS, []).append((diag, log_root))
        estimate = diag.estimate
    guest.reset_at_ns = None
    _reset_session_guest(item, guest)
    _mark_test_start(item, guest)
    # the test's start by the guest's own clock for the kernel-log check at the
    # session's end: the reset's (the agent's CLOCK_MONOTONIC), exact; the
    # heartbeats' estimate is early by their delivery (hundreds of ms under load: a
    # splat in an earlier test's last moments was blamed on this one)
    start = guest.reset_at_ns / 1e9 if guest.reset_at_ns is not None else estimate
    if start is not None and guest.machine is not None:
        config.stash.setdefault(_TIMELINE, []).append((guest.machine, start, item.nodeid))


def _taken_at_run_time(guest: Any) -> None:
    """The session guest *guest* was just taken through ``request.getfixturevalue`` by the
    test being run or a function-scoped fixture of its, which does not name it (not in
    its closure: ``irqlab_guest_alive`` did nothing for it): it gets the same as one that
    names it (:func:`_session_guest_for`), once; a test with a guest of its own, or the
    marker, fails there (:func:`_one_guest_at_fixture_setup`).  Taken so by a
    wider-scoped fixture, it is replaced if dead (as :func:`pytest_fixture_setup` does
    for one that names it), and the rest is said after the test
    (:func:`_session_guest_taken_at_run_time`)."""
    __tracebackhide__ = hide_test_frame
    if not _RUNNING:
        return
    item = _RUNNING[-1]
    if "irqlab_guest" in getattr(item, "fixturenames", ()) or item.stash.get(_TAKEN, False):
        return
    if any(scope != "function" for scope in _SETTING_UP):
        revive(guest, item.config, item.nodeid.split("::")[0])
        return
    item.stash[_TAKEN] = True
    _one_guest_at_fixture_setup("irqlab_guest", item)  # beside its own, under the marker
    _session_guest_for(item, guest, uses=True)


def _watch_takes_at_run_time(fixturedef: pytest.FixtureDef[Any]) -> None:
    """Have :func:`_taken_at_run_time` see every later take of the session fixture
    *fixturedef* (set up already: pytest returns its value with no hook of ours to see
    it).  pytest runs ``FixtureDef.execute`` for every test, or fixture of its, that
    takes the fixture (its closure's at the test's setup, else at
    ``request.getfixturevalue``; once per test): this instance's is wrapped
    (tests/unit/test_plugin_guest_via_fixture.py pins it)."""
    if "execute" in vars(fixturedef):  # wrapped already
        return
    execute = fixturedef.execute

    def watched(request: pytest.FixtureRequest) -> Any:
        __tracebackhide__ = True
        value = execute(request)  # type: ignore[arg-type]  # the SubRequest it gets
        _taken_at_run_time(value)
        return value

    setattr(fixturedef, "execute", watched)  # noqa: B010  # mypy: a method's assignment


@pytest.fixture
def irqlab_agent(
    irqlab_guest: Guest, irqlab_guest_alive: Guest | None
) -> Generator[AgentClient, None, None]:
    """The session's agent, reset: no armed paths or open files, device counters zero
    (by the autouse ``irqlab_guest_alive``, as for every test that takes the session
    guest: it replaced one an earlier test killed first, and replaces one an earlier
    test left frozen, whose verdict, the heartbeat's, comes during the reset)."""
    __tracebackhide__ = hide_test_frame
    client = irqlab_guest.agent
    yield client
    _check_path_errors(irqlab_guest, client)


def _reset_session_guest(item: pytest.Item, guest: Guest) -> None:
    """:meth:`Guest.reset` of the session guest; one that died or froze before this test
    did anything in it (an earlier test froze it: nothing knew it when this test's setup
    began, and the health watch's verdict came during the reset, failing this test's
    setup with the earlier test's fault) is replaced (:func:`revive`), and reset.  A
    reset that fails otherwise (an earlier test left the guest in a state it cannot
    undo) fails the test's setup with :func:`_reset_failed`'s words."""
    __tracebackhide__ = hide_test_frame
    from irqlab.vm.health import GuestFault

    stash = item.config.stash
    failed: str | None = None
    try:
        try:
            guest.reset()
        except GuestFault:
            with _blaming_the_test_before(stash):
                if revive(guest, item.config, item.nodeid.split("::")[0]) is None:
                    raise
            guest.reset()
    except GuestFault:
        raise  # the guest died: its fault's own report
    except IrqlabError as e:
        failed = _reset_failed(e, stash.get(_RESET_FOR, None))
        if stash.get(_NEW_FOR_UNRESETTABLE, False):  # another would be restored the same
            failed += "\n(not replaced again: the new session guest could not be reset either)"
        else:
            failed += _replace_unresettable(item, guest, e)
    if failed is not None:  # outside the except: the reset's error is in it, not chained
        pytest.fail(failed, pytrace=False)
    stash[_RESET_FOR] = item.nodeid
    stash[_NEW_FOR_UNRESETTABLE] = False


def _replace_unresettable(item: pytest.Item, guest: Guest, error: BaseException) -> str:
    """The session guest that *error* says could not be reset is replaced
    (:func:`revive`), so that this test's setup is the one that fails for it, not each
    later test's too (every later test of the session errored at its setup, in the
    other files of its xdist worker as well); what to add to the failure.  Once: a
    replacement that cannot be reset either (what the reset cannot do is in the guest's
    configuration, or a restore brings it back) is not replaced again (it was, at every
    later test's setup: a restore each, to fail the same)."""
    first = str(error).splitlines()[0] if str(error) else ""
    first = first.split("; kernel messages", 1)[0].rstrip(":")  # their lines follow
    try:
        with _blaming_the_test_before(item.config.stash):
            why = f"{type(error).__name__}: {first}"
            revive(guest, item.config, item.nodeid.split("::")[0], unresettable=why)
    except Exception as e:  # the failure says it; the next test's setup tries again
        return f"\n(replacing the session guest failed too: {type(e).__name__}: {e})"
    item.config.stash[_NEW_FOR_UNRESETTABLE] = True
    return "\nthe session guest was replaced by a new one for the tests after this one"


@contextlib.contextmanager
def _blaming_the_test_before(stash: pytest.Stash) -> Iterator[None]:
    """A replacement during a test's setup names the last test to use the guest before
    this one (what :func:`revive` says), not this one."""
    this = stash.get(_LAST_USER, None)
    if _USER_BEFORE in stash:
        stash[_LAST_USER] = stash[_USER_BEFORE]
    try:
        yield
    finally:
        if this is not None:
            stash[_LAST_USER] = this


def _reset_failed(error: BaseException, reset_for: str | None) -> str:
    """A setup's failure for the session guest's reset that raised *error* (not a
    death): said as the reset's, naming the last test it was reset for (*reset_for*,
    None: none since the guest started), which left the guest so, or a test before
    it; not the reset's source (pytest showed ``Guest.reset``'s 35 lines, docstring
    and all, at each later test's setup, and named no earlier test)."""
    if reset_for is None:
        since = "; no test ran in it before (it is new)"
    else:
        since = (
            f"; the last test it was reset for: {reset_for} (what a test changes in the "
            "guest stays for the next test, e.g. a driver it unbound or a process it left "
            "holding a node: undo it there, or give that test irqlab_fresh_guest)"
        )
    return (
        f"the session guest could not be reset for this test{since}:\n"
        f"{type(error).__name__}: {error}"
    )


@pytest.fixture
def irqlab_device(irqlab_guest: Guest, irqlab_agent: AgentClient) -> DeviceControl:
    """The session guest's device from the host (QMP): ``push``, ``pulse``,
    ``set_lines``, ``edges``, ``burst``, ``counters``, ``wait_counters``
    (:class:`irqlab.testing.helpers.DeviceControl`)."""
    from irqlab.testing.helpers import DeviceControl

    return DeviceControl(irqlab_guest)


class WaitStats(Protocol):
    def __call__(
        self, handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0
    ) -> dict[str, int]: ...


@pytest.fixture
def irqlab_wait_stats(irqlab_agent: AgentClient) -> WaitStats:
    """``wait(handle, pred, timeout=60)``: poll the driver's per-file statistics
    (GET_STATS on an agent handle) until *pred* holds; returns them."""
    from irqlab.testing.helpers import wait_file_stats

    def wait(
        handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0
    ) -> dict[str, int]:
        __tracebackhide__ = hide_test_frame  # a timeout's message is the failure
        return wait_file_stats(irqlab_agent, handle, pred, timeout)

    return wait


def _has_data(path: Path) -> bool:
    try:
        return path.is_dir() or path.stat().st_size > 0
    except OSError:
        return False


def diagnostics_title(guest_name: str, dest: Path) -> str:
    """The title of a guest's diagnostics in a failure's report: which guest, in words
    that mean something in any project (its name is the harness's, e.g. ``e2e``)."""
    own = dest.name == FRESH_DIR
    which = "the test's own guest" if own else "the session guest"
    return f"irqlab diagnostics of {which} ({guest_name!r})"


def _add_section(report: pytest.TestReport, title: str, text: str) -> None:
    """A titled section of *report*'s failure text: the terminal shows it after the
    traceback, and pytest's JUnit XML has it in the test's ``<failure>`` or ``<error>``
    element (whatever ``junit_logging`` says: the report's own sections are written
    only as captured output, and by default not at all).  A failure without a
    traceback's representation keeps it among the report's sections."""
    add = getattr(report.longrepr, "addsection", None)
    if callable(add):
        add(title, text)
    else:
        report.sections.append((title, text))


LOG_DIR_PROPERTY = "irqlab_log_dir"  # the JUnit run's property: where irqlab_log are


def _below_log_dir(path: Path) -> str:
    """*path* relative to the log directory (``$IRQLAB_LOG_DIR``), else as it is."""
    try:
        return str(path.resolve().relative_to(paths.log_dir()))
    except ValueError:
        return str(path)


def _junit_log_dir(session: pytest.Session) -> None:
    """The JUnit XML (written by the controller) says once where the log directory was:
    each test's ``irqlab_log`` properties are relative to it."""
    if hasattr(session.config, "workerinput"):
        return
    for plugin in session.config.pluginmanager.get_plugins():
        add = getattr(plugin, "add_global_property", None)
        if callable(add) and type(plugin).__name__ == "LogXML":
            add(LOG_DIR_PROPERTY, str(paths.log_dir()))


def _unsaved(dest: Path, error: OSError) -> str:
    return f"not saved into {dest}: {error.strerror or error}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    if report.when == "call" and report.passed:
        item.stash[_CALL_PASSED] = True
    if not report.failed:
        return report
    saved: list[Path] = []
    machines = item.stash.get(_MACHINES, [])
    if machines:
        _add_section(
            report,
            "irqlab logs",
            "\n".join(f"{m.config.name}: {m.describe_logs()}" for m in machines),
        )
        saved += [m.paths.log_dir for m in machines if m.paths is not None]
    # the guests' diagnostics, once per test: on the first of its phases that fails
    # (a fixture's setup, the test, a teardown); what they wrote is listed below
    diagnosed: list[tuple[str, str]] = []
    diag_files: list[Path] = []
    diagnosed_now = not item.stash.get(_DIAGNOSED, False)
    if diagnosed_now:
        item.stash[_DIAGNOSED] = True
        for diag, dest in item.stash.get(_DIAGNOSTICS, []):
            try:
                text, files = diag.collect(dest)
            except OSError as e:
                text, files = _unsaved(dest, e), []
            diag_files += files
            diagnosed.append((diagnostics_title(diag.guest.config.name, dest), text))
    # A log directory that cannot be written (its filesystem full) loses the logs, not
    # the run: an error raised here was pytest's INTERNALERROR, and no test ran after.
    guest_logs = item.stash.get(_GUEST_LOGS, None)
    if guest_logs is not None:
        slicer, dest = guest_logs
        try:
            files = slicer.save(dest)
        except OSError as e:
            files = []
            _add_section(report, "irqlab guest logs (this test's part)", _unsaved(dest, e))
        else:
            # an empty slice (nothing on the console while the test ran) is no lead
            files = [f for f in [*files, *diag_files] if f.parent == dest and _has_data(f)]
            _add_section(
                report,
                "irqlab guest logs (this test's part)",
                "\n".join(str(f) for f in files) or "(all empty: nothing logged meanwhile)",
            )
        saved += files
    # the replacements while this test's file ran (or outside any file): what its
    # module- or class-scoped fixtures set up before one is gone; another file's are not
    # this test's story
    here = item.nodeid.split("::")[0]
    revivals = [m for where, m in item.config.stash.get(_REVIVALS, []) if where in ("", here)]
    took = "irqlab_guest" in getattr(item, "fixturenames", ()) or item.stash.get(_TAKEN, False)
    if revivals and took:
        _add_section(
            report,
            "irqlab: the session guest was replaced during this run",
            "\n".join(revivals) + "\nWhat earlier tests set up in the guest before a "
            "replacement is gone (module-, class- and session-scoped fixtures that took "
            "the session guest were set up again in the new one).",
        )
    for title, text in diagnosed:
        _add_section(report, title, text)
    built = item.stash.get(_BUILT, []) if diagnosed_now else []  # once, as the diagnostics
    if built:
        texts = []
        for guest in built:
            text, runs = built_guest_report(guest)
            texts.append(text)
            saved += runs
        _add_section(report, "irqlab guests the test built itself", "\n".join(texts))
    saved += [f for f in [*diag_files, *item.stash.get(_MORE_LOGS, [])] if _has_data(f)]
    # log paths as JUnit properties (the junitxml plugin writes the teardown report's),
    # relative to the log directory (the run's property irqlab_log_dir): the same
    # after the logs were downloaded elsewhere
    for path in dict.fromkeys(saved):
        prop = ("irqlab_log", _below_log_dir(path))
        if prop not in item.user_properties:
            item.user_properties.append(prop)
            report.user_properties.append(prop)
    return report
