"""A wait on another process's lock is said on the terminal under pytest too: the line
went to stderr, which pytest captures, so a wait of minutes on another run's cold boot
said nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irqlab import notice

pytest_plugins = ["pytester"]


def test_notices_go_to_stderr_unless_a_sink_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    plugins = notice.set_sink(None)  # this session's: the plugin's terminal sink
    try:
        notice.say("irqlab: one")
        got: list[str] = []
        notice.set_sink(got.append)
        notice.say("irqlab: two")
        notice.set_sink(None)
        notice.say("irqlab: three")
    finally:
        notice.set_sink(plugins)
    assert got == ["irqlab: two"]
    assert capsys.readouterr().err == "irqlab: one\nirqlab: three\n"


INNER = (Path(__file__).parent / "notice_inner.py").read_text()


@pytest.mark.parametrize("args", [(), ("-n", "1")], ids=["pytest", "xdist-worker"])
def test_a_lock_wait_under_pytest_is_on_the_terminal(
    pytester: pytest.Pytester, args: tuple[str, ...]
) -> None:
    """Past pytest's capture; an xdist worker's terminal writes into nothing, so its
    notices go to its stderr, which is the controller's."""
    pytester.makepyfile(test_waits=INNER)
    # pytest's own capture, as a user runs it; a regression would hang both processes
    r = pytester.runpytest_subprocess(*args, timeout=120)
    r.assert_outcomes(passed=1)
    shown = "\n".join(r.outlines + r.errlines)
    assert re.search(
        r"irqlab: waiting for process \d+, which is cold-booting a guest for a test "
        r"\(lock .*x\.lock\)",
        shown,
    ), shown
