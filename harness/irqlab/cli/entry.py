"""The ``irqlab`` command's entry point: Ctrl-C, SIGTERM and SIGHUP handled before
anything else is imported.  Python imports irqlab's modules for a good part of a second
(compiling them each time under PYTHONDONTWRITEBYTECODE); a Ctrl-C then printed the
import's traceback and the status was -2, not a quiet 130.  Until
:func:`irqlab.cli.main.main` sets its own handlers (its ``teardown_on_signals``, which
puts these back when it ends), one of these signals ends the process at once with the
documented status and line: nothing has started yet that a teardown would stop.  Only
a few small modules of the standard library are imported here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["early_handlers", "main"]


def _stop(signum: int, frame: object) -> None:
    if signum != signal.SIGINT:  # Ctrl-C: quiet, as shell tools are
        with contextlib.suppress(OSError):
            os.write(2, f"irqlab: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def early_handlers() -> list[int]:
    """Set :func:`_stop` for Ctrl-C, SIGTERM and SIGHUP where Python's defaults are (a
    signal ignored when we started, ``nohup``, stays ignored; a handler our caller set
    stays theirs); the signals set."""
    defaults: dict[int, object] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
        signal.SIGHUP: signal.SIG_DFL,
    }
    mine = [s for s, default in defaults.items() if signal.getsignal(s) is default]
    for s in mine:
        signal.signal(s, _stop)
    return mine


def main() -> int:
    """``irqlab``: the handlers first, then :func:`irqlab.cli.main.main`."""
    early_handlers()
    from irqlab.cli.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
