"""Machine.close() from two threads at once (a Guest's closer and its start's own
clean-up), and from another thread while start() runs: one close at a time, the pidfd
the start waits on closed once and only after that start, no QEMU spawned after a
close.  Against the fake QEMU (tests/unit/fake_qemu.py)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_machine import _cfg, fake_qemu  # same directory (rootdir-relative import)

from irqlab.build import cache
from irqlab.vm import proc
from irqlab.vm.loadscale import scaled
from irqlab.vm.machine import Machine, MachineError
from irqlab.vm.qmp import client

__all__ = ["fake_qemu"]  # the fixture, used by name


def _in_a_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run *fn* in a new thread; its outcome (return value or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_two_closes_at_once_take_turns(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second close reaped QEMU alongside the first: Popen.poll() said None while
    the first held Popen's wait lock ("QEMU pid N could not be killed; that pid's state
    now: gone"), and both closed the pidfd (EBADF, or another thread's new file)."""
    m = Machine(_cfg(fake_qemu, tmp_path)).start()
    real = proc.wait_or_stop
    inside = threading.Event()  # a close() is in its wait for QEMU
    overlapped: list[bool] = []
    second: list[tuple[threading.Thread, list[Any]]] = []

    def wait_or_stop(*a: Any, **kw: Any) -> int | None:
        if inside.is_set():  # the second close, in the first one's wait
            overlapped.append(True)
            return real(*a, **kw)
        inside.set()
        second.append(_in_a_thread(m.close))
        # the second close must not come in here: it waits for this one's end
        second[0][0].join(scaled(1.0))
        try:
            return real(*a, **kw)
        finally:
            inside.clear()

    monkeypatch.setattr(proc, "wait_or_stop", wait_or_stop)
    status = m.close()
    t, out = second[0]
    t.join(scaled(10))
    assert not t.is_alive()
    assert overlapped == [] and out == [status] and status == 0
    assert m._pidfd == -1 and not m.is_running()


def test_a_close_during_start_leaves_the_pidfd_to_the_start(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close from another thread while start() waited for QEMU's QMP connection
    closed the pidfd that wait watched: its number could be another file's by then."""
    m = Machine(_cfg(fake_qemu, tmp_path))
    real_accept = client.SyncQMP.accept
    seen: list[bool] = []

    def accept(self: client.SyncQMP, timeout: float, fd: int | None, **kw: Any) -> None:
        t, out = _in_a_thread(m.close)
        t.join(scaled(10))
        assert not t.is_alive() and not isinstance(out[0], BaseException), out
        assert fd is not None
        try:
            os.fstat(fd)
            seen.append(True)  # still this start's pidfd
        except OSError:
            seen.append(False)
        real_accept(self, timeout, fd, **kw)

    monkeypatch.setattr(client.SyncQMP, "accept", accept)
    with pytest.raises(MachineError, match="closed \\(by another thread\\) while QEMU started"):
        m.start()
    assert seen == [True]
    assert m._pidfd == -1 and not m.is_running() and m._finished


def test_no_qemu_is_spawned_after_a_close(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close from another thread as start() made its sockets found no QEMU to stop,
    and the start spawned one after it, running on."""
    m = Machine(_cfg(fake_qemu, tmp_path))
    real_hold = cache.hold

    def hold(*a: Any, **kw: Any) -> Any:
        t, out = _in_a_thread(m.close)
        t.join(scaled(10))
        assert not t.is_alive() and not isinstance(out[0], BaseException), out
        return real_hold(*a, **kw)

    monkeypatch.setattr(cache, "hold", hold)
    with pytest.raises(MachineError, match="closed \\(by another thread\\) while QEMU started"):
        m.start()
    assert not m.spawned


class _SignallingLock:
    """An RLock that says when a thread waits for it (the test's cue)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_the_status_while_another_thread_reaps_qemu_is_its_exit(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Popen.poll() says None while another thread holds Popen's wait lock (a close()
    reaping QEMU): returncode said None and is_running() True for a QEMU that had
    exited, and a guest's start took its close for QEMU's own exit."""
    m = Machine(_cfg(fake_qemu, tmp_path)).start()
    p = m._proc
    assert p is not None
    lock = _SignallingLock()
    monkeypatch.setattr(m, "_lock", lock)
    holding = threading.Event()

    def a_close_reaping() -> None:  # what close() in another thread does, step by step
        with lock:
            m._closer = threading.get_ident()
            with p._waitpid_lock:  # type: ignore[attr-defined]
                os.killpg(p.pid, signal.SIGKILL)
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
                holding.set()
                lock.contended.wait(scaled(5))  # the other thread waits for this close
            p.wait()
            m._closer = None

    t, _ = _in_a_thread(a_close_reaping)
    assert holding.wait(scaled(10))
    assert m.returncode == -9
    t.join(scaled(10))
    assert not t.is_alive()
    m.close()
