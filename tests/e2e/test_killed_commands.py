"""A guest command that a signal kills (a user's program crashing) is said as such, at
once, and leaves the guest usable; one the kernel kills for an oops under it is named
as the oops.  dropbear reports the first with SSH's exit-signal, which paramiko alone
ignored: it read as a dropped connection (rc -1) after a 2 s wait for a guest fault."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cli import irqlab  # same directory (rootdir-relative import)
from faultwait import raises_within  # same directory (rootdir-relative import)
from kmods import build_test_kmod

from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import FAULT_VERDICT, Guest, GuestConfig
from irqlab.vm.health import GuestFault
from irqlab.vm.ssh import CommandError


@pytest.mark.parametrize(
    ("cmd", "name", "status"),
    [
        ("kill -SEGV $$", "SEGV", 139),
        ("python3 -c 'import os; os.abort()'", "ABRT", 134),
    ],
)
def test_a_command_a_signal_kills_fails_with_the_signals_name(
    irqlab_guest: Guest, cmd: str, name: str, status: int
) -> None:
    with pytest.raises(CommandError, match=f"killed by signal {name}") as e:
        irqlab_guest.sh(cmd)
    assert e.value.result.rc == status, e.value.result
    assert e.value.result.signal is not None and e.value.result.signal.name == name
    result = irqlab_guest.run(cmd)  # the same, returned
    assert result.rc == status and result.signal == e.value.result.signal, result
    # the guest lives on, and the same SSH connection serves the next command
    assert irqlab_guest.fault is None
    assert irqlab_guest.sh("echo alive") == "alive\n"


def test_a_command_the_kernel_kills_for_an_oops_is_named_as_the_oops() -> None:
    g = start_guest(GuestConfig(name="oops-direct"))
    try:
        g.ssh.put(build_test_kmod("oops_on_load"), "/tmp/oops_on_load.ko")
        e = raises_within(
            lambda: g.sh("insmod /tmp/oops_on_load.ko"), FAULT_VERDICT + 8, GuestFault
        )
        assert str(e).startswith("guest kernel oops: "), e
        assert "insmod /tmp/oops_on_load.ko" in str(e), e
    finally:
        g.close()


def test_run_says_the_signal_and_exits_as_a_shell_would() -> None:
    r = irqlab("run", "--", "sh", "-c", "kill -SEGV $$")
    assert r.returncode == 139, r.stderr
    assert "irqlab: the command was killed by signal SEGV" in r.stderr, r.stderr
    assert "did not finish" not in r.stderr and "dropped" not in r.stderr, r.stderr


def test_a_long_running_process_a_signal_ends_says_which(irqlab_guest: Guest) -> None:
    proc = irqlab_guest.ssh.open_process("read line; kill -TERM $$")
    try:
        assert proc.exit_status(timeout=0.2) is None  # waits for its line
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.exit_status(timeout=30) == 143
        assert proc.signal is not None and proc.signal.name == "TERM", proc.signal
    finally:
        proc.close()


def test_a_shell_a_signal_kills_says_so() -> None:
    r = irqlab("shell", input="echo before; kill -KILL $$\n")
    assert r.returncode == 137, r.stderr
    assert r.stdout == "before\n", r.stdout
    assert "irqlab: the shell was killed by signal KILL" in r.stderr, r.stderr


def test_killed_commands_in_a_loop_leave_the_connection_whole(
    irqlab_guest: Guest, soak: Callable[[float, float], float]
) -> None:
    """A crash, then a command, hundreds of times: a channel that ends with exit-signal
    must leave the connection whole for the next (a flake here sinks every test after)."""
    for i in range(int(soak(20, 300))):
        r = irqlab_guest.run("kill -ABRT $$")
        assert (r.rc, r.signal and r.signal.name) == (134, "ABRT"), (i, r)
        assert irqlab_guest.sh(f"echo {i}") == f"{i}\n", i
    assert irqlab_guest.ssh is not None and irqlab_guest.ssh.reconnects == 0
