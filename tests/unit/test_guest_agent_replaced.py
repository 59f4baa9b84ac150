"""Guest.agent replaces a session whose request was interrupted once, however many
threads reach it at that moment (two both started a session: the daemon's takeover
ended the first, "agent exited (end of output) (waiting for hello)")."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from irqlab.vm.guest import Guest

THREADS = 4


def _session(interrupted: str | None = None) -> SimpleNamespace:
    """An agent session as Guest.agent sees it."""
    s = SimpleNamespace(
        eof=False, interrupted=interrupted, abandoned=None, hello_message={"pid": 1}
    )
    s.close = lambda **_kw: None
    return s


class _CountingLock:
    """The guest's agent lock, counting the threads that came to take it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.came = 0
        self.cond = threading.Condition()

    def acquire(self, timeout: float = -1) -> bool:
        with self.cond:
            self.came += 1
            self.cond.notify_all()
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        self._lock.release()


def test_threads_reaching_an_interrupted_session_start_one_new_session() -> None:
    g = Guest()
    old = _session("request 'read' was interrupted (KeyboardInterrupt)")
    g._agent = old  # type: ignore[assignment]
    lock = g._agent_lock = _CountingLock()  # type: ignore[assignment]
    started: list[SimpleNamespace] = []

    def start_agent() -> SimpleNamespace:
        # the hello's wait, until every other thread has come to the lock meanwhile
        with lock.cond:
            assert lock.cond.wait_for(lambda: lock.came == THREADS, timeout=10), lock.came
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


def test_a_session_made_needless_by_a_close_meanwhile_is_closed_and_said() -> None:
    """Another thread's close() while a new session started: it lived on, its readers
    with it, in a closed guest (and `g.agent` could hand it out)."""
    from irqlab.vm.guest import GuestError

    g = Guest()
    g._agent = _session("request 'read' was interrupted (KeyboardInterrupt)")  # type: ignore[assignment]
    closed: list[bool] = []
    new = _session()
    new.close = lambda **_kw: closed.append(True)

    def start_agent() -> SimpleNamespace:
        g._closes += 1  # another thread's close() came while the hello was awaited
        g._agent = new  # type: ignore[assignment]
        return new

    g.start_agent = start_agent  # type: ignore[method-assign]
    try:
        g.agent  # noqa: B018 (the property starts the session)
    except GuestError as e:
        said = str(e)
    else:
        raise AssertionError("the needless session was handed out")
    assert said.endswith("by another thread while starting a new agent session"), said
    assert closed == [True] and g._agent is None
