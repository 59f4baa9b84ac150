"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fifo import Fifo  # same directory (rootdir-relative import)

from irqlab.contract import uapi
from irqlab.vm.agent_client import AgentClient


@pytest.fixture
def abi_json(tmp_path: Path) -> Path:
    """The real ABI artifact (abi.json of the uapi header, made by the host's header parser
    as the image build makes it), for running the agent on the host."""
    path = tmp_path / "abi.json"
    path.write_text(uapi.abi_json(uapi.header_path()))
    return path


@pytest.fixture
def agent(tmp_path: Path, abi_json: Path) -> Iterator[AgentClient]:
    """The real agent process on the host with the real ABI artifact."""
    client = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path / "logs")
    client.wait_hello(20)
    yield client
    client.close()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    """A FIFO standing in for /dev/irqlab0."""
    f = Fifo(tmp_path / "irqlab0")
    yield f
    os.close(f.fd)


@pytest.fixture(autouse=True)
def _own_log_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unit test logs into a directory of its own: builds into a temporary cache
    wrote their step logs (a 35-byte header) into the checkout's build/logs/build."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path_factory.mktemp("logs")))
