"""The guest serial console: QEMU connects to our unix socket; a thread copies it to a log.

:meth:`Console.wait_for` blocks on a condition variable that the reader thread
signals on every chunk, so waiting for a marker needs no polling.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import threading
import time
from pathlib import Path

from irqlab.errors import IrqlabError, hide_frame
from irqlab.vm.logfile import LogFile

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "Console",
    "ConsoleTimeout",
]


class ConsoleTimeout(IrqlabError, TimeoutError):
    """The marker did not appear in time; the message names the log file."""


class Console:
    """Listens on *sock_path* for QEMU's chardev and appends everything to *log_path*."""

    def __init__(self, sock_path: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(sock_path))
        self._listener.listen(1)
        self._stop_r, self._stop_w = os.pipe()
        self._data = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self._log = LogFile(log_path)  # a full disk stops the log, never the draining
        self._thread = threading.Thread(target=self._run, name="irqlab-console", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._listener, selectors.EVENT_READ)
                sel.register(self._stop_r, selectors.EVENT_READ)
                conn: socket.socket | None = None
                while True:
                    keys = [k.fileobj for k, _ in sel.select()]
                    if self._stop_r in keys:
                        if conn is not None:
                            self._drain(conn)
                        break
                    if self._listener in keys and conn is None:
                        conn, _ = self._listener.accept()
                        sel.unregister(self._listener)
                        sel.register(conn, selectors.EVENT_READ)
                    elif conn is not None and conn in keys:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        self._append(chunk)
                if conn is not None:
                    conn.close()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _append(self, chunk: bytes) -> None:
        self._log.write(chunk)
        with self._cond:
            self._data += chunk
            self._cond.notify_all()

    def _drain(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                self._append(chunk)

    def text(self) -> str:
        with self._cond:
            return self._data.decode("utf-8", "replace")

    def size(self) -> int:
        """Bytes read so far: a mark for :meth:`shows`."""
        with self._cond:
            return len(self._data)

    def since(self, mark: int) -> str:
        """What came after byte *mark* (:meth:`size`), as text."""
        with self._cond:
            return self._data[mark:].decode("utf-8", "replace")

    def shows(self, pattern: re.Pattern[str], since: int, timeout: float) -> bool:
        """Whether *pattern* appears in what came after byte *since*, waiting up to
        *timeout* s for it (no exception: a quick look, not a wait for a marker)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if pattern.search(self._data[since:].decode("utf-8", "replace")):
                    return True
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return False
                self._cond.wait(left)

    def wait_for(self, marker: str | re.Pattern[str], timeout: float, *, start: int = 0) -> str:
        """Wait until *marker* (text or regex) appears at or after character *start*.

        Returns the console text up to the end of the match.  Raises
        :class:`ConsoleTimeout` (naming the log) on timeout or when the console closes first.
        """
        pattern = marker if isinstance(marker, re.Pattern) else re.compile(re.escape(marker))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._data.decode("utf-8", "replace")
                m = pattern.search(text, start)
                if m is not None:
                    return text[: m.end()]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "the console closed" if self._eof else f"{timeout:g} s passed"
                    raise ConsoleTimeout(
                        f"{pattern.pattern!r} not seen on the console before {why}; "
                        f"see {self.log_path}"
                    )
                self._cond.wait(left)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reader (after it drained what QEMU wrote) and close the log; idempotent."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            self._thread.join(timeout)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1
        self._listener.close()
        self._log.close()
