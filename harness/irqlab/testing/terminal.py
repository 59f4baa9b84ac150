"""A command on a pseudo-terminal, as a user sees it: for tests of interactive commands
(``irqlab shell``, ``irqlab run`` on a terminal) and of how they end (signals, a
terminal closed under them).

Library code (stdlib only, usable without pytest).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time
from collections.abc import Sequence

__all__ = ["COOKED", "Terminal"]

# The local modes a cooked terminal has and a raw one has not.
COOKED = termios.ICANON | termios.ECHO


class Terminal:
    """*argv* with a new pseudo-terminal as stdin, stdout and stderr, in a session of
    its own.  With *controlling*, the terminal is the session's controlling terminal:
    :meth:`hang_up` (a terminal emulator's window closed) then sends it SIGHUP.
    :attr:`seen` is what it showed and :meth:`expect` has not consumed yet."""

    def __init__(self, argv: Sequence[str], *, controlling: bool = False) -> None:
        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            start_new_session=True,  # setsid() runs before preexec_fn
            preexec_fn=_acquire_terminal if controlling else _as_typed_at,
        )
        os.close(slave)
        self.seen = ""

    def _read(self, timeout: float) -> bool:
        """Add what the terminal shows within *timeout* to :attr:`seen`; False at EOF."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: no process has the terminal open any more
                return False
            self.seen += data.decode(errors="replace")
            return bool(data)
        return True

    def expect(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        """Wait for the regular expression *pattern* on the terminal; what it matched
        and everything before are consumed."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.seen)
            if m:
                self.seen = self.seen[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout} s:\n{self.seen}")
            if not self._read(left):
                raise AssertionError(f"{pattern!r} not seen; EOF:\n{self.seen}")

    def send(self, text: str) -> None:
        """Type *text* (``\\r`` is Enter, ``\\x04`` Ctrl-D, ``\\x03`` Ctrl-C)."""
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 60.0, *, stacks: int | None = None) -> int:
        """The exit status; the terminal is read meanwhile (a writer blocks on a full
        one, and restoring its modes waits for the output to drain).  A command still
        running after *timeout* s fails the assertion with what it showed; with
        *stacks*, that signal is sent first and its answer read for 2 s (``irqlab``
        prints every thread's stack on SIGUSR1)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.master < 0 or not self._read(0.1):
                time.sleep(0.1)
        if self.proc.poll() is None:
            if stacks is not None:
                self.proc.send_signal(stacks)
                until = time.monotonic() + 2.0
                while self.master >= 0 and time.monotonic() < until:
                    if not self._read(until - time.monotonic()):
                        break  # EOF: all it wrote is read
            raise AssertionError(f"{self.proc.args!r} still runs after {timeout} s:\n{self.seen}")
        self._drain()
        return self.proc.returncode

    def _drain(self) -> None:
        """Read what the exited command wrote and :meth:`wait` has not read yet: to EOF,
        or until nothing more comes for 0.2 s (a child it left may hold the terminal).
        The status came before the output's end (a stack dump cut at 'File "')."""
        while self.master >= 0:
            before = len(self.seen)
            if not self._read(0.2) or len(self.seen) == before:
                return

    def lflags(self) -> int:
        """The terminal's local modes (``termios.ICANON``, ``termios.ECHO``, ...)."""
        return int(termios.tcgetattr(self.master)[3])

    def hang_up(self) -> None:
        """Close the terminal, as when its window is closed."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        """Terminate the command if it still runs, and close the terminal."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        if self.master >= 0:
            self.hang_up()


def _as_typed_at() -> None:
    """In the child: Ctrl-C and Ctrl-\\ act as on a terminal a user typed the command at.
    A test run in the background (``pytest ... &``, a script's ``cmd &``) had them
    ignored, and the command inherited that: its Ctrl-C was lost (it ran to the end)."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def _acquire_terminal() -> None:
    """In the child: make its stdin (the terminal) its controlling terminal, Ctrl-C as
    typed there (:func:`_as_typed_at`)."""
    _as_typed_at()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
