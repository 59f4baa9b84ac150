"""What a script does to the driver at run time leaves it in a known state: a guest
command that timed out or was interrupted does not run on holding the driver's node
(closing its SSH channel did not end it, so the module could not unload afterwards),
an unload the agent's armed paths block says so and how to free it, and a misspelt
module parameter at a reload is refused as it is in the GuestConfig."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from irqlab.vm.guest import Guest, GuestConfigError, GuestError, ModuleLoadError, SshTimeout
from irqlab.vm.loadscale import timeout_scale
from irqlab.vm.ssh import SshClient

HOLDER = "cat /dev/irqlab0 | od -An -tx1 | head -c 100"  # blocks: no interrupt comes
LEFT = "ps -o pid,args | grep -v grep | grep -E '[c]at /dev/irqlab0|[o]d -An' || true"


def test_a_command_that_timed_out_is_killed_in_the_guest(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    with pytest.raises(SshTimeout, match=r"timeout \(1.5s\) running: .*killed in the guest"):
        g.sh(HOLDER, timeout=1.5)
    assert g.sh(LEFT) == ""
    g.reload_module()  # nothing holds the driver: rmmod succeeds
    assert g.sh("test -c /dev/irqlab0 && echo ok") == "ok\n"


def test_a_command_interrupted_by_ctrl_c_is_killed_in_the_guest(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    assert g.ssh is not None
    # a second connection sees the holder run before the Ctrl-C (the first one is busy)
    watcher = SshClient("127.0.0.1", g.ssh_port, user=g.ssh.user, key_path=g.ssh.key_path).connect(
        timeout=30
    )
    seen = threading.Event()

    def interrupt_once_it_runs() -> None:
        deadline = time.monotonic() + 30 * timeout_scale()
        while time.monotonic() < deadline:
            if watcher.run(LEFT, timeout=30).out.strip():
                seen.set()
                os.kill(os.getpid(), signal.SIGINT)
                return

    thread = threading.Thread(target=interrupt_once_it_runs, daemon=True)
    try:
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            g.sh(HOLDER, timeout=60)
    finally:
        thread.join(30)
        watcher.close()
    assert seen.is_set(), "the holder never ran"
    assert g.sh(LEFT) == ""
    g.reload_module()


def test_a_process_its_close_does_not_end_is_killed_in_the_guest(
    irqlab_fresh_guest: Guest,
) -> None:
    """open_process's command ran untagged: closing it left the holder running."""
    g = irqlab_fresh_guest
    assert g.ssh is not None
    proc = g.ssh.open_process(HOLDER)
    try:
        deadline = time.monotonic() + 30 * timeout_scale()
        while not g.sh(LEFT).strip():  # it runs (a kill before it starts finds nothing)
            assert time.monotonic() < deadline, "the holder never ran"
    finally:
        said = proc.close(timeout=0.5)
    assert "killed in the guest" in said, said
    assert g.sh(LEFT) == ""
    g.reload_module()  # nothing holds the driver: rmmod succeeds


def test_killed_commands_in_a_loop_leave_nothing_behind(
    irqlab_fresh_guest: Guest, soak: Callable[[float, float], float]
) -> None:
    """Time out, kill, run the next: hundreds of times under ``invoke soak`` (a kill
    that broke the connection or left a holder would sink every command after it)."""
    g = irqlab_fresh_guest
    for i in range(int(soak(5, 200))):
        with pytest.raises(SshTimeout, match="killed in the guest"):
            g.sh(HOLDER, timeout=0.3)
        assert g.sh(f"echo {i}") == f"{i}\n", i  # the same connection serves on
    assert g.sh(LEFT) == ""
    assert g.ssh is not None and g.ssh.reconnects == 0
    g.reload_module()


def test_an_unload_the_agent_blocks_names_it_and_the_way_out(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    g.agent.arm("read")
    with pytest.raises(ModuleLoadError) as e:
        g.unload_module()
    msg = str(e.value)
    assert "rmmod irqlab failed in the guest" in msg, msg
    assert "held open by pid" in msg and "/dev/irqlab0" in msg, msg
    assert "the irqlab agent's armed paths: g.agent.disarm() first" in msg, msg
    with pytest.raises(ModuleLoadError, match="irqlab agent's armed paths"):
        g.reload_module()
    g.agent.disarm()
    g.unload_module()
    assert g.sh("grep -c '^irqlab ' /proc/modules", check=False).strip() == "0"
    g.load_module()


def test_a_misspelt_parameter_at_a_reload_is_refused(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    with pytest.raises(GuestConfigError, match=r"unknown parameter of irqlab\.ko: nosuch"):
        g.reload_module(nosuch=1)
    assert g.sh("test -c /dev/irqlab0 && echo ok") == "ok\n"  # still loaded, untouched


def test_wait_for_node_says_which_node_did_not_come(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    g.wait_for_node("/dev/irqlab0", timeout=1)
    with pytest.raises(
        GuestError, match=r"no character device /dev/nosuch in the guest within 1 s"
    ):
        g.wait_for_node("/dev/nosuch", timeout=1)
    with pytest.raises(
        ValueError, match=r"timeout must be more than 0 and at most 604800 s \(a week\), not -1"
    ):
        g.wait_for_node("/dev/nosuch", timeout=-1)


def test_a_command_that_keeps_printing_still_times_out(irqlab_fresh_guest: Guest) -> None:
    """The timeout bounded each read alone: a command printing a line every 0.2 s ran
    on for ever (its kill never came)."""
    g = irqlab_fresh_guest
    started = time.monotonic()
    with pytest.raises(SshTimeout, match="killed in the guest"):
        # 20 s at most: without the whole-command deadline it ends by itself, no timeout
        g.sh("for i in $(seq 100); do echo x; usleep 200000; done", timeout=2)
    assert time.monotonic() - started < 2 + 15 * timeout_scale()  # not for ever
    assert g.sh("ps -o args | grep -c '[u]sleep 200000' || true").strip() == "0"


def test_a_loop_that_keeps_starting_holders_is_killed_whole(irqlab_fresh_guest: Guest) -> None:
    """One kill pass missed what the loop forked meanwhile: holders were left and the
    module could not unload."""
    g = irqlab_fresh_guest
    with pytest.raises(SshTimeout, match="killed in the guest"):
        g.sh("while :; do cat /dev/irqlab0 > /dev/null & usleep 10000; done", timeout=1.5)
    assert g.sh(LEFT) == ""
    g.reload_module()
