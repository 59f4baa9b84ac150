"""Waiting for a child sees its exit when it happens (irqlab.vm.proc.wait): no polling.

``Popen.wait(timeout)`` naps in a loop, the naps growing to 50 ms: a QEMU's exit after
its ``quit`` and a bench's timed process were seen up to 50 ms late."""

from __future__ import annotations

import signal
import subprocess

import pytest

from irqlab.vm import proc


@pytest.fixture
def no_naps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Popen's polling wait naps with time.sleep: make a nap fail the test."""

    def nap(_s: float) -> None:
        raise AssertionError("polled (slept) while waiting for the child")

    monkeypatch.setattr(subprocess.time, "sleep", nap)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("no_naps")
def test_a_child_exiting_on_its_own_is_waited_for_without_naps() -> None:
    child = proc.spawn(["sh", "-c", "sleep 0.3; exit 3"])
    assert proc.wait_or_stop(child, 30) == 3


@pytest.mark.usefixtures("no_naps")
def test_a_child_that_does_not_exit_in_time_is_stopped() -> None:
    child = proc.spawn(["sleep", "30"])
    assert proc.wait(child, 0.1) is None
    assert proc.wait_or_stop(child, 0.1, kill_after=5) == -signal.SIGTERM


def test_a_reaped_child_gives_its_status() -> None:
    child = proc.spawn(["true"])
    child.wait()
    assert proc.wait(child, 1) == 0
