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

from irqlab.sigsafe import critical

__all__ = [
    "EXIT_POLL_S",
    "StdSpec",
    "has_exited",
    "is_stopped",
    "kill_all",
    "live_children",
    "pidfd",
    "spawn",
    "stop",
    "wait",
    "wait_or_stop",
]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()

StdSpec = int | IO[Any] | None


_spawn_pool: ThreadPoolExecutor | None = None


def _spawner() -> ThreadPoolExecutor:
    """The thread that forks for the other threads (it lives until interpreter exit)."""
    global _spawn_pool
    with _live_lock:
        if _spawn_pool is None:
            _spawn_pool = ThreadPoolExecutor(1, thread_name_prefix="irqlab-spawn")
        return _spawn_pool


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
) -> subprocess.Popen[bytes]:
    """Start *argv* in a new process group that dies with this process."""

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(a) for a in argv],
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
        with _live_lock:
            _live.add(proc)
        return proc
    # a Ctrl-C while Popen waited for the child's exec lost the Popen (the child ran
    # on, untracked, until this process exited); none is raised before it is tracked
    with critical():
        proc = popen()
        with _live_lock:
            _live.add(proc)
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _state(pid: int) -> bytes | None:
    """Process *pid*'s state letter (``/proc/PID/stat``); None when there is no such
    process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat[stat.rfind(b")") + 2 :][:1]


def is_stopped(pid: int) -> bool:
    """Whether process *pid* is stopped (SIGSTOP, SIGTSTP, a tracer): it acts on no
    signal but SIGKILL (and SIGCONT) until it is continued."""
    return _state(pid) in (b"T", b"t")


def has_exited(pid: int) -> bool:
    """Whether process *pid* has exited: it is gone, or a zombie not reaped yet (what a
    pidfd's readiness says, asked once: where there is no pidfd, :data:`EXIT_POLL_S`
    apart)."""
    return _state(pid) in (None, b"Z", b"X")


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
            with _live_lock:
                _live.discard(proc)


def wait_or_stop(
    proc: subprocess.Popen[bytes], timeout: float, *, kill_after: float = 5.0
) -> int | None:
    """Wait up to *timeout* for *proc* to exit on its own, then :func:`stop` it.

    *kill_after* bounds each of the SIGTERM and SIGKILL waits."""
    if timeout > 0:
        wait(proc, timeout)
    return stop(proc, term_timeout=kill_after, kill_timeout=kill_after)


def live_children() -> list[subprocess.Popen[bytes]]:
    """Children spawned here that have not been reaped (for diagnostics and tests)."""
    with _live_lock:
        return [p for p in _live if p.poll() is None]


def kill_all() -> None:
    """SIGKILL the process group of every child spawned here that is not reaped, at
    once (a teardown that could not stop them in order)."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
    for p in procs:
        stop(p, term_timeout=1.0, kill_timeout=2.0)


def _forget_parents_children() -> None:
    """In a forked child: the children spawned here are the parent's, not to be stopped
    at the child's exit (or by its kill_all), and its spawner thread is not copied (a
    new one is made when needed); the lock is new, another thread may have held it."""
    global _live_lock, _spawn_pool
    _live_lock = threading.Lock()
    _live.clear()
    _spawn_pool = None


os.register_at_fork(after_in_child=_forget_parents_children)
