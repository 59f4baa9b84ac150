"""``AgentClient.request`` waits for an answer as long as the request's own wait plus
30 s when the caller names no timeout: a ``read`` with ``wait_ms`` 35 000, a
``native_wait`` of an hour, were given up after 30 s."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)
from test_agent_protocol import rec  # same directory

from irqlab.vm import agent_client
from irqlab.vm.agent_client import AgentClient, request_timeout
from irqlab_agent import agent as agent_mod
from irqlab_agent import native


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    yield from fake_spec_agent(tmp_path)


@pytest.mark.parametrize(
    ("op", "args", "limit"),
    [
        ("ping", {}, 30.0),
        ("open", {"name": "h"}, 30.0),
        ("read", {"name": "h"}, 40.0),  # the agent's default wait_ms, 10 s
        ("read", {"name": "h", "wait_ms": 35000}, 65.0),
        ("read", {"name": "h", "wait_ms": 0}, 30.0),
        ("read", {"name": "h", "wait_ms": 60000.0}, 90.0),
        ("wait_blocked", {"name": "read", "timeout_ms": 45000}, 75.0),
        ("interrupt", {"name": "read"}, 40.0),
        ("native_wait", {"name": "n"}, 90.0),  # the agent's default wait_s, 60 s
        ("native_wait", {"name": "n", "wait_s": 3600}, 3630.0),
        # beyond the agent's cap (it refuses at once): the cap, never an overflow
        ("read", {"wait_ms": 1e9}, 90.0),
        ("native_wait", {"wait_s": 10**400}, 3630.0),
        ("native_wait", {"wait_s": float("inf")}, 3630.0),
        # malformed (refused at once too): the op's default
        ("read", {"wait_ms": "35000"}, 40.0),
        ("read", {"wait_ms": True}, 40.0),
        ("read", {"wait_ms": -1}, 40.0),
        ("read", {"wait_ms": float("nan")}, 40.0),
    ],
)
def test_the_default_limit_covers_the_requests_own_wait(
    op: str, args: dict[str, Any], limit: float
) -> None:
    assert request_timeout(op, args) == pytest.approx(limit)


def test_the_caps_and_defaults_are_the_agents() -> None:
    assert agent_client.WAIT_ARGS["wait_ms"][1] == agent_mod.MAX_WAIT_MS / 1000
    assert agent_client.WAIT_ARGS["timeout_ms"][1] == agent_mod.MAX_WAIT_MS / 1000
    assert agent_client.WAIT_ARGS["wait_s"][1] == native.MAX_WAIT_S
    assert agent_client.DEFAULT_WAITS["read"] == agent_mod.READ_WAIT_MS / 1000


def _timeouts_asked(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []

    def response(self: AgentClient, rid: int, timeout: float = 30.0) -> dict[str, Any]:
        asked.append(timeout)
        return {"id": rid, "ok": True}

    monkeypatch.setattr(AgentClient, "response", response)
    monkeypatch.setattr(AgentClient, "send_raw", lambda self, line: None)
    return asked


def test_request_waits_the_computed_limit_unless_given_one(
    monkeypatch: pytest.MonkeyPatch, agent: AgentClient
) -> None:
    asked = _timeouts_asked(monkeypatch)
    agent.request("read", name="h", wait_ms=35000)
    agent.request("native_wait", name="n", wait_s=100, timeout=160)  # bench/native.py's way
    agent.request("ping")
    agent.ping(timeout=2.0)
    assert asked == [65.0, 160, 30.0, 2.0]


def test_a_read_waiting_longer_than_the_base_limit_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch, agent: AgentClient, fifo: Fifo
) -> None:
    """The real agent, the 30 s made 0.3 s: a read whose wait_ms is 2000 ends by an
    event 1 s in, and the request takes its answer."""
    monkeypatch.setattr(agent_client, "REQUEST_TIMEOUT", 0.3)
    agent.request("open", name="h", dev=fifo.path, nonblock=False)
    timer = threading.Timer(1.0, fifo.push, (rec(2),))
    timer.start()
    try:
        r = agent.request("read", name="h", wait_ms=2000)
    finally:
        timer.cancel()
    assert [e["seq"] for e in r["events"]] == [2], r
