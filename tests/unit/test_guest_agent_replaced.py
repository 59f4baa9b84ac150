"""Guest.agent replaces a session whose request was interrupted once, however many
threads reach it at that moment (two both started a session: the daemon's takeover
ended the first, "agent exited (end of output) (waiting for hello)")."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from irqlab.vm.guest import Guest

THREADS = 4


def _session(interrupted: str | None = None) -> SimpleNamespace:
    """An agent session as Guest.agent sees it."""
    s = SimpleNamespace(eof=False, interrupted=interrupted, abandoned=None, hello={"pid": 1})
    s.close = lambda **_kw: None
    return s


def test_threads_reaching_an_interrupted_session_start_one_new_session() -> None:
    g = Guest()
    old = _session("request 'read' was interrupted (KeyboardInterrupt)")
    g._agent = old  # type: ignore[assignment]
    started: list[SimpleNamespace] = []

    def start_agent() -> SimpleNamespace:
        time.sleep(0.3)  # the hello's wait: the other threads arrive meanwhile
        new = _session()
        started.append(new)
        g._agent = new  # type: ignore[assignment]
        return new

    g.start_agent = start_agent  # type: ignore[method-assign]
    barrier = threading.Barrier(THREADS)
    got: list[object] = []

    def take() -> None:
        barrier.wait(timeout=10)
        got.append(g.agent)

    threads = [threading.Thread(target=take) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(started) == 1, f"{len(started)} sessions started"
    assert got == started * THREADS
