"""What a script's print of the guest's parts says: ``g.machine``, ``g.agent`` and
``g.injector`` printed ``<irqlab.vm.machine.Machine object at 0x7f...>`` and the like,
nothing of their state (a Guest's repr said it already)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agent_fifo import fake_spec_agent  # same directory (rootdir-relative import)

from irqlab.vm.guest import Guest, GuestConfig, _FaultNamingQmp
from irqlab.vm.machine import Machine, MachineConfig
from irqlab.vm.qmp.injector import Injector


def test_a_machine_says_its_qemu_and_state(tmp_path: Path) -> None:
    m = Machine(MachineConfig(binary=Path("/bin/true"), log_root=tmp_path))
    assert repr(m) == "<Machine not started>"
    proc = subprocess.Popen(["sleep", "30"])  # stands in for QEMU's process
    try:
        m._proc = proc
        assert repr(m) == f"<Machine qemu pid {proc.pid} running>"
        inj = Injector(m)
        assert repr(inj) == f"<Injector /machine/peripheral/irqlab0 of {m!r}>"
        guests = Injector(_FaultNamingQmp(Guest(GuestConfig(name="g")), m))  # g.injector
        assert repr(guests) == f"<Injector /machine/peripheral/irqlab0 of guest 'g' {m!r}>"
    finally:
        proc.kill()
        proc.wait()
    assert repr(m) == f"<Machine qemu pid {proc.pid} exited with status -9>"
    m._closed = True
    assert repr(m) == f"<Machine qemu pid {proc.pid} exited with status -9, closed>"


def test_an_agent_session_says_its_state(tmp_path: Path) -> None:
    sessions = fake_spec_agent(tmp_path)
    agent = next(sessions)
    pid = agent.hello["pid"]
    assert repr(agent) == f"<AgentClient session open, agent pid {pid}, 0 messages queued>"
    agent.close()
    assert repr(agent) == f"<AgentClient session closed, agent pid {pid}, 0 messages queued>"
    sessions.close()
