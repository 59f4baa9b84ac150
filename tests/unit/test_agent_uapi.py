"""The agent's ABI comes from the real uapi header, through the shipped parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from irqlab.contract import uapi
from irqlab.vm.agent_client import AgentClient, stage_agent
from irqlab_agent.abi import Abi


def test_abi_from_the_real_header_matches_the_parser() -> None:
    u = uapi.load(uapi.header_path())
    abi = Abi(uapi.agent_spec(uapi.header_path().read_text()))
    assert abi.record_size == u.record.size == u.constants["IRQLAB_EVENT_SIZE"]
    assert abi.record.fields == u.record.item_names
    for name, io in u.ioctls.items():
        assert abi.ioctl(name.removeprefix("IRQLAB_IOC_")).request == io.request
    # The agent's ACK relies on these fields; the protocol's names on the record's.
    ack = abi.ioctl("ACK").arg
    assert ack is not None and "seq" in ack.fields and "latency_ns" in ack.fields
    ev = abi.decode(bytes(abi.record_size))[0]
    for key in ("seq", "source", "line", "kind", "flags", "value", "raise_ns", "drv_wake_ns"):
        assert key in ev, key
    assert set(abi.flags) >= {"OVERFLOW"}


def test_staged_agent_starts_with_only_the_staged_files(tmp_path: Path) -> None:
    dest = stage_agent(tmp_path / "stage")
    pkg = dest / "irqlab_agent"
    assert (pkg / "_uapi.py").is_file() and (pkg / "irqlab.h").is_file()
    assert (pkg / "__main__.py").is_file() and not list(pkg.rglob("__pycache__"))
    # -I -S: no site-packages (so no host irqlab package), no cwd: the staged dir only.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runpy; "
        "sys.argv = ['irqlab_agent']; runpy.run_module('irqlab_agent', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code, str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin and proc.stdout and proc.stderr

    def _close() -> None:
        proc.wait(10)

    client = AgentClient(proc.stdin, proc.stdout, proc.stderr, logs=tmp_path, on_close=_close)
    hello = client.wait_hello(20)
    assert hello["abi"]["record_size"] == uapi.load(uapi.header_path()).record.size
    assert client.ping()["pong"] is True
    client.close()
    assert proc.returncode == 0
