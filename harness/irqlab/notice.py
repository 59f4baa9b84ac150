"""One-line notices to the user that must reach the terminal whoever captures output:
a wait on another process's lock, a guest replaced.  They go to stderr, unless the
pytest plugin set a sink that writes past pytest's output capture (under pytest a
line on stderr was captured: a wait of minutes on another run said nothing)."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["say", "set_sink"]

Sink = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_sink: Sink = _stderr


def say(line: str) -> None:
    """Tell the user *line* (one line, no newline)."""
    _sink(line)


def set_sink(sink: Sink | None) -> Sink:
    """Send notices to *sink* (None: stderr again); returns the one it replaces."""
    global _sink
    old, _sink = _sink, sink if sink is not None else _stderr
    return old
