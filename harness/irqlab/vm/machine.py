"""Run one QEMU process with QMP (and optionally qtest and a serial console), always cleaned up.

>>> with Machine(MachineConfig(binary=qemu, args=["-machine", "q35"], qtest=True)) as m:
...     m.qmp("query-status")
...     m.qtest.readl(0xfe000000)

Sockets live in a private 0700 temporary directory; logs (QEMU's stdout and
stderr, the console, the qtest log, the command line) in a per-run directory
below :func:`irqlab.paths.log_dir` that is kept.  QEMU runs in its own process
group with a parent-death signal (:mod:`irqlab.vm.proc`); :meth:`Machine.close`
asks it to ``quit`` over QMP, then SIGTERMs, then SIGKILLs its group.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import itertools
import os
import re
import selectors
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from irqlab.build import cache
from irqlab.errors import IrqlabError, hide_frame
from irqlab.paths import hold_run_dir, log_dir, pid_runs, release_run_dir
from irqlab.sigsafe import critical
from irqlab.vm import proc
from irqlab.vm.console import Console
from irqlab.vm.health import file_tail
from irqlab.vm.qmp.client import SyncQMP
from irqlab.vm.qmp.errors import QMPFailure, QMPNoReply
from irqlab.vm.qtest import QTest

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "LogDirError",
    "Machine",
    "MachineConfig",
    "MachineError",
    "MachineTimeout",
    "QemuExited",
    "RunPaths",
    "build_argv",
    "make_sock_dir",
    "remove_sock_dir",
    "remove_stale_sock_dirs",
    "sock_parent",
]

_counter = itertools.count(1)


class MachineError(IrqlabError, RuntimeError):
    """QEMU failed to start, died, or did not stop; the message names the log files."""


class MachineTimeout(MachineError, TimeoutError):
    """QEMU did not answer QMP within the time limit (a command, a pipelined batch):
    frozen, stopped, or busy longer than allowed."""


def _qmp_error(e: QMPFailure, message: str) -> MachineError:
    """The MachineError saying *message* for the QMP failure *e*: a MachineTimeout when
    QEMU did not answer in time."""
    return (MachineTimeout if isinstance(e, QMPNoReply) else MachineError)(message)


def _fd_limit_hint(e: BaseException) -> str:
    """What to add to a start's failure that ran out of file descriptors (EMFILE, or the
    system's ENFILE), else "": the limit to raise, and what it is now."""
    if not isinstance(e, OSError) or e.errno not in (errno.EMFILE, errno.ENFILE):
        return ""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if e.errno == errno.ENFILE:
        return " (the system's table of open files is full: fs.file-max)"
    return f" (this process may open at most {soft} files: raise `ulimit -n`)"


class LogDirError(MachineError):
    """The run's log directory could not be made (read-only, full, not a directory):
    said as that, not as QEMU failing to start."""

    @classmethod
    def cannot_make(
        cls, what: str, root: Path, e: OSError, setting: str | None = None
    ) -> LogDirError:
        """*what* (in the log directory *root*, which *setting* named; None: the
        defaults') could not be made: *e*."""
        setting = setting or "IRQLAB_LOG_DIR, or pytest's --irqlab-log-dir,"
        return cls(
            f"cannot make {what} in {root}: {e.strerror or e} (point {setting} at a "
            "writable directory)"
        )


class QemuExited(MachineError):
    """QEMU exited by itself while starting, typically refusing its command line (a bad
    device property); :attr:`said` is the end of its output (its own error message),
    :attr:`status` its exit status, :attr:`logs` where the logs are."""

    def __init__(self, message: str, *, status: int | None, said: str, logs: str) -> None:
        super().__init__(message)
        self.status, self.said, self.logs = status, said, logs


@dataclass(frozen=True)
class MachineConfig:
    binary: Path
    args: Sequence[str] = ()  # -machine, -device, -kernel, ... (everything not plumbing)
    datadir: Path | None = None  # firmware directory, passed as -L
    accel: str | None = "tcg"  # None: pass no -accel (args decide); forced to qtest by qtest=True
    qtest: bool = False
    console: bool = True  # serial port 0 -> console log
    name: str = "qemu"
    log_root: Path | None = None  # default: irqlab.paths.log_dir()
    # what chose log_root, for the error when it cannot be written (None: the defaults)
    log_root_setting: str | None = None
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    qmp_timeout: float = 30.0


@dataclass(frozen=True)
class RunPaths:
    """Where one run's sockets and logs are."""

    sock_dir: Path
    log_dir: Path
    qmp_sock: Path = field(init=False)
    qtest_sock: Path = field(init=False)
    console_sock: Path = field(init=False)
    stderr_log: Path = field(init=False)
    console_log: Path = field(init=False)
    qtest_log: Path = field(init=False)
    cmdline: Path = field(init=False)

    def __post_init__(self) -> None:
        s, g = object.__setattr__, self.log_dir
        s(self, "qmp_sock", self.sock_dir / "qmp.sock")
        s(self, "qtest_sock", self.sock_dir / "qtest.sock")
        s(self, "console_sock", self.sock_dir / "console.sock")
        s(self, "stderr_log", g / "qemu.log")
        s(self, "console_log", g / "console.log")
        s(self, "qtest_log", g / "qtest.log")
        s(self, "cmdline", g / "cmdline.sh")


# The socket directories made here and not yet removed by close(), each with the
# descriptor of its held owner lock and the pid of the process that made it: a script
# that never closes its guest (or ends on Ctrl-C outside a with block) leaves none
# behind at exit (its QEMUs are killed by irqlab.vm.proc's own exit hook).  A child
# forked from it inherits its parent's entries and removes none of them (its exit
# removed its running parent's QEMU sockets); no at-fork hook forgets them in the
# child: CPython runs those in each QEMU's child too, between fork and exec.
class _SockDir(NamedTuple):
    fd: int  # -1: none (a temp dir without locks)
    pid: int  # the process that made it, which alone removes it


_SOCK_DIRS: dict[Path, _SockDir] = {}
# In every socket directory: flock-ed by its owner while it lives.  Another process
# that finds the owner's pid gone (from its pid namespace: a container sharing /tmp)
# still sees the lock held, and leaves the directory.
OWNER_LOCK = ".owner.lock"
# A unix socket's path: at most 107 bytes (sun_path, with its NUL).  The longest of
# ours: <parent>/irqlab-<pid>-shell<8 random>/console.sock.
SUN_PATH_MAX = 107
_LONGEST_SOCK_NAME = len(f"/irqlab-{2**22}-shell") + 8 + len("/console.sock")


def sock_parent() -> Path:
    """Where socket directories go: the temp directory ($TMPDIR), or /tmp when that
    path is too long for a unix socket's (QEMU could not bind there)."""
    tmp = Path(tempfile.gettempdir())
    if len(os.fsencode(tmp)) + _LONGEST_SOCK_NAME <= SUN_PATH_MAX:
        return tmp
    return Path("/tmp")


def make_sock_dir(kind: str = "") -> Path:
    """A new socket directory of this process (``irqlab-<pid>-<kind>...``, mode 0700) in
    :func:`sock_parent`, its owner lock held until :func:`remove_sock_dir` or exit."""
    parent = sock_parent()
    with critical():  # a Ctrl-C between the mkdir and the record left the folder behind
        d = Path(tempfile.mkdtemp(prefix=f"irqlab-{os.getpid()}-{kind}", dir=parent))
        fd = -1
        try:
            fd = os.open(d / OWNER_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
        except OSError as e:
            if fd >= 0:
                os.close(fd)
                fd = -1
            if e.errno != errno.ENOLCK:
                shutil.rmtree(d, ignore_errors=True)
                raise
            # a temp dir without locks (NFS): the stale sweep goes by pid and age alone
        _SOCK_DIRS[d] = _SockDir(fd, os.getpid())
    return d


def remove_sock_dir(d: Path) -> None:
    """Remove socket directory *d* of this process, then let go of its owner lock.  One
    a forked child inherited is its parent's: left to it."""
    made = _SOCK_DIRS.get(d)
    if made is not None and made.pid != os.getpid():
        return
    shutil.rmtree(d, ignore_errors=True)
    made = _SOCK_DIRS.pop(d, None)
    if made is not None and made.fd >= 0:
        os.close(made.fd)


@atexit.register
def _remove_own_sock_dirs() -> None:
    for d in list(_SOCK_DIRS):
        remove_sock_dir(d)


NEW_SOCK_DIR_S = 10.0


def _younger_than(d: Path, seconds: float) -> bool:
    try:
        return time.time() - d.stat().st_mtime < seconds
    except OSError:
        return False


def _owner_holds(d: Path) -> bool:
    """Whether a process holds *d*'s owner lock (False when it has none: older
    versions made none)."""
    try:
        fd = os.open(d / OWNER_LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return cache.held_elsewhere(fd)
    except OSError:  # ENOLCK (a temp dir without locks): pid and age decide alone
        return False


_SOCK_DIR = re.compile(r"^irqlab-(\d+)-[A-Za-z0-9_]+$")
# Directories of older irqlab versions carried no pid: stale once no process holds
# their sockets (none listed in /proc/net/unix) and they are older than this.
_LEGACY_SOCK_DIR = re.compile(r"^irqlab-[A-Za-z0-9_]{8}$")
LEGACY_MIN_AGE_S = 600.0


def _bound_unix_paths() -> set[str]:
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {parts[-1] for parts in (ln.split() for ln in lines) if len(parts) >= 8}


def remove_stale_sock_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove socket directories (``irqlab-<pid>-*`` in :func:`sock_parent`) whose
    owning process is gone (a killed test run) and whose owner lock nobody holds, and
    pid-less ones of older irqlab versions that are over 10 minutes old with no socket
    in use; returns what was removed.  Another user's directories are left alone (a
    non-root user cannot look into root's, and every guest start failed on one)."""
    base = tmp if tmp is not None else sock_parent()
    removed = []
    bound: set[str] | None = None
    uid = os.geteuid()
    for p in base.glob("irqlab-*"):
        try:
            st = p.lstat()
        except OSError:  # removed meanwhile
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        m = _SOCK_DIR.match(p.name)
        if m is None:
            if not _LEGACY_SOCK_DIR.match(p.name):
                continue
            try:
                age = time.time() - p.stat().st_mtime
            except OSError:
                continue
            bound = _bound_unix_paths() if bound is None else bound
            try:
                if age < LEGACY_MIN_AGE_S or any(str(s) in bound for s in p.iterdir()):
                    continue
            except OSError:
                continue
            if _removed(p):
                removed.append(p)
            continue
        if pid_runs(int(m[1])) or _owner_holds(p) or _younger_than(p, NEW_SOCK_DIR_S):
            # its owner lives (the lock: also one in another pid namespace), or it was
            # made a moment ago (its owner, in another pid namespace, may not have
            # taken the lock yet)
            continue
        if _removed(p):
            removed.append(p)
    return removed


def _removed(d: Path) -> bool:
    """Remove *d*'s tree; whether it is gone."""
    shutil.rmtree(d, ignore_errors=True)
    return not d.exists()


def _chardev_path(p: Path) -> str:
    from irqlab.build.boot import qemu_option_value  # a comma of the path: ",,"

    return qemu_option_value(str(p))


def build_argv(cfg: MachineConfig, paths: RunPaths) -> list[str]:
    """QEMU's command line for *cfg* (pure: no files touched)."""
    argv = [str(cfg.binary)]
    if cfg.datadir is not None:
        argv += ["-L", str(cfg.datadir)]
    argv += ["-nodefaults", "-no-user-config", "-display", "none"]
    accel = "qtest" if cfg.qtest else cfg.accel
    if accel is not None:
        argv += ["-accel", accel]
    argv += [
        "-chardev", f"socket,id=irqlab-qmp,path={_chardev_path(paths.qmp_sock)}",
        "-mon", "chardev=irqlab-qmp,mode=control",
    ]  # fmt: skip
    if cfg.qtest:
        argv += [
            "-qtest", f"unix:{_chardev_path(paths.qtest_sock)}",
            "-qtest-log", str(paths.qtest_log),
        ]  # fmt: skip
    if cfg.console:
        argv += [
            "-chardev", f"socket,id=irqlab-console,path={_chardev_path(paths.console_sock)}",
            "-serial", "chardev:irqlab-console",
        ]  # fmt: skip
    argv += list(cfg.args)
    return argv


class Machine:
    """A running QEMU; use as a context manager (or call :meth:`start`/:meth:`close`)."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.paths: RunPaths | None = None
        self.argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._qmp: SyncQMP | None = None
        self._qtest: QTest | None = None
        self._qtest_listener: socket.socket | None = None
        self._console: Console | None = None
        self._held: cache.Held | None = None  # the cache outputs QEMU runs from
        self._closed = False
        self._released: set[str] = set()  # close()'s steps done (one cut short is redone)
        self._finished = False  # QEMU reaped and every step of close() done
        # close() from two threads (a Guest's closer and its start's own clean-up) ran
        # at once: a false "could not be killed" (Popen.poll() says None while another
        # thread reaps it), the pidfd closed twice (the second could close another
        # thread's new file with that number); one at a time now
        self._lock = threading.RLock()
        self._closer: int | None = None  # the thread in close()
        self._start_thread: int | None = None  # the thread in start()

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Machine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _make_paths(self) -> RunPaths:
        root = self.config.log_root if self.config.log_root is not None else log_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = root / f"{self.config.name}-{stamp}-{os.getpid()}-{next(_counter)}"
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except OSError as e:
            raise LogDirError.cannot_make(
                "the guest's log directory", root, e, self.config.log_root_setting
            ) from e
        hold_run_dir(run_dir)  # a prune in this process leaves it while QEMU runs
        remove_stale_sock_dirs()
        return RunPaths(sock_dir=make_sock_dir(), log_dir=run_dir)

    def start(self) -> Machine:
        """Start QEMU with this machine's config and connect its channels (QMP, console,
        qtest); once only (:class:`MachineError`; :class:`QemuExited` when QEMU exits
        while starting, with its words)."""
        if self._proc is not None or self._closed:
            raise MachineError("a Machine can be started once")
        self._start_thread = threading.get_ident()
        try:
            self._start()
            self._start_thread = None
            if self._closed:  # by another thread meanwhile, which left this the pidfd
                raise MachineError("closed")  # said below
        except BaseException as e:
            self._start_thread = None  # the close below finishes what another one left
            closed = self._closed  # by another thread: its doing (a closed QMP loop...)
            why = self._exit_summary()
            exited = self._proc is not None and self._proc.poll() is not None
            said = self.stderr_tail()
            self.close()
            if closed and isinstance(e, Exception):
                raise MachineError(
                    f"{self.config.name}: closed (by another thread) while QEMU started"
                ) from e
            if isinstance(e, LogDirError) or not isinstance(
                e, MachineError | QMPFailure | OSError | TimeoutError
            ):
                raise
            msg = f"{self.config.name}: QEMU failed to start: {e}{why}{_fd_limit_hint(e)}"
            if exited and self._proc is not None:
                logs = self.describe_logs()
                raise QemuExited(msg, status=self._proc.returncode, said=said, logs=logs) from e
            raise MachineError(msg) from e
        return self

    def _start(self) -> None:
        cfg = self.config
        self.paths = p = self._make_paths()
        self.argv = build_argv(cfg, p)
        try:
            # its paths' bytes (a non-ASCII cache path under LC_ALL=C: UnicodeEncodeError)
            p.cmdline.write_bytes(os.fsencode(shlex.join(self.argv) + "\n"))
        except OSError as e:  # a full disk: "QEMU failed to start", and logs that are not
            with contextlib.suppress(OSError):  # empty, made just now: not left behind
                p.log_dir.rmdir()
            raise LogDirError.cannot_make(
                f"the QEMU command line {p.cmdline.name}", p.log_dir, e, cfg.log_root_setting
            ) from e
        self._qmp = SyncQMP(cfg.name, timeout=cfg.qmp_timeout)
        self._qmp.listen(p.qmp_sock)
        if cfg.qtest:
            self._qtest_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._qtest_listener.bind(str(p.qtest_sock))
            self._qtest_listener.listen(1)
        if cfg.console:
            self._console = Console(p.console_sock, p.console_log)
        # the cache outputs QEMU runs from (binary, firmware, kernel, initramfs, device
        # tree) stay while it runs: pruning leaves a held output alone
        self._held = cache.hold(cache.outputs_named(self.argv))
        with self._lock:  # a close() from another thread came before, or comes after
            if self._closed:
                raise MachineError("closed (by another thread) before QEMU started")
            with p.stderr_log.open("wb") as log:
                self._proc = proc.spawn(self.argv, stdout=log, stderr=subprocess.STDOUT)
            # QEMU's exit ends the waits for its connections at once; where there is no
            # pidfd (no os.pidfd_open: PyPy, old headers) it is looked for every
            # EXIT_POLL_S
            fd = proc.pidfd(self._proc.pid)
            self._pidfd = -1 if fd is None else fd
        deadline = time.monotonic() + cfg.start_timeout
        if self._qtest_listener is not None:
            self._qtest = QTest(self._accept_qtest(deadline), timeout=cfg.qmp_timeout)
        qemu = self._proc
        self._qmp.accept(
            max(0.1, deadline - time.monotonic()),
            fd,
            exited=None if fd is not None else lambda: qemu.poll() is not None,
        )

    def _accept_qtest(self, deadline: float) -> socket.socket:
        assert self._qtest_listener is not None and self._proc is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._qtest_listener, selectors.EVENT_READ)
            if self._pidfd >= 0:
                sel.register(self._pidfd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                nap = left if self._pidfd >= 0 else min(left, proc.EXIT_POLL_S)
                ready = [k.fileobj for k, _ in sel.select(max(0.0, nap))]
                if self._qtest_listener in ready:
                    conn, _ = self._qtest_listener.accept()
                    return conn
                if ready or self._proc.poll() is not None:
                    raise MachineError("QEMU exited before connecting to the qtest socket")
                if left <= 0:
                    raise MachineError("QEMU did not connect to the qtest socket in time")

    def _exit_summary(self) -> str:
        """Exit status, the end of QEMU's log and where the logs are (for error messages)."""
        parts = []
        if self._proc is not None and self._proc.poll() is not None:
            parts.append(f"QEMU exit status {self._proc.returncode}")
        if self.paths is not None:
            tail = file_tail(self.paths.stderr_log, 15)
            if tail:
                parts.append("QEMU said:\n" + tail)
            parts.append(self.describe_logs())
        return ("\n" + "\n".join(parts)) if parts else ""

    def stderr_tail(self, lines: int = 15) -> str:
        """The last *lines* of QEMU's own output (empty before start)."""
        return file_tail(self.paths.stderr_log, lines) if self.paths is not None else ""

    def describe_logs(self) -> str:
        """Where this machine's logs are (QEMU's output, the console), as one line."""
        if self.paths is None:
            return "no logs (not started)"
        p = self.paths
        logs = [f"qemu: {p.stderr_log}"]
        if self.config.console:
            logs.append(f"console: {p.console_log}")
        if self.config.qtest:
            logs.append(f"qtest: {p.qtest_log}")
        return f"logs in {p.log_dir} ({', '.join(logs)}; command line: {p.cmdline})"

    def close(self) -> int | None:
        """Stop QEMU (quit, then SIGTERM, then SIGKILL) and release everything; idempotent.

        Returns QEMU's exit status (None if it could not be reaped).  A close cut short
        (Ctrl-C while it waited for QEMU, or for one of the steps after: QMP's
        disconnect, the console's last lines) is finished by the next call, not
        skipped: each step is done once, and the next call does those left.  Thread
        safe: a second thread's close() waits for the first one's, then returns its
        status."""
        with self._lock:
            self._closer = threading.get_ident()
            try:
                return self._close()
            finally:
                self._closer = None

    def _close(self) -> int | None:
        if self._finished:
            return self._proc.returncode if self._proc is not None else None
        self._closed = True  # no start() after this, even if stopping QEMU fails below
        status: int | None = None
        try:
            if self._proc is not None:
                t = self.config.stop_timeout
                quitting = False
                running = self._proc.poll() is None and not proc.is_stopped(self._proc.pid)
                closing = getattr(self._qmp, "closing", None)
                if callable(closing) and "qmp" not in self._released:
                    closing()  # its connection's loss, from here on, is no error
                # a stopped QEMU (SIGSTOP) answers nothing: no quit, killed at once
                if running and self._qmp is not None and self._qmp.connected:
                    with contextlib.suppress(Exception):
                        self._qmp.execute("quit", timeout=t)
                        quitting = True
                status = proc.wait_or_stop(self._proc, t if quitting else 0.0, kill_after=t)
        finally:
            self._release(gone=self._proc is None or status is not None)
        if self._proc is not None and status is None:
            raise MachineError(f"QEMU pid {self._proc.pid} could not be killed")
        return status

    def _release(self, *, gone: bool) -> None:
        """close()'s clean-up, each step once (marked done when it returned): what an
        interruption (Ctrl-C) left undone, that step and those after it, the next
        close() does.  The quick steps first: the cache outputs QEMU ran from (*gone*:
        QEMU was reaped or never started) stop being held before the waits of QMP's
        disconnect and the console's reader (seconds each at worst)."""

        def close_pidfd() -> None:
            fd, self._pidfd = self._pidfd, -1  # never closed twice
            if fd >= 0:
                os.close(fd)

        def remove_socks() -> None:
            if self.paths is not None:
                remove_sock_dir(self.paths.sock_dir)
                release_run_dir(self.paths.log_dir)

        def quietly(closer: SyncQMP | QTest | socket.socket | Console | None) -> Callable[[], None]:
            def close() -> None:
                if closer is not None:
                    with contextlib.suppress(Exception):
                        closer.close()

            return close

        held = self._held
        steps: list[tuple[str, Callable[[], None]]] = []
        if gone and held is not None:
            steps.append(("held", held.release))
        steps += [
            ("pidfd", close_pidfd),
            ("sock_dir", remove_socks),
            ("qtest", quietly(self._qtest)),
            ("qtest_listener", quietly(self._qtest_listener)),
            ("qmp", quietly(self._qmp)),
            ("console", quietly(self._console)),
        ]
        # the pidfd that start() in another thread waits on (QMP's accept) stays open
        # until that start ends: closed now, its number could be another file's by then
        starting = self._start_thread not in (None, threading.get_ident())
        for name, step in steps:
            if name not in self._released and not (name == "pidfd" and starting):
                step()
                self._released.add(name)
        self._finished = gone and {name for name, _ in steps} <= self._released

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself (e.g. after a guest shutdown); returns its status."""
        p = self._running_proc()
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise MachineError(
                f"QEMU did not exit within {timeout} s; {self.describe_logs()}"
            ) from None

    # -- state ---------------------------------------------------------------------

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise MachineError("machine not started")
        return self._proc

    def __repr__(self) -> str:
        """``<Machine qemu pid 1234 running, logs /...>``: not started, running, exited
        (its status), closed; a print of ``g.machine`` said only
        ``<irqlab.vm.machine.Machine object at 0x...>``."""
        proc = self._proc
        if proc is None:
            state = "closed" if self._closed else "not started"
        else:
            status = self._poll()
            state = f"qemu pid {proc.pid} " + (
                "running" if status is None else f"exited with status {status}"
            )
            if self._closed:
                state += ", closed"
        logs = f", logs {self.paths.log_dir}" if self.paths is not None else ""
        return f"<Machine {state}{logs}>"

    @property
    def pid(self) -> int:
        """QEMU's process id (:class:`MachineError` before it was started)."""
        return self._running_proc().pid

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` began (its owner stops this QEMU, or has): a QMP call
        that fails now failed because of it."""
        return self._closed

    def _poll(self) -> int | None:
        """QEMU's exit status, None while it runs.  Popen.poll() says None while another
        thread reaps it (Popen's wait lock): a close() in another thread is waited for."""
        p = self._proc
        if p is None:
            return None
        status = p.poll()
        if status is None and self._closer not in (None, threading.get_ident()):
            with self._lock:
                status = p.poll()
        return status

    def is_running(self) -> bool:
        """Whether QEMU's process was started and has not exited."""
        return self._proc is not None and self._poll() is None

    @property
    def spawned(self) -> bool:
        """Whether QEMU's process was started (a start can fail before: its log
        directory, its sockets)."""
        return self._proc is not None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status (negative: killed by that signal); None while it runs."""
        return self._poll()

    # -- channels ------------------------------------------------------------------

    def qmp(
        self, command: str, args: Mapping[str, object] | None = None, /, **kwargs: object
    ) -> Any:
        """Execute one QMP command: ``m.qmp("qom-get", path=..., property=...)``.

        Pass arguments whose names are not Python identifiers in *args*.
        Raises :class:`~irqlab.vm.qmp.errors.QMPCommandError` for QEMU's error replies
        and :class:`MachineError` (with the logs) when QEMU is gone.
        """
        __tracebackhide__ = hide_frame
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            return self._qmp.execute(command, {**(args or {}), **kwargs})
        except QMPFailure as e:
            raise _qmp_error(e, f"{e}{self._exit_summary()}") from e

    def qmp_many(
        self,
        commands: Sequence[tuple[str, Mapping[str, object] | None]],
        *,
        window: int = 8,
        timeout: float | None = None,
    ) -> list[Any]:
        """Execute independent QMP commands pipelined (see :meth:`SyncQMP.execute_many`:
        *timeout* None grows with the number of commands)."""
        __tracebackhide__ = hide_frame
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            return self._qmp.execute_many(commands, window=window, timeout=timeout)
        except QMPFailure as e:
            raise _qmp_error(e, f"{e}{self._exit_summary()}") from e

    def send_fd(self, fd: int, name: str) -> None:
        """Give QEMU a copy of the open file descriptor *fd* as *name* (QMP ``getfd``;
        QMP arguments then say ``fd:NAME``); *fd* stays open here."""
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            self._qmp.send_fd(fd, name)
        except QMPFailure as e:
            raise _qmp_error(e, f"{e}{self._exit_summary()}") from e

    def abort_qmp(self, reason: str, *, later: bool = True) -> None:
        """End every QMP command and event wait now pending, and with *later* each one
        after, at once with :class:`MachineError` (*reason*): the guest is known dead or
        QEMU frozen (the health watch's verdict); :meth:`close` still stops it."""
        if self._qmp is not None:
            self._qmp.abort(reason, later=later)

    def qmp_ping(self, timeout: float) -> str:
        """QEMU's run state (``query-status``), or :class:`MachineError` when QEMU does
        not answer within *timeout* seconds (frozen, stopped by a signal, gone)."""
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            return str(self._qmp.execute("query-status", timeout=timeout)["status"])
        except QMPFailure as e:
            raise _qmp_error(e, str(e)) from e

    def take_events(self, names: Sequence[str], timeout: float = 2.0) -> list[dict[str, Any]]:
        """QMP events named *names* received so far (removed); the others stay queued."""
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            return self._qmp.take_events(names, timeout)
        except QMPFailure as e:
            raise _qmp_error(e, str(e)) from e

    def qmp_events(self) -> list[dict[str, Any]]:
        """QMP events received since the last call."""
        if self._qmp is None:
            raise MachineError("machine not started")
        return self._qmp.events()

    def wait_event(
        self, name: str, timeout: float, match: Mapping[str, object] | None = None
    ) -> dict[str, Any]:
        """Wait for QMP event *name* whose ``data`` contains *match*."""
        if self._qmp is None:
            raise MachineError("machine not started")
        try:
            return self._qmp.wait_event(name, timeout, match)
        except QMPFailure as e:
            raise _qmp_error(e, f"{e}{self._exit_summary()}") from e

    @property
    def qtest(self) -> QTest:
        """The qtest channel of a machine started with ``MachineConfig(qtest=True)``."""
        if self._qtest is None:
            raise MachineError("not a qtest machine (MachineConfig(qtest=True))")
        return self._qtest

    @property
    def console(self) -> Console:
        """The serial console of a machine started with ``MachineConfig(console=True)``."""
        if self._console is None:
            raise MachineError("machine has no console (MachineConfig(console=True))")
        return self._console

    def wait_console(self, marker: str | re.Pattern[str], timeout: float) -> str:
        """Wait until *marker* appears on the serial console; returns the text up to it."""
        return self.console.wait_for(marker, timeout)
