"""A FIFO standing in for a device file of the agent's paths (the unit tests' host agent)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from irqlab.vm.agent_client import AgentClient


class Fifo:
    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def push(self, *records: bytes) -> None:
        os.write(self.fd, b"".join(records))


def fake_spec_agent(tmp_path: Path) -> Iterator[AgentClient]:
    """The real agent process on the host with the unit tests' fake ABI (a fixture's body)."""
    from test_agent_protocol import FAKE_SPEC  # same directory (rootdir-relative import)

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(FAKE_SPEC))
    client = AgentClient.spawn_local(["--spec", str(spec)], logs=tmp_path / "logs")
    client.wait_hello(20)
    yield client
    client.close()
