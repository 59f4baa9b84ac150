"""The test helper that runs a command on a terminal of its own (irqlab.testing.terminal)."""

from __future__ import annotations

import sys

from irqlab.testing.terminal import Terminal

WRITE_THEN_EXIT = "import os\nfor i in range(2000):\n    os.write(1, b'%05d ' % i)\nos._exit(3)\n"


def test_wait_returns_with_everything_the_command_wrote() -> None:
    """The status came before the end of the output: the teardown test's stack dump
    was cut at 'File "' (test_cli_signals failed in CI with it)."""
    for _ in range(20):  # the exit often comes before the last write is read
        t = Terminal([sys.executable, "-c", WRITE_THEN_EXIT])
        try:
            assert t.wait(30) == 3
            words = t.seen.split()
            assert words[-1] == "01999" and len(words) == 2000, t.seen[-200:]
        finally:
            t.close()
