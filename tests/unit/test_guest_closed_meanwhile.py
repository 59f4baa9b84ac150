"""A command another thread's close() ends is said as that (GuestError "was closed (or
restarted) by another thread"), but a guest that died first keeps its fault: the
cleanup's close() in a `finally` replaced a GuestFault's story with "closed"."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestError, GuestFault
from irqlab.vm.health import Fault
from irqlab.vm.ssh import RunResult, SshError


class _Ssh:
    """An SSH connection whose command ends the way *end* says, after the guest was
    closed meanwhile (and, with *fault*, had died before that)."""

    def __init__(self, g: Guest, end: str, fault: Fault | None) -> None:
        self.g, self.end, self.fault = g, end, fault

    def run(self, cmd: str, **_kw: Any) -> RunResult:
        self.g.fault = self.fault
        self.g._closes += 1  # another thread's close()
        if self.end == "raise":
            raise SshError("SSH is not connected")
        return RunResult(-1, "", "")


@pytest.mark.parametrize("end", ["raise", "rc-1"])
@pytest.mark.parametrize("died", [False, True])
def test_a_command_a_close_ended_is_said_unless_the_guest_died_first(end: str, died: bool) -> None:
    g = Guest(GuestConfig(name="t"))
    fault = Fault("guest kernel panic: Kernel panic - not syncing: sysrq", "") if died else None
    g.ssh = _Ssh(g, end, fault)  # type: ignore[assignment]
    if died:
        with pytest.raises(GuestFault, match=r"^guest kernel panic"):
            g.run("sleep 60")
    else:
        with pytest.raises(GuestError, match="was closed \\(or restarted\\) by another thread"):
            g.run("sleep 60")
