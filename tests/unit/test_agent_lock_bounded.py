"""Guest.agent's replacement of a session the health watch gave up: the kill of its
daemon has a bound of its own and says what failed, and a thread waiting meanwhile for
the agent lock waits a bounded time, then names the thread holding it and what it does
(they waited behind the lock, while its kill ran, with no bound and no word)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.vm import loadscale
from irqlab.vm.guest import AGENT_KILL_S, Guest, GuestConfig, GuestTimeout
from irqlab.vm.ssh import SshTimeout

QUICK = 10.0  # s a step that must not block gets before the test fails


def _gave_up(pid: int) -> SimpleNamespace:
    """A session the health watch gave up (abandoned) whose daemon said hello."""
    s = SimpleNamespace(
        eof=True,
        interrupted=None,
        abandoned="no heartbeat",
        hello_message={"type": "hello", "pid": pid},
    )
    s.close = lambda **_kw: None
    return s


def test_a_kill_that_times_out_is_said_and_bounded_by_its_own_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loadscale, "timeout_scale", lambda **_kw: 1.0)  # an idle host
    g = Guest(GuestConfig(name="t"))
    g._agent = _gave_up(4242)  # type: ignore[assignment]
    limits: list[float] = []

    def sh(cmd: str, *, timeout: float = 60.0, check: bool = True) -> str:
        limits.append(timeout)
        raise SshTimeout(f"timeout ({timeout}s) running: {cmd}")

    g.sh = sh  # type: ignore[method-assign]
    g.start_agent = lambda: pytest.fail("a session started though the kill failed")  # type: ignore[method-assign]
    with pytest.raises(GuestTimeout) as e:
        g.agent  # noqa: B018 (the property replaces the session)
    said = str(e.value)
    assert said.startswith(
        "the guest 't': no new agent session: killing the agent daemon (pid 4242) the "
        "health watch gave up failed: timeout ("
    ), said
    assert limits == [AGENT_KILL_S], limits  # not sh's default 60 s


def test_a_thread_waiting_for_the_agent_lock_names_who_holds_it() -> None:
    g = Guest(GuestConfig(name="t"))
    g._agent = _gave_up(4242)  # type: ignore[assignment]
    in_kill, let_go = threading.Event(), threading.Event()

    def sh(cmd: str, **_kw: Any) -> str:  # a guest that does not answer, until let go
        in_kill.set()
        assert let_go.wait(QUICK)
        return ""

    new = SimpleNamespace(eof=False, interrupted=None, abandoned=None, hello_message={"pid": 1})
    g.sh = sh  # type: ignore[method-assign]
    g.start_agent = lambda: new  # type: ignore[method-assign]
    g._agent_lock_wait = lambda: 0.2  # type: ignore[method-assign]
    got: dict[str, object] = {}

    def take(key: str) -> None:
        try:
            got[key] = g.agent
        except GuestTimeout as e:
            got[key] = e

    holder = threading.Thread(target=take, args=("holder",), name="replacer")
    holder.start()
    try:
        assert in_kill.wait(QUICK)
        waiter = threading.Thread(target=take, args=("waiter",))
        waiter.start()
        waiter.join(QUICK)
        assert not waiter.is_alive(), "the waiter waited on, with no bound"
    finally:
        let_go.set()
        holder.join(QUICK)
    said = str(got["waiter"])
    assert said.startswith(
        "the guest 't': no agent session after 0 s of waiting for another thread's new "
        "one: thread 'replacer' has been at it for "
    ), said
    assert said.endswith("s (killing the agent daemon (pid 4242) the health watch gave up)")
    assert got["holder"] is new  # the holder's replacement went on


def test_an_interrupt_right_after_the_lock_is_taken_lets_it_go() -> None:
    """A Ctrl-C between the acquire and the caller's try (the holder's bookkeeping)
    kept the lock: every later g.agent waited its whole bound, then blamed that thread."""
    g = Guest(GuestConfig(name="t"))

    def interrupted(what: str) -> None:
        raise KeyboardInterrupt

    g._agent_doing = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        g._take_agent_lock()
    assert g._agent_lock.acquire(blocking=False), "the agent lock stayed held"
    g._agent_lock.release()
    assert g._agent_holder is None
