"""irqlab.cancel.run's edges: a cancel whose command left a daemon of another session
holding its pipes, and stdin=PIPE (no input)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from irqlab import cancel


def test_stdin_pipe_gets_eof_as_subprocess_run() -> None:
    done = threading.Event()
    result: list[subprocess.CompletedProcess[bytes]] = []

    def go() -> None:
        result.append(cancel.run(["cat"], doing="reading stdin", stdin=subprocess.PIPE))
        done.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    assert done.wait(10), "cancel.run(stdin=PIPE) of cat did not end (its stdin never closed)"
    assert result[0].returncode == 0 and result[0].stdout == b""


def test_cancel_ends_although_a_setsid_daemon_holds_the_pipes(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    started = tmp_path / "started"
    script = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & touch {started}; sleep 60"
    outcome: list[BaseException] = []
    done = threading.Event()
    s = cancel.Scope()

    def go() -> None:
        try:
            with cancel.scope(s):
                cancel.run(["sh", "-c", script], doing="a daemon's command")
        except BaseException as e:  # handed to the test thread
            outcome.append(e)
        done.set()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not (started.exists() and pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the command did not start its daemon"
            time.sleep(0.01)
        s.cancel()
        ended = done.wait(cancel.TERM_GRACE_S + 5)
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert ended, "the cancel waited for the daemon that holds the command's pipes"
    assert len(outcome) == 1 and isinstance(outcome[0], cancel.Cancelled), outcome
    with pytest.raises(cancel.Cancelled, match="a daemon's command"):
        raise outcome[0]
