"""Where a guest whose configuration names no log directory logs.

``GuestConfig(log_dir=None)`` means the log directory (:func:`irqlab.paths.log_dir`,
where older entries are pruned when such a guest starts), unless a framework that
runs the guest says where the current work's logs go: a *placer*.  The pytest plugin
sets one: while a test runs, that test's own log directory (the run's directory
outside tests), so a guest a test builds itself (``Guest(GuestConfig(...))``) logs
beside the test's other logs, its failure report names it, and it is kept (and
pruned) with the run.  A guest whose configuration names a log directory is never
placed.  One placer at a time, the process's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from irqlab.errors import hide_frame

if TYPE_CHECKING:
    from irqlab.vm.guest import Guest

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["Placer", "place", "set_placer"]

# guest -> the directory its run directory goes into (None: the log directory)
Placer = Callable[["Guest"], Path | None]

_lock = threading.Lock()
_placer: list[Placer | None] = [None]


def set_placer(placer: Placer | None) -> Placer | None:
    """Make *placer* the one :func:`place` asks (None: none); returns the one it
    replaced (give it back when done)."""
    with _lock:
        old, _placer[0] = _placer[0], placer
    return old


def place(guest: Guest) -> Path | None:
    """Where *guest* (whose configuration names no log directory) puts its run
    directory: the placer's answer, None without one (the log directory).  The
    placer's errors (a directory it cannot make) are the guest's start's."""
    with _lock:
        placer = _placer[0]
    return placer(guest) if placer is not None else None
