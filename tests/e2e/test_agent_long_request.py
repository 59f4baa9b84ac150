"""A request too long for the guest's agent is refused at once, the session going on
(the agent's refusal named no id: the request waited 30 s for a timeout)."""

from __future__ import annotations

import time

import pytest

from irqlab.vm.agent_client import AgentClient, RequestTooLong


def test_a_request_longer_than_the_agent_reads_is_refused_at_once(
    irqlab_agent: AgentClient,
) -> None:
    t0 = time.monotonic()
    with pytest.raises(RequestTooLong, match="longer than the agent reads"):
        irqlab_agent.request("stats", junk="x" * 2_000_000)
    assert time.monotonic() - t0 < 5
    assert irqlab_agent.ping()["ok"]
