"""Two threads waiting for one message of the agent: one gets it, the other waits on
(here: times out), never an IndexError (AgentClient's check and take are one step).
A request whose wait something else than its own error ends is marked interrupted."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient, AgentTimeout

QUICK = 10.0  # seconds a step that must not block gets before the test fails

Take = Callable[[AgentClient, float], dict[str, Any]]

TAKES: dict[str, tuple[dict[str, Any], Take]] = {
    "next_event": ({"type": "event", "seq": 1}, lambda c, t: c.next_event(t)),
    "response": ({"id": 1, "ok": True}, lambda c, t: c.response(1, t)),
    "expect": ({"type": "event", "seq": 1}, lambda c, t: c.expect(seq=1, timeout=t)),
}


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[AgentClient, int]]:
    """An agent session whose output is a pipe the test writes (its write end)."""
    r, w = os.pipe()
    client = AgentClient(io.BytesIO(), os.fdopen(r, "rb"), None, logs=tmp_path)
    try:
        yield client, w
    finally:
        os.close(w)
        client.close(timeout=QUICK, goodbye=False)


@pytest.mark.parametrize("kind", sorted(TAKES))
def test_a_message_two_threads_wait_for_goes_to_one(
    session: tuple[AgentClient, int], kind: str
) -> None:
    """The first waiter is held right after its wait saw the message; the second asks
    then: it finds nothing left (the first took it in the same lock hold as it saw it),
    and the first, let go, has it.  Before, both saw it and the first's take failed."""
    client, w = session
    msg, take = TAKES[kind]
    saw, go_on = threading.Event(), threading.Event()
    wait = client._wait

    def held_wait(*args: Any) -> None:
        wait(*args)
        if threading.current_thread().name == "first":
            saw.set()
            go_on.wait(QUICK)

    client._wait = held_wait  # type: ignore[method-assign]
    got: list[object] = []

    def first() -> None:
        try:
            got.append(take(client, QUICK))
        except Exception as e:  # the test's failure names it
            got.append(e)

    waiter = threading.Thread(target=first, name="first")
    waiter.start()
    try:
        os.write(w, json.dumps(msg).encode() + b"\n")
        assert saw.wait(QUICK), "the first waiter never saw the message"
        with pytest.raises(AgentTimeout):  # nothing left for the second
            take(client, 0)
    finally:
        go_on.set()
        waiter.join(QUICK)
    assert got == [msg]


class _Outcome(BaseException):
    """pytest-timeout's Failed, raised by its signal handler in the waiting thread."""


@pytest.mark.parametrize(
    ("raised", "interrupted"),
    [(_Outcome("Timeout"), True), (KeyboardInterrupt(), True), (AgentTimeout("t"), False)],
)
def test_a_request_whose_wait_is_interrupted_marks_the_session(
    session: tuple[AgentClient, int],
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    interrupted: bool,
) -> None:
    """The agent still works on such a request, and would answer the session's next one
    only after it: Guest.agent takes a new session then (the daemon's takeover)."""
    client, _w = session

    def response(rid: int, timeout: float = 30.0) -> dict[str, Any]:
        raise raised

    monkeypatch.setattr(client, "response", response)
    with pytest.raises(type(raised)):
        client.request("read", name="blk", wait_ms=20_000)
    assert (client.interrupted is not None) == interrupted, client.interrupted
    if interrupted:
        assert client.interrupted == f"request 'read' was interrupted ({type(raised).__name__})"


def test_a_response_wait_interrupted_on_its_own_marks_the_session_too(
    session: tuple[AgentClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """submit() and response() used as a pair (not request()): the same mark."""
    client, _w = session

    def take(*args: Any) -> dict[str, Any]:
        raise _Outcome("Timeout")

    monkeypatch.setattr(client, "_take", take)
    with pytest.raises(_Outcome):
        client.response(7, 30)
    assert client.interrupted == "request 7 was interrupted (_Outcome)"
