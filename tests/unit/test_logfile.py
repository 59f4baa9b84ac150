"""A log whose filesystem is full (/dev/full: every write is ENOSPC) stops logging and
says so once; the reader that writes it goes on: the console keeps draining the
serial port (the guest blocked in printk when it stopped), the agent session keeps
reading (a failed write read as the agent's end of output), and a failing test's
report goes on without its log copies (pytest's INTERNALERROR ended the run)."""

from __future__ import annotations

import io
import json
import socket
import tempfile
from pathlib import Path

import pytest

from irqlab import notice
from irqlab.vm import agent_client
from irqlab.vm.console import Console
from irqlab.vm.logfile import LogFile

pytest_plugins = ["pytester"]
FULL = Path("/dev/full")


def test_a_full_log_is_said_once_and_then_left() -> None:
    said: list[str] = []
    old = notice.set_sink(said.append)  # past pytest's capture under the plugin
    try:
        log = LogFile(FULL)
        log.write(b"one\n")
        log.write(b"two\n")
    finally:
        notice.set_sink(old)
    assert log.error is not None and log.error.strerror == "No space left on device"
    assert said == [
        "irqlab: writing /dev/full failed (No space left on device): that log stops here"
    ]
    log.close()


def test_the_console_keeps_draining_when_its_log_is_full() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        sock = Path(d) / "c.sock"
        console = Console(sock, FULL)
        try:
            with socket.socket(socket.AF_UNIX) as qemu:
                qemu.connect(str(sock))
                qemu.sendall(b"first line\n")
                console.wait_for("first line", 5)
                qemu.sendall(b"login: ")  # after the failed write: still read
                console.wait_for("login: ", 5)
        finally:
            console.close()


def test_the_agent_session_keeps_reading_when_its_log_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_client, "LogFile", lambda path: LogFile(FULL))
    hello = {"type": "hello", "version": 1, "paths": {}}
    event = {"type": "event", "path": "read", "seq": 1}
    out = io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in (hello, event)))
    client = agent_client.AgentClient(io.BytesIO(), out, None, logs=tmp_path)
    try:
        client.wait_hello(5)
        assert client.next_event(timeout=5)["seq"] == 1  # read past the failed writes
    finally:
        client.close(timeout=1)


def test_a_failing_tests_report_goes_on_without_its_log_copies(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
import errno, pytest
from irqlab.testing import plugin

class FullSlicer:
    def save(self, dest):
        raise OSError(errno.ENOSPC, "No space left on device")

@pytest.fixture(autouse=True)
def _full(request, tmp_path):
    request.node.stash[plugin._GUEST_LOGS] = (FullSlicer(), tmp_path / "logs")
"""
    )
    pytester.makepyfile("def test_a(): assert False\ndef test_b(): pass\n")
    r = pytester.runpytest_subprocess("-rA")
    r.assert_outcomes(failed=1, passed=1)
    r.stdout.fnmatch_lines(["*not saved into *logs: No space left on device*"])
    assert "INTERNALERROR" not in r.stdout.str()


def test_the_console_shows_a_pattern_after_a_mark_within_a_moment() -> None:
    """Guest._run's quick look: did the console print a fault while a command ran?"""
    import re

    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        console = Console(Path(d) / "c.sock", Path(d) / "c.log")
        try:
            with socket.socket(socket.AF_UNIX) as qemu:
                qemu.connect(str(Path(d) / "c.sock"))
                qemu.sendall(b"Oops: before the mark\n")
                console.wait_for("mark", 5)
                mark = console.size()
                oops = re.compile(r"Oops: ")
                assert not console.shows(oops, mark, 0.05)  # only before the mark
                qemu.sendall(b"[ 9.0] Oops: 0002 [#1] PREEMPT SMP\n")
                assert console.shows(oops, mark, 5)
        finally:
            console.close()
