"""A guest command that outlives its timeout in a driver's uninterruptible wait
(tests/e2e/kmods/blocking_read with ``uninterruptible``: wait_event, state D) cannot be
killed: the SshTimeout says so, with where it waits, instead of "killed in the guest:
1 process" (the kill's SIGKILL was counted as sent, and ps showed ``D cat`` after), and
the guest goes on.  One the kill does end is said killed, as before."""

from __future__ import annotations

import re

import pytest

from irqlab.testing.helpers import wait_until
from irqlab.vm.guest import Guest
from irqlab.vm.loadscale import scaled
from irqlab.vm.ssh import SshTimeout

DEV = "/dev/blocking_read"
PARAMS = "/sys/module/blocking_read/parameters"


@pytest.fixture
def guest(blocking_read_guest: Guest) -> Guest:
    return blocking_read_guest


def _state(guest: Guest, pid: int) -> str:
    """Process *pid*'s state letter in the guest ("" once it is gone)."""
    stat = guest.sh(f"cat /proc/{pid}/stat 2>/dev/null || true")
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else ""


def test_a_command_in_an_uninterruptible_wait_is_said_not_killed(guest: Guest) -> None:
    guest.sh(f"echo 1 > {PARAMS}/uninterruptible")
    pid = 0
    try:
        with pytest.raises(SshTimeout) as e:
            guest.sh(f"cat {DEV}", timeout=3)
        said = str(e.value)
        found = re.search(
            r"process did not die: pid (\d+) \(cat\), state D \(uninterruptible\), "
            r"wchan blocking_read_read",
            said,
        )
        assert found, said
        assert said.startswith(f"timeout (3s) running: cat {DEV} ("), said
        assert "killed in the guest: 1 process)" not in said, said
        if guest.sh("test -r /proc/self/stack && echo yes || echo no").strip() == "yes":
            assert "kernel stack: blocking_read_read+" in said, said
        pid = int(found.group(1))
        assert _state(guest, pid) == "D"  # as said: still there
        assert guest.sh("echo alive") == "alive\n"  # the guest goes on
    finally:
        guest.sh(f"echo 0 > {PARAMS}/uninterruptible")
        guest.sh(f"printf %064d 0 > {DEV}")  # its read takes it all and returns: SIGKILL ends it
    wait_until(lambda: _state(guest, pid), lambda s: s in ("", "Z"), timeout=scaled(10.0),
               what=f"cat (pid {pid}) dying once its read returned")  # fmt: skip


def test_a_command_in_an_interruptible_wait_is_said_killed(guest: Guest) -> None:
    with pytest.raises(SshTimeout) as e:
        guest.sh(f"cat {DEV}", timeout=2)
    assert re.search(r"\(killed in the guest: \d+ process(es)?\)$", str(e.value)), e.value
    assert "did not die" not in str(e.value)
    assert guest.sh(f"cat {PARAMS}/waiting").strip() == "0"
