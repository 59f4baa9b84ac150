"""Parallel and sharded test runs: pytest-xdist workers and CI shards.

Loaded through its own ``pytest11`` entry point (``irqlab_parallel``), beside the
fixtures of :mod:`irqlab.testing.plugin`:

- **pytest-xdist** (``pytest -n N``): every worker is a process of its own with its
  own guests (one session guest per worker, restored from the shared ready-state
  snapshot).  The controller names the run's log directory once
  (``<log dir>/pytest-<stamp>-<pid>``) and hands it to the workers, which log into
  ``<run>/<worker id>/`` (``gw0``, ``gw1``, ...); QEMU's sockets are in per-process
  temp directories (``irqlab-<pid>-*``) and the SSH forward's port is bound by QEMU
  itself, so workers share nothing but the read-only build cache.
- **Shards** (``--shard K/N``): run only the K-th of N slices of the collected tests
  (1-based), so that a CI matrix can split a suite across machines without a
  scheduler of ours.  Tests are dealt in the collection order, each to the emptiest
  slice (round-robin when nothing is grouped), so each shard gets a share of every
  module; a group stays in one shard.  A shard left with none while the others have
  some passes (status 0, said in one line), not pytest's 5 for "no tests collected".
- **Groups**: a test that uses a fixture of module, class or package scope (a guest
  booted for a module, a bench run whose result several tests check) is marked
  ``xdist_group("<that fixture's owner>")``, so that under ``--dist loadgroup`` the
  tests sharing that setup run on one worker, which pays for it once.  Tests with a
  guest of their own (function scope: a restore, half a second) are not grouped:
  any worker runs them as cheaply.  Shards keep a group together too.
- :func:`default_workers`: how many workers a machine suits (one per usable core).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from irqlab import notice, paths

__all__ = [
    "RUN_DIR_KEY",
    "WORKER_ENV",
    "config_worker_id",
    "default_workers",
    "forward_interrupt",
    "parse_shard",
    "run_log_dir",
    "shard_items",
    "worker_count",
    "worker_id",
]

RUN_DIR_KEY = "irqlab_run_dir"  # workerinput key: the run's log directory, named once
# What pytest-xdist sets in a worker's environment: the worker's id and the count.  An
# inner pytest run that inherits them takes itself for a worker (its guest 'e2e-gwN').
WORKER_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")


def usable_cpus() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    from irqlab.vm.loadscale import usable_cores

    return usable_cores()


def default_workers(cpus: int | None = None) -> int:
    """Workers for ``pytest -n`` on this machine: one per usable core (each guest's
    vCPU is one busy host thread under TCG, and a KVM vCPU wants a core too); 1 where
    there is only one core (then pytest runs without xdist)."""
    n = usable_cpus() if cpus is None else cpus
    return max(1, n)


def worker_id() -> str | None:
    """This process's xdist worker id (``gw0``, ...), or None outside xdist workers."""
    return os.environ.get(WORKER_ENV[0]) or None


def config_worker_id(config: pytest.Config) -> str | None:
    """The xdist worker id (``gw0``, ...) of the run of *config* when it is a worker's,
    else None: by its ``workerinput``, not the environment (an inner pytest run a
    worker's test starts inherits it, and is no worker)."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput.get("workerid", "?")) if workerinput is not None else None


def worker_count() -> int:
    """How many xdist workers this run has (1 without xdist)."""
    try:
        return max(1, int(os.environ.get(WORKER_ENV[1], "1")))
    except ValueError:
        return 1


def _new_run_dir() -> Path:
    return paths.log_dir() / f"pytest-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def run_log_dir(config: pytest.Config) -> Path:
    """This process's log directory: the run's ``pytest-<stamp>-<pid>`` directory, and
    below it ``<worker id>/`` in an xdist worker.  Only the controller (or a run
    without workers) prunes older runs, so no worker removes a sibling's directory."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        run = Path(workerinput.get(RUN_DIR_KEY) or _new_run_dir())
        d = run / str(workerinput.get("workerid", worker_id() or "worker"))
    else:
        d = _controller_run_dir(config)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a bare PermissionError at each test's setup said no more
        from irqlab.vm.machine import LogDirError

        raise LogDirError.cannot_make("the test run's log directory", d.parent, e) from None
    if workerinput is None:
        _link_latest(d)
    _ignore_default_logs(config, d)
    return d


def _link_latest(run: Path) -> None:
    """``<log dir>/latest`` -> this run's directory (replaced at once: never missing for
    a reader; a filesystem without symlinks has none)."""
    link = run.parent / paths.LATEST_RUN
    tmp = run.parent / f".{paths.LATEST_RUN}-{os.getpid()}"
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run.name, target_is_directory=True)
        os.replace(tmp, link)


def mark_outcome(config: pytest.Config, exitstatus: int, how: str = "") -> None:
    """The controller's run directory (when the run made one) says how the run ended:
    ``passed``, else how and the status: ``tests failed (exit status 1)``,
    ``interrupted (exit status 2)``, ... (pruning keeps those in preference).  A run
    pytest's interrupt ended (Ctrl-C, SIGTERM) is never ``passed``, though a report of
    it that raised (its terminal's reader gone) left pytest's status 0.  *how*: how it
    ended when the status does not say (an error that left pytest: :func:`_escaped`)."""
    run = config.stash.get(_RUN_DIR, None)
    if run is None or hasattr(config, "workerinput") or not run.is_dir():
        return
    meant = config.stash.get(_INTERRUPT, None)  # the status pytest's interrupt meant
    if exitstatus == 0 and meant is not None:
        exitstatus = meant
    if not how:
        try:
            how = pytest.ExitCode(exitstatus).name.lower().replace("_", " ")
        except ValueError:
            how = "ended"
    text = "passed" if exitstatus == 0 else f"{how} (exit status {int(exitstatus)})"
    if config.stash.get(_MARKED, None) == text:  # the process's end: as the session's
        return
    config.stash[_MARKED] = text
    with contextlib.suppress(OSError):  # a full disk loses the mark, not the run
        (run / paths.RUN_OUTCOME).write_text(text + "\n")
    _link_latest(run)  # under xdist, the first time: its controller logs nothing itself


_MARKED = pytest.StashKey[str]()  # the outcome written
# The status pytest's interrupt meant the run to end with (2; pytest.exit()'s own),
# once its KeyboardInterrupt hook ran (set before any other plugin's runs)
_INTERRUPT = pytest.StashKey[int]()


class _Interrupts:
    """Registered in the controller: pytest's interrupt of the run, before any other
    plugin hears of it (one whose report of it raises, as a write to a pipe whose
    reader went away does, leaves pytest's status 0: the run was marked ``passed``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        meant = getattr(excinfo.value, "returncode", None)  # pytest.exit()'s
        self.config.stash[_INTERRUPT] = pytest.ExitCode.INTERRUPTED if meant is None else meant


def _escaped(config: pytest.Config, e: BaseException) -> None:
    """Mark the run's outcome when *e* left pytest's main: an error ends the process
    with status 1 (pytest's ``console_main``'s for a broken pipe, Python's for the
    others), ``interrupted`` when it came during the run's interrupt; a
    KeyboardInterrupt (a signal during the session's end) ends it by SIGINT, 130 as a
    shell says."""
    if isinstance(e, KeyboardInterrupt):
        mark_outcome(config, 128 + signal.SIGINT, "interrupted")
    elif isinstance(e, Exception):
        during = _INTERRUPT in config.stash
        mark_outcome(config, 1, "interrupted" if during else f"ended by {type(e).__name__}")


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, int, int]:
    """The run's outcome as the process ends: what another plugin's session finish
    did to the status after ours marked it, or an error that left pytest (its
    terminal's reader gone: status 1, though pytest's was 0 or 2)."""
    try:
        status = yield
    except BaseException as e:
        _escaped(config, e)
        raise
    mark_outcome(config, status)
    return status


DEFAULT_DIR = ".irqlab"  # under the rootdir: the default log directory's parent


def _ignore_default_logs(config: pytest.Config, run: Path) -> None:
    """A ``.gitignore`` of ``*`` in ``<rootdir>/.irqlab`` once logs go there (as pytest
    does for its ``.pytest_cache``): a user's ``git status`` listed its logs.  Not
    when the run's logs go elsewhere (a ``.irqlab`` of the user's own stays as it is)."""
    top = Path(config.rootpath) / DEFAULT_DIR
    ignore = top / ".gitignore"
    if run.resolve().is_relative_to(top.resolve()) and not ignore.exists():
        # a read-only checkout: nothing to keep out of git then
        with contextlib.suppress(OSError):
            ignore.write_text("# made by irqlab's pytest plugin: its logs\n*\n")


_RUN_DIR = pytest.StashKey[Path]()


def _controller_run_dir(config: pytest.Config) -> Path:
    d = config.stash.get(_RUN_DIR, None)
    if d is None:
        paths.prune_logs()
        d = config.stash[_RUN_DIR] = _new_run_dir()
    return d


# The xdist controller's worker processes, for forward_interrupt
_WORKER_PROCS = pytest.StashKey[list["subprocess.Popen[bytes]"]]()


def _worker_process(node: object) -> subprocess.Popen[bytes] | None:
    """The local process of xdist worker *node*: its execnet popen gateway's (what
    ``pytest -n N`` starts; None for another kind of gateway, such as ssh)."""
    io = getattr(getattr(node, "gateway", None), "_io", None)
    popen = getattr(io, "popen", None)
    return popen if isinstance(popen, subprocess.Popen) else None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: every worker logs below the one run directory named here, and
    its process is kept for :func:`forward_interrupt`."""
    config: pytest.Config = node.config  # type: ignore[attr-defined]
    node.workerinput[RUN_DIR_KEY] = str(_controller_run_dir(config))  # type: ignore[attr-defined]
    popen = _worker_process(node)
    if popen is not None:
        config.stash.setdefault(_WORKER_PROCS, []).append(popen)


def forward_interrupt(config: pytest.Config, signum: int) -> None:
    """xdist controller: *signum*, which interrupts the run, to each of its workers
    still running, as a signal to the run's process group (a terminal's Ctrl-C,
    ``timeout``) reaches them: each interrupts its test and closes its guests at once.
    A signal to the controller alone (``kill PID``, an IDE's stop) left them running
    their tests, new ones too, until xdist's teardown sent execnet's end 10 s or more
    later, with their QEMUs.  A worker that has the same signal from the group already
    takes this one as the same stop (the plugin's ``REPEATED_SIGNAL_S``).  Called in
    the signal handler: no wait, no reaping (a worker already reaped is skipped)."""
    for popen in config.stash.get(_WORKER_PROCS, ()):
        if popen.returncode is None:
            with contextlib.suppress(OSError):
                os.kill(popen.pid, signum)


# -- shards ---------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; a ValueError says what is wrong."""
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        kk, nn = int(k), int(n)
    except ValueError:
        raise ValueError(f"--shard takes K/N (e.g. 2/4), not {text!r}") from None
    if not 1 <= kk <= nn:
        raise ValueError(f"--shard {text}: K must be between 1 and N")
    return kk, nn


def _group(item: pytest.Item) -> str | None:
    for mark in item.iter_markers("xdist_group"):
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return None


def shard_items(
    items: list[pytest.Item], k: int, n: int
) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected): the K-th of N slices of *items* (1-based).  Tests are dealt
    in collection order, each to the slice with the fewest tests so far (round-robin
    when nothing is grouped); the tests of one ``xdist_group`` go together."""
    units: dict[str, list[pytest.Item]] = {}
    for it in items:
        units.setdefault(_group(it) or it.nodeid, []).append(it)
    sizes = [0] * n
    mine: set[str] = set()
    for key, unit in units.items():
        target = sizes.index(min(sizes))
        sizes[target] += len(unit)
        if target == k - 1:
            mine.add(key)
    kept = [it for it in items if (_group(it) or it.nodeid) in mine]
    dropped = [it for it in items if (_group(it) or it.nodeid) not in mine]
    return kept, dropped


SHARED_SCOPES = ("module", "class", "package")


def _owner(item: pytest.Item, scope: str) -> pytest.Collector | None:
    if scope == "class":
        return item.getparent(pytest.Class)
    if scope == "package":
        return item.getparent(pytest.Package)
    return item.getparent(pytest.Module)


def shared_setup_group(item: pytest.Item) -> str | None:
    """The group of a test that uses a fixture of module, class or package scope: the
    node that owns that setup (e.g. ``tests/e2e/test_boot.py``); None otherwise."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name) or ()
        if defs and defs[-1].scope in SHARED_SCOPES:
            owner = _owner(item, defs[-1].scope)
            return owner.nodeid if owner is not None else item.nodeid.split("::")[0]
    return None


def _group_suffix(item: pytest.Item) -> str | None:
    """``@<names>`` as pytest-xdist's loadgroup appends it to a grouped test's nodeid."""
    names = {
        str(m.args[0] if m.args else m.kwargs.get("name", "default"))
        for m in item.iter_markers("xdist_group")
    }
    return "@" + "_".join(sorted(names)) if names else None


def _suffix_nodeid(item: pytest.Item, suffix: str) -> None:
    """Give *item* the nodeid ``<nodeid>@<group>`` the loadgroup scheduler groups by.

    pytest-xdist 3.8 sets ``item._nodeid``, but pytest 9 computes ``nodeid`` from the
    structured ``item._id``: the suffix never reaches the controller and ``--dist
    loadgroup`` silently schedules test by test.  This sets the id pytest 9 reads."""
    if item.nodeid.endswith(suffix) or not hasattr(item, "_id"):
        return
    from _pytest.nodeid import NodeId

    item.stash[_PLAIN_NODEID] = item.nodeid
    item._id = NodeId.parse(item.nodeid + suffix)


# A grouped test's nodeid before the group suffix (set in the worker, where the suffix
# is added), and the report attribute that carries it to the controller
_PLAIN_NODEID = pytest.StashKey[str]()
PLAIN_NODEID_ATTR = "irqlab_nodeid"


class _SharedSetupGroups:
    # A wrapper, and the outermost (registered after pytest's cache plugin): the marks
    # go on before everything else (xdist reads them), the suffix after everything
    # else, --lf's selection included, which then compares the plain ids the
    # controller recorded (see pytest_runtest_logreport below)
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        for item in items:
            if _group(item) is None:
                group = shared_setup_group(item)
                if group is not None:
                    item.add_marker(pytest.mark.xdist_group(group))
        yield
        if getattr(config.option, "loadgroup", False):  # an xdist worker under loadgroup
            for item in items:
                suffix = _group_suffix(item)
                if suffix is not None:
                    _suffix_nodeid(item, suffix)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In a worker: a grouped test's report carries its plain nodeid to the controller."""
    report = yield
    plain = item.stash.get(_PLAIN_NODEID, None)
    if plain is not None:
        setattr(report, PLAIN_NODEID_ATTR, plain)
    return report


class _PlainReportIds:
    """Registered in the xdist controller only (a worker checks each report's nodeid
    against its item's, the suffixed one)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before the cache (--lf), JUnit and the terminal see it: a grouped test's
        report under its plain nodeid, as in a run without xdist (with the ``@<group>``
        suffix, --lf missed those failures and JUnit names changed)."""
        plain = getattr(report, PLAIN_NODEID_ATTR, None)
        if isinstance(plain, str):
            report.nodeid = plain


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irqlab")
    group.addoption(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only the K-th of N round-robin slices of the collected tests (1-based; "
        "for a CI matrix): every shard gets a share of every module",
    )


# How long a failed send waits for the controller's exit before it is taken for another
# failure (the kernel closes a process's pipes before its exit is seen on its pidfd).
CONTROLLER_END_S = 1.0


def guarded_send(
    send: Callable[..., None], controller_ended: Callable[[], bool]
) -> Callable[..., None]:
    """xdist's ``sendevent`` *send*, with an ``OSError`` (execnet's "cannot send") dropped
    when *controller_ended* says the controller is gone: nobody is left to hear it."""

    def sendevent(name: str, **kwargs: object) -> None:
        try:
            send(name, **kwargs)
        except OSError:
            if not controller_ended():
                raise

    return sendevent


def _send_nothing(name: str, **kwargs: object) -> None:
    """:meth:`_ControllerWatch._mute_sends`: an event for a controller that is gone."""


class _ControllerWatch:
    """Registered in an xdist worker: when the controller (the process that started the
    worker) ends without shutting it down (SIGKILLed, or it crashed), the worker stops
    as on SIGTERM (the plugin's teardown: its tests interrupted, its guests closed), at
    once.  It went on with its test and its guest for about 16 s: execnet sees the end
    of its pipe at once but waits 5 s for the test to finish, then sends the worker a
    SIGINT (lost where SIGINT is ignored: a run started in the background by a shell)
    and 10 s later ends the process with ``os._exit``.  The controller's exit is waited
    for on its pidfd (where there is none, old kernels, execnet's own end stays)."""

    def __init__(self, worker: str, config: pytest.Config) -> None:
        import threading

        from irqlab.vm.proc import pidfd

        self.worker = worker
        self.config = config
        self.controller = os.getppid()
        self.gone = False  # the controller ended: this worker was sent SIGTERM
        self._fd = pidfd(self.controller)
        self._stop_r, self._stop_w = os.pipe()  # written at unconfigure: the watch ends
        self._thread: threading.Thread | None = None
        self._guard_sends()
        if self._fd is not None:
            self._thread = threading.Thread(
                target=self._watch, name="irqlab-controller-watch", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        import select

        assert self._fd is not None
        # gone before its pidfd was opened: this worker's parent is another process now
        if os.getppid() == self.controller:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
        self.gone = True
        self._mute_sends()
        os.kill(os.getpid(), signal.SIGTERM)

    def _guard_sends(self) -> None:
        """A send that fails because the controller has just ended is dropped: the
        worker's next report (a test's setup, say) found the channel broken before this
        watch saw the end, and its ``OSError: cannot send`` ended the run as pytest's
        internal error (status 3) without the notice, the worker's test not
        interrupted by the watch's SIGTERM but by the failure (about 1 run in 10 of
        tests/unit/test_xdist_controller_killed.py on a loaded machine).  Any other
        failed send is raised as it was."""
        for plugin in self.config.pluginmanager.get_plugins():
            if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "sendevent"):
                plugin.sendevent = guarded_send(plugin.sendevent, self._controller_ended)

    def _controller_ended(self) -> bool:
        """Whether the controller has ended, or does within :data:`CONTROLLER_END_S` (its
        pipes close a moment before its exit is seen)."""
        import select

        if self._fd is None:
            return os.getppid() != self.controller
        return bool(select.select([self._fd], [], [], CONTROLLER_END_S)[0])

    def _mute_sends(self) -> None:
        """Nobody listens any more: xdist's worker sends the reports of its stop and its
        end to the controller on a channel that is closed, and each worker printed a
        traceback ("PluggyTeardownRaisedWarning ... OSError: cannot send (already
        closed?)").  Its ``WorkerInteractor.sendevent`` (pytest-xdist's, pinned) sends
        nothing from now on."""
        for plugin in self.config.pluginmanager.get_plugins():
            if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "sendevent"):
                plugin.sendevent = _send_nothing

    def pytest_keyboard_interrupt(self) -> None:
        """Said by the main thread (this thread's line went into pytest's capture)."""
        if self.gone:
            notice.say(
                f"irqlab: xdist worker {self.worker}: the pytest controller (pid "
                f"{self.controller}) ended without shutting it down; the worker stopped "
                "its tests and guests as on SIGTERM"
            )

    def pytest_unconfigure(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            if fd is not None:
                os.close(fd)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SharedSetupGroups(), "irqlab-shared-setup-groups")
    worker = config_worker_id(config)
    if worker is not None:
        config.pluginmanager.register(_ControllerWatch(worker, config), "irqlab-controller-watch")
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Interrupts(config), "irqlab-run-interrupts")
        config.pluginmanager.register(_PlainReportIds(), "irqlab-plain-report-ids")
        config.pluginmanager.register(_WorkerCounts(config), "irqlab-shard-worker-counts")
    # known with --strict-markers also when xdist is absent or disabled (-p no:xdist)
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker")
    shard = config.getoption("--shard", None)
    if shard:
        try:
            parse_shard(shard)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None


# How many tests were selected before the shard took its slice (the most any worker
# saw under xdist, where the controller collects nothing itself)
_SELECTED = pytest.StashKey[int]()
_SELECTED_KEY = "irqlab_shard_selected"  # workeroutput key: a worker's count


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("--shard", None)
    if not shard:
        return
    config.stash[_SELECTED] = len(items)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller decides the status
        workeroutput[_SELECTED_KEY] = len(items)
    kept, dropped = shard_items(items, *parse_shard(shard))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


class _WorkerCounts:
    """Registered in the xdist controller: what its workers selected before sharding."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)  # xdist's: absent without it (-p no:xdist)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        seen = output.get(_SELECTED_KEY)
        if isinstance(seen, int):
            self.config.stash[_SELECTED] = max(self.config.stash.get(_SELECTED, 0), seen)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _shard_status(session, exitstatus)
    mark_outcome(session.config, session.exitstatus)


def _shard_status(session: pytest.Session, exitstatus: int) -> None:
    """A shard left with no test while the others have some (more shards than tests)
    passes, and says so (pytest's status 5, "no tests collected", failed a CI job with
    nothing wrong); with nothing selected at all the status stays 5."""
    config = session.config
    shard = config.getoption("--shard", None)
    if (
        not shard
        or hasattr(config, "workerinput")
        or exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        return
    selected = config.stash.get(_SELECTED, 0)
    if selected == 0:
        return
    session.exitstatus = pytest.ExitCode.OK
    line = (
        f"irqlab: shard {shard} got no tests: the {selected} selected all went to the other "
        "shards (more shards than tests); exit status 0"
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> str | None:
    shard = config.getoption("--shard", None)
    return f"irqlab: shard {shard}" if shard else None
