"""A log file that never fails its writer.

The console reader and the agent session's reader write every byte they get to a log
before handing it on.  A write that failed (the log's filesystem full) used to end
the reader: the console's thread stopped draining the serial port, so the guest
blocked in printk and every later command timed out; the agent's reader took the
error for the agent's end of output.  :class:`LogFile` writes until the first
error, then stops writing and says so once (:mod:`irqlab.notice`: past pytest's
capture under the plugin, stderr otherwise); its reader goes on.
"""

from __future__ import annotations

import threading
from pathlib import Path

from irqlab import notice
from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["LogFile"]


class LogFile:
    """An append-only, unbuffered binary log at *path* (opened at once: an error
    opening it is the caller's)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._f = self.path.open("ab", buffering=0)
        self.error: OSError | None = None  # the write that failed: nothing written since
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        """Append *data*; after a failed write, nothing (the first failure is said)."""
        if self.error is not None:
            return
        try:
            self._f.write(data)
        except OSError as e:
            with self._lock:
                first = self.error is None
                self.error = e
            if first:
                why = e.strerror or str(e)
                notice.say(f"irqlab: writing {self.path} failed ({why}): that log stops here")
        except ValueError:  # closed meanwhile (the session ended): nothing to keep
            pass

    def close(self) -> None:
        self._f.close()  # unbuffered: nothing left to flush, nothing to fail
