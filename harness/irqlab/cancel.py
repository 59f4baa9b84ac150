"""Work that another thread can cancel: the commands it runs end at once.

A :class:`Scope` is one piece of work, made current in its thread by :func:`scope`
(a :class:`irqlab.vm.guest.Guest` start's prepare: apt's lookups, the builds of its
image and module, their locks' waits).  Another thread's :meth:`Scope.cancel` (the
Guest's ``close()``) ends it:

- each command that :func:`run` runs in it (in its own process group) gets SIGTERM
  (its whole group: make's compilers too, which remove their half-written outputs),
  SIGKILL :data:`TERM_GRACE_S` later if any of the group is left, and :func:`run`
  raises :class:`Cancelled` naming the step once the group is gone;
- a lock's wait (:func:`irqlab.build.cache.take_lock`) and every later :func:`check`
  and :func:`run` raise :class:`Cancelled` at once.

Outside a scope :func:`run` is ``subprocess.run`` with the command in its own process
group (a terminal's Ctrl-C reaches only Python): an interrupt stops that whole group
(SIGTERM, then SIGKILL) before it propagates.  A command whose interruption would
harm the host (``apt-get install``: dpkg's state) is run with ``cancellable=False``:
it runs to its end, and the scope's next step raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from irqlab.errors import IrqlabError
from irqlab.vm import proc

__all__ = [
    "TERM_GRACE_S",
    "Cancelled",
    "RunOptions",
    "Scope",
    "check",
    "current",
    "run",
    "run_text",
    "scope",
]

# how long a cancelled command's group has after SIGTERM before SIGKILL (make and gcc
# end in milliseconds on SIGTERM, removing the target they were writing)
TERM_GRACE_S = 1.0
_READ = 65536


class Cancelled(IrqlabError, RuntimeError):
    """The work's scope was cancelled (another thread closed the guest it prepared);
    *doing* names the step it ended."""

    def __init__(self, doing: str) -> None:
        super().__init__(f"cancelled while {doing}")
        self.doing = doing


class Scope:
    """One cancellable piece of work (see the module's docs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        # written by cancel(): wakes each run() waiting on its command
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._closed = False
        # the step the cancel ended (the first one that saw it), for the error
        self.ended: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """End the work: its running command's group is terminated, and its next step
        (or its lock's wait) raises :class:`Cancelled`.  From any thread; returns at
        once (the command's end is :func:`run`'s to wait for)."""
        with self._lock:
            if self._cancelled or self._closed:
                self._cancelled = True
                return
            self._cancelled = True
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def check(self, doing: str) -> None:
        """Raise :class:`Cancelled` naming *doing* when the scope was cancelled."""
        if self._cancelled:
            self.saw(doing)
            raise Cancelled(doing)

    def saw(self, doing: str) -> None:
        """Note that the cancel ended *doing* (the first step that saw it stays)."""
        with self._lock:
            if self.ended is None:
                self.ended = doing

    def wake_fd(self) -> int:
        """Readable once the scope is cancelled (it stays so)."""
        return self._wake_r

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "irqlab_cancel_scope", default=None
)


def current() -> Scope | None:
    """The scope this thread's work runs in, if any."""
    return _current.get()


@contextlib.contextmanager
def scope(s: Scope | None = None) -> Iterator[Scope]:
    """Run the block in *s* (a new one by default), which is closed at its end."""
    s = s if s is not None else Scope()
    token = _current.set(s)
    try:
        yield s
    finally:
        _current.reset(token)
        s.close()


def check(doing: str) -> None:
    """Raise :class:`Cancelled` naming *doing* when this thread's scope was cancelled
    (nothing outside a scope)."""
    s = _current.get()
    if s is not None:
        s.check(doing)


class RunOptions(TypedDict, total=False):
    """How :func:`run` runs a command (``subprocess.run``'s names)."""

    cwd: Path | str | None
    env: Mapping[str, str] | None  # replaces the environment
    stdin: proc.StdSpec  # default DEVNULL
    stdout: proc.StdSpec  # default PIPE
    stderr: proc.StdSpec  # default PIPE
    executable: Path | str | None
    cancellable: bool  # default True


def run(
    argv: Sequence[str | Path], *, doing: str, **options: Unpack[RunOptions]
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* to its end (whatever its status) in its own process group, its
    output collected as ``subprocess.run`` does (stdout, stderr: PIPE by default, or
    a file, DEVNULL, STDOUT).  In a :class:`Scope` that is cancelled (before or while
    it runs) the group is terminated and :class:`Cancelled` names *doing* (unless not
    ``cancellable``: it runs to its end, then raises)."""
    s = _current.get()
    if s is not None:
        s.check(doing)
    cwd, env = options.get("cwd"), options.get("env")
    p = proc.spawn(
        argv,
        stdin=options.get("stdin", subprocess.DEVNULL),
        stdout=options.get("stdout", subprocess.PIPE),
        stderr=options.get("stderr", subprocess.PIPE),
        cwd=Path(cwd) if cwd is not None else None,
        env=dict(env) if env is not None else None,
        executable=options.get("executable"),
    )
    if p.stdin is not None:  # stdin=PIPE: no input, as subprocess.run's (a reader of
        p.stdin.close()  # it waited for ever)
    try:
        out, err, ended = _communicate(p, s if options.get("cancellable", True) else None)
    except BaseException:  # Ctrl-C: the whole group, as a terminal's Ctrl-C did
        proc.stop(p, term_timeout=TERM_GRACE_S)
        raise
    finally:
        if p.returncode is not None:
            proc.stop(p)  # no more of its: forgotten
    if ended:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # any of its group still there
    if s is not None:
        s.check(doing)
    return subprocess.CompletedProcess([str(a) for a in argv], p.returncode or 0, out, err)


def run_text(
    argv: Sequence[str | Path], *, doing: str, **options: Unpack[RunOptions]
) -> subprocess.CompletedProcess[str]:
    """:func:`run`, its output decoded (undecodable bytes replaced)."""
    r = run(argv, doing=doing, **options)
    return subprocess.CompletedProcess(
        r.args,
        r.returncode,
        r.stdout.decode(errors="replace") if r.stdout is not None else None,
        r.stderr.decode(errors="replace") if r.stderr is not None else None,
    )


def _communicate(
    p: subprocess.Popen[bytes], s: Scope | None
) -> tuple[bytes | None, bytes | None, bool]:
    """(stdout, stderr, whether the scope ended it) once *p* exited and its pipes are
    closed; when *s* is cancelled meanwhile, its group gets SIGTERM, then SIGKILL
    :data:`TERM_GRACE_S` later."""
    chunks: dict[int, list[bytes]] = {}
    out_fd = p.stdout.fileno() if p.stdout is not None else None
    err_fd = p.stderr.fileno() if p.stderr is not None else None
    sel = selectors.DefaultSelector()
    pidfd = proc.pidfd(p.pid)
    try:
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                chunks[pipe.fileno()] = []
                sel.register(pipe.fileno(), selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        if s is not None:
            sel.register(s.wake_fd(), selectors.EVENT_READ)
        ended = False
        kill_at: float | None = None
        open_pipes = len(chunks)
        exited = pidfd is None  # without a pidfd: Popen's wait, once the pipes closed
        while open_pipes or not exited:
            timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
            events = sel.select(timeout)
            if not events and kill_at is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                kill_at = None
                if exited:  # what still holds its pipes left the group (setsid): the
                    break  # cancel waits for it no longer (it waited for ever)
            for key, _mask in events:
                fd = key.fd
                if s is not None and fd == s.wake_fd():
                    sel.unregister(fd)
                    ended = True
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(p.pid, signal.SIGTERM)
                    kill_at = time.monotonic() + TERM_GRACE_S
                elif fd == pidfd:
                    sel.unregister(fd)
                    exited = True
                    if ended and kill_at is None:  # killed, its pipes held outside it
                        open_pipes = 0
                else:
                    data = os.read(fd, _READ)
                    if data:
                        chunks[fd].append(data)
                    else:
                        sel.unregister(fd)
                        open_pipes -= 1
        p.wait()
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()
    out = b"".join(chunks[out_fd]) if out_fd is not None else None
    err = b"".join(chunks[err_fd]) if err_fd is not None else None
    return out, err, ended
