"""Waiting for a child sees its exit when it happens (irqlab.vm.proc.wait): no polling.

``Popen.wait(timeout)`` naps in a loop, the naps growing to 50 ms: a QEMU's exit after
its ``quit`` and a bench's timed process were seen up to 50 ms late.  Where Python has
no ``os.pidfd_open`` (PyPy, a build against old headers) that polling wait is what is
left, and a stop still stops."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from irqlab.testing.helpers import process_exited
from irqlab.vm import proc


class Spy:
    """How waiting on *child* went: the pidfds opened for it and the timeouts its own
    ``Popen.wait`` was called with (one that is not None is the polling wait).  Only this
    child's calls are seen: other threads' pidfds go through untouched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, child: subprocess.Popen[bytes]) -> None:
        self.pidfds = 0
        self.wait_timeouts: list[float | None] = []
        real_open: Callable[..., int] = os.pidfd_open
        real_wait = child.wait

        def pidfd_open(pid: int, *args: Any) -> int:
            if pid == child.pid:
                self.pidfds += 1
            return real_open(pid, *args)

        def wait(timeout: float | None = None) -> int:
            self.wait_timeouts.append(timeout)
            return real_wait(timeout)

        monkeypatch.setattr(os, "pidfd_open", pidfd_open)
        monkeypatch.setattr(child, "wait", wait)

    def polled(self) -> bool:
        return any(t is not None for t in self.wait_timeouts)


def test_a_child_exiting_on_its_own_is_waited_for_without_naps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = proc.spawn(["sh", "-c", "sleep 0.3; exit 3"])
    spy = Spy(monkeypatch, child)
    assert proc.wait_or_stop(child, 30) == 3
    assert spy.pidfds == 1 and not spy.polled(), spy.wait_timeouts


def test_a_child_that_does_not_exit_in_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    child = proc.spawn(["sleep", "30"])
    spy = Spy(monkeypatch, child)
    assert proc.wait(child, 0.1) is None
    assert proc.wait_or_stop(child, 0.1, kill_after=5) == -signal.SIGTERM
    assert spy.pidfds >= 1 and not spy.polled(), spy.wait_timeouts


def test_a_reaped_child_gives_its_status() -> None:
    child = proc.spawn(["true"])
    child.wait()
    assert proc.wait(child, 1) == 0


def test_without_pidfd_open_a_child_is_waited_for_and_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``stop()`` and the exit hook that stops leftovers raised AttributeError there,
    and QEMU ran on."""
    monkeypatch.delattr(os, "pidfd_open")
    monkeypatch.setattr(proc, "_live", {})  # the exit hook's: this test's children only
    exits = proc.spawn(["sh", "-c", "exit 4"])
    assert proc.wait(exits, 30) == 4
    runs = proc.spawn(["sleep", "30"])
    assert proc.wait(runs, 0.1) is None
    assert proc.stop(runs, term_timeout=5, kill_timeout=5) == -signal.SIGTERM
    leftover = proc.spawn(["sleep", "30"])
    proc._kill_leftovers()
    assert leftover.returncode == -signal.SIGTERM
    assert leftover not in proc.live_children()


def test_without_pidfd_open_a_process_exit_is_still_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """process_exited (the tests' check that a QEMU or a helper is gone) raised
    AttributeError there: it looks at the process's state instead."""
    monkeypatch.delattr(os, "pidfd_open")
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not process_exited(child.pid, 0.1)
        child.kill()
        assert process_exited(child.pid, 30)  # a zombie has exited
        child.wait()
        assert process_exited(child.pid, 0)  # and a process that is gone
    finally:
        child.kill()
        child.wait()
