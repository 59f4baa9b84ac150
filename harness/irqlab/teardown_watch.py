"""The watch that ends a teardown which does not finish: after a stop signal (Ctrl-C,
SIGTERM, SIGHUP), the process tears down in order (guests stopped, sockets removed);
a teardown stuck past its limit (a lock left held by an exception raised at the wrong
moment, a chain of bounded waits on a frozen guest) is ended here instead of hanging
with its QEMU for ever.  Used by the ``irqlab`` command (:func:`irqlab.cli.main.
teardown_on_signals`) and by the pytest plugin (after pytest's own interrupt)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

__all__ = ["REPORT_LIMIT_S", "TeardownWatch"]

REPORT_LIMIT_S = 2.0  # the watch's report may wait this long for stderr (Ctrl-S, a full pipe)


class TeardownWatch:
    """Ends a teardown that does not finish within *limit* s: prints where every thread
    is, kills the children (QEMU) and exits with the signal's status.  Its thread is
    started beforehand (a signal handler only sets an event) and writes straight to
    descriptor 2 (the main thread may hold sys.stderr's lock), for at most
    REPORT_LIMIT_S (the output may not drain).  *subject* names what did not finish in
    that report ("the teardown after SIGTERM did not finish within 20 s").
    *before_exit*, called with :meth:`cut_short` and the status before the process
    ends (in the watch's thread, for at most REPORT_LIMIT_S too): a record of the run
    that its teardown would have written (the pytest plugin's run outcome)."""

    def __init__(
        self,
        limit: float,
        subject: str = "the teardown",
        before_exit: Callable[[int], object] | None = None,
    ) -> None:
        import faulthandler

        from irqlab.vm import proc

        self._dump, self._kill_all = faulthandler.dump_traceback, proc.kill_all
        self.limit = limit
        self.subject = subject
        self.before_exit = before_exit
        self.signum = 0  # the signal that started the teardown (set once, by the handler)
        self.ended = False  # the block ended: no signal starts a teardown any more
        self.fired = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="teardown-watch", daemon=True)
        self._thread.start()

    def start(self, signum: int) -> bool:
        """Called by the signal handler: whether *signum* starts the teardown.  Plain
        attributes first: a second signal can run the handler again inside the first
        one, and one that came while the first held the event's lock would wait on it
        for ever."""
        if self.signum or self.ended:
            return False
        self.signum = signum
        self.fired.set()
        return True

    def cut_short(self) -> str:
        """What happened, in words: ``<subject> after SIGTERM did not finish within 20 s``."""
        name = signal.Signals(self.signum).name
        return f"{self.subject} after {name} did not finish within {self.limit:g} s"

    def _report(self) -> None:
        with contextlib.suppress(OSError):
            os.write(
                2,
                f"irqlab: {self.cut_short()}; killing its processes. Where each thread "
                "was:\n".encode(),
            )
            self._dump(2, all_threads=True)

    def _record(self) -> None:
        if self.before_exit is not None:
            with contextlib.suppress(Exception):  # the end, whatever the record does
                self.before_exit(128 + self.signum)

    def _run(self) -> None:
        self.fired.wait()
        if self.done.wait(self.limit):
            return
        try:
            for part in (self._report, self._record):
                thread = threading.Thread(target=part, name="teardown-report", daemon=True)
                thread.start()
                thread.join(REPORT_LIMIT_S)
        finally:
            self._kill_all()
            os._exit(128 + self.signum)  # 130 for Ctrl-C

    def end(self) -> None:
        self.ended = True
        self.done.set()
        self.fired.set()
