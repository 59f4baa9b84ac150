"""Child processes that never outlive us: own process group, parent-death signal, reaping.

:func:`spawn` starts a command in its own process group (so a terminal's
Ctrl-C reaches only Python, which then cleans up in order) with
``PR_SET_PDEATHSIG=SIGKILL`` (so the kernel kills it if this process dies
without cleaning up, even by SIGKILL).  :func:`stop` escalates SIGTERM ->
SIGKILL to the whole group.  Children still alive at interpreter exit are
killed by an ``atexit`` hook.

Linux delivers the parent-death signal when the *thread* that forked the child
exits: a call from any thread but the main thread forks through one spawner
thread that lives as long as the process, so a guest started from a short-lived
thread (a thread pool starting several guests at once) is not killed when that
thread ends.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from irqlab.errors import hide_frame
from irqlab.sigsafe import critical

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "EXITED_STATES",
    "EXIT_POLL_S",
    "StdSpec",
    "has_exited",
    "is_stopped",
    "kill_all",
    "live_children",
    "pidfd",
    "spawn",
    "stat_fields",
    "stop",
    "wait",
    "wait_or_stop",
]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

# The children spawned here, each with the pid of the process that spawned it.  A child
# forked from this process (os.fork, multiprocessing) inherits its parent's entries and
# leaves them alone: its exit (or kill_all) stops only its own.  No at-fork hook resets
# these in the child: CPython runs those in every child forked with a preexec_fn too
# (each QEMU's, see spawn), Python code between fork and exec in a threaded process.
_live: dict[subprocess.Popen[bytes], int] = {}
# per process: a forked child's copy of its parent's lock may be held for ever (another
# thread of the parent held it at the fork), and the parent's spawner thread is not
# copied into it (work given to its pool would wait for ever)
_locks: dict[int, threading.Lock] = {}
_spawn_pools: dict[int, ThreadPoolExecutor] = {}

StdSpec = int | IO[Any] | None


def _live_lock() -> threading.Lock:
    """This process's lock of :data:`_live` (made by its first user: ``setdefault`` is
    atomic, two threads get the same one)."""
    pid = os.getpid()
    lock = _locks.get(pid)
    return lock if lock is not None else _locks.setdefault(pid, threading.Lock())


def _own() -> list[subprocess.Popen[bytes]]:
    """The children this process spawned (not a forked child's parent's)."""
    pid = os.getpid()
    with _live_lock():
        return [p for p, owner in _live.items() if owner == pid]


def _track(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock():
        _live[proc] = os.getpid()


def _spawner() -> ThreadPoolExecutor:
    """This process's thread that forks for its other threads (it lives until
    interpreter exit)."""
    pid = os.getpid()
    with _live_lock():
        pool = _spawn_pools.get(pid)
        if pool is None:
            pool = _spawn_pools[pid] = ThreadPoolExecutor(1, thread_name_prefix="irqlab-spawn")
        return pool


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec: keep it minimal
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os._exit(125)

    return setup


def spawn(
    argv: Sequence[str | Path],
    *,
    stdin: StdSpec = subprocess.DEVNULL,
    stdout: StdSpec = None,
    stderr: StdSpec = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    executable: Path | str | None = None,
) -> subprocess.Popen[bytes]:
    """Start *argv* in a new process group that dies with this process (*executable*:
    the program that runs as ``argv[0]``, as ``subprocess.Popen``'s)."""

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(a) for a in argv],
            executable=str(executable) if executable is not None else None,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            process_group=0,
            preexec_fn=_child_setup(os.getpid()),  # prctl must run in the child
            close_fds=True,
        )

    if threading.current_thread() is not threading.main_thread():
        proc = _spawner().submit(popen).result()
        _track(proc)
        return proc
    # a Ctrl-C while Popen waited for the child's exec lost the Popen (the child ran
    # on, untracked, until this process exited); none is raised before it is tracked
    with critical():
        proc = popen()
        _track(proc)
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of process *pid*'s ``/proc/PID/stat`` after its command's name: the
    state (proc(5)'s field 3) first, then the parent's pid, the process group, ...
    (proc(5)'s field *n* at index *n* - 3); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat[stat.rfind(b")") + 2 :].split()


# the states of a process that has exited: a zombie not reaped yet, one being torn down
EXITED_STATES = frozenset({b"Z", b"X"})


def _state(pid: int) -> bytes | None:
    """Process *pid*'s state letter; None when there is no such process."""
    fields = stat_fields(pid)
    return None if not fields else fields[0]


def is_stopped(pid: int) -> bool:
    """Whether process *pid* is stopped (SIGSTOP, SIGTSTP, a tracer): it acts on no
    signal but SIGKILL (and SIGCONT) until it is continued."""
    return _state(pid) in (b"T", b"t")


def started_at(pid: int) -> float | None:
    """When process *pid* started, in seconds since the epoch (to the clock tick, plus
    the boot time's one-second rounding); None when there is no such process."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
        ticks = int(fields[22 - 3])  # starttime: proc(5)'s field 22
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def has_exited(pid: int) -> bool:
    """Whether process *pid* has exited: it is gone, or a zombie not reaped yet (what a
    pidfd's readiness says, asked once: where there is no pidfd, :data:`EXIT_POLL_S`
    apart)."""
    state = _state(pid)
    return state is None or state in EXITED_STATES


# how often a process's exit is looked for where there is no pidfd to wait on
EXIT_POLL_S = 0.02


def pidfd(pid: int) -> int | None:
    """A pidfd of process *pid*; None where Python has no ``os.pidfd_open`` or the
    kernel gives none (too old, no such process)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)  # type: ignore[no-any-return]
    except OSError:
        return None


def wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """*proc*'s exit status once it exits, within *timeout* s (None: it still runs).

    ``Popen.wait(timeout)`` polls, with naps that grow to 50 ms: an exit was seen up to
    50 ms after it happened (a QEMU's after its ``quit``, a bench's timed process).
    This waits on the process's pidfd instead, and sees the exit at once (where Python
    has ``os.pidfd_open``: not PyPy, nor a build against old headers)."""
    if proc.returncode is not None:
        return proc.returncode
    fd = pidfd(proc.pid)
    if fd is None:  # no pidfd here, or no such process: Popen's own wait says
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            return proc.poll()
    finally:
        os.close(fd)
    return proc.wait()  # it exited: reaped at once


def stop(
    proc: subprocess.Popen[bytes],
    *,
    term_timeout: float = 5.0,
    kill_timeout: float = 5.0,
) -> int | None:
    """Reap *proc*; if it still runs, SIGTERM its group, then SIGKILL (at once for a
    stopped process, which would keep SIGTERM pending).  Returns its status."""
    try:
        if proc.poll() is None:
            stopped = is_stopped(proc.pid)
            if not stopped:
                _signal_group(proc, signal.SIGTERM)
            if wait(proc, 0 if stopped else term_timeout) is None:
                _signal_group(proc, signal.SIGKILL)
                if wait(proc, kill_timeout) is None:
                    return None
        return proc.returncode
    finally:
        if proc.returncode is not None:
            with _live_lock():
                _live.pop(proc, None)


def wait_or_stop(
    proc: subprocess.Popen[bytes], timeout: float, *, kill_after: float = 5.0
) -> int | None:
    """Wait up to *timeout* for *proc* to exit on its own, then :func:`stop` it.

    *kill_after* bounds each of the SIGTERM and SIGKILL waits."""
    if timeout > 0:
        wait(proc, timeout)
    return stop(proc, term_timeout=kill_after, kill_timeout=kill_after)


def live_children() -> list[subprocess.Popen[bytes]]:
    """Children spawned here (by this process) that have not been reaped (for
    diagnostics and tests)."""
    return [p for p in _own() if p.poll() is None]


def kill_all() -> None:
    """SIGKILL the process group of every child spawned here that is not reaped, at
    once (a teardown that could not stop them in order)."""
    for p in _own():
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for p in _own():  # a forked child's exit leaves its parent's children running
        stop(p, term_timeout=1.0, kill_timeout=2.0)
