"""A request line longer than the agent reads is refused before it is sent: the agent
refuses it at once but with id null, an answer no wait took (``a.request("stats",
junk="x" * 2_000_000)`` waited 30 s for "timeout (30s) waiting for response")."""

from __future__ import annotations

import json
import time

import pytest

from irqlab.errors import IrqlabError
from irqlab.vm.agent_client import AgentClient, AgentError, RequestTooLong
from irqlab_agent.protocol import MAX_LINE


def _junk_for(agent: AgentClient, op: str, size: int) -> str:
    """A ``junk`` argument that makes *op*'s next request line *size* bytes, newline
    included."""
    line = json.dumps({"id": agent._next_id, "op": op, "junk": ""}).encode()
    return "x" * (size - len(line) - 1)


def test_a_request_too_long_for_the_agent_is_refused_before_it_is_sent(
    agent: AgentClient,
) -> None:
    t0 = time.monotonic()
    with pytest.raises(RequestTooLong) as info:
        agent.request("stats", junk="x" * 2_000_000, timeout=5)
    assert time.monotonic() - t0 < 1, "refused at once, not after a wait"
    e = info.value
    assert isinstance(e, IrqlabError) and isinstance(e, ValueError)
    assert isinstance(e, AgentError)  # what a request's callers catch
    assert f"longer than the agent reads ({MAX_LINE} bytes)" in str(e), e
    assert "2000" in str(e), e  # the request's own size
    assert agent.interrupted is None  # the session goes on
    assert agent.ping()["ok"]


def test_the_longest_line_the_agent_reads_is_sent_and_one_more_byte_is_not(
    agent: AgentClient,
) -> None:
    at_limit = agent.request("ping", check=False, junk=_junk_for(agent, "ping", MAX_LINE))
    assert at_limit["id"] == agent._next_id - 1, at_limit  # answered, under its own id
    with pytest.raises(RequestTooLong, match=f"the request is {MAX_LINE + 1} bytes"):
        agent.request("ping", junk=_junk_for(agent, "ping", MAX_LINE + 1))
