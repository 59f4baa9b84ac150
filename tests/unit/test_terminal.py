"""The test helper that runs a command on a terminal of its own (irqlab.testing.terminal)."""

from __future__ import annotations

import signal
import sys

import pytest

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


SHOW_HANDLERS = "import signal as s\nprint(s.getsignal(s.SIGINT), s.getsignal(s.SIGQUIT))\n"


@pytest.mark.parametrize("controlling", [False, True], ids=["plain", "controlling"])
def test_ctrl_c_acts_as_typed_even_from_a_run_that_ignores_it(controlling: bool) -> None:
    """A test run in the background (``pytest ... &``) ignores SIGINT and SIGQUIT; the
    command on the terminal inherited that, and a test's Ctrl-C to it was lost (irqlab
    ran the guest's ``sleep 30`` to its end and exited 0)."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        t = Terminal([sys.executable, "-c", SHOW_HANDLERS], controlling=controlling)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    try:
        assert t.wait(30) == 0, t.seen
        assert "default_int_handler" in t.seen and "SIG_IGN" not in t.seen, t.seen
    finally:
        t.close()
