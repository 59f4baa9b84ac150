"""Faults: a guest that dies or freezes is named within seconds, nothing leaks, and a
session whose guest died goes on with a new one."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultwait import raises_within  # same directory (rootdir-relative import)
from kmods import build_test_kmod

from irqlab.testing.helpers import (
    DeviceControl,
    check_guest_kernel_log,
    host_processes,
    process_exited,
    wait_until,
)
from irqlab.testing.plugin import start_guest
from irqlab.vm.agent_client import AgentError, AgentTimeout
from irqlab.vm.guest import CommandError, Guest, GuestConfig
from irqlab.vm.health import SSH_GREETING_S, GuestFault
from irqlab.vm.loadscale import timeout_scale

VERDICT = 5.0  # s: the target is 2 s (panic, exit) and 10 s (freeze); margin for a loaded host
PANIC = "echo c > /proc/sysrq-trigger"
# every process but init stops (the SSH server, the agent): the guest answers no one
STOP_USERSPACE = "(sleep 0.5; kill -STOP -1) </dev/null >/dev/null 2>&1 &"


@pytest.fixture
def fault_guest() -> Iterator[Guest]:
    """A guest of the test's own, to kill."""
    g = start_guest(GuestConfig(name="fault"))
    try:
        yield g
    finally:
        g.close()


@pytest.mark.parametrize("panic_setting", ["-1", "0"])
def test_a_panic_under_a_command_names_the_panic(fault_guest: Guest, panic_setting: str) -> None:
    fault_guest.sh(f"sysctl -qw kernel.panic={panic_setting}")  # 0: the kernel stays halted
    e = raises_within(lambda: fault_guest.sh(PANIC), VERDICT, GuestFault)
    first, *rest = str(e).splitlines()
    assert first.startswith("guest kernel panic: Kernel panic - not syncing: sysrq"), first
    # the console's tail (the panic's trace) is quoted below the first line
    assert rest and rest[0].startswith("--- guest console"), str(e)
    assert sum(bool(re.match(r"\[\s*\d+\.\d+\]", line)) for line in rest) >= 10, str(e)
    # every later wait says the same at once
    e2 = raises_within(lambda: fault_guest.sh("true"), 1.0, GuestFault)
    assert str(e2).startswith("guest kernel panic")


def test_a_panic_while_the_agent_waits_names_the_panic(fault_guest: Guest) -> None:
    fault_guest.agent.arm("read")
    ssh = fault_guest.ssh
    assert ssh is not None
    trigger = threading.Thread(target=lambda: ssh.run(PANIC, timeout=10), daemon=True)
    t0 = time.monotonic()
    trigger.start()
    with pytest.raises(AgentError) as info:
        fault_guest.agent.expect(path="read", timeout=60)
    assert time.monotonic() - t0 < VERDICT, info.value
    assert not isinstance(info.value, AgentTimeout)
    assert str(info.value).startswith("guest kernel panic"), info.value
    # what it waited for is on that line, not after the console's tail
    first = str(info.value).splitlines()[0]
    assert "(waiting for message {" in first and first.endswith("})"), first
    # the wait in progress is a GuestFault too, as every later call is (one except
    # clause for "the guest died"); it was a plain AgentError without the verdict
    assert isinstance(info.value, GuestFault), type(info.value)
    assert info.value.fault is fault_guest.fault


@pytest.mark.parametrize(
    "line",
    [
        "BUG: sleeping function called from invalid context at kernel/irqlab-test.c:1",
        "BUG: scheduling while atomic: irqlab-test/1/0x00000002",
    ],
    ids=["sleeping-function", "scheduling-while-atomic"],
)
def test_a_bug_report_the_guest_lives_on_after_is_left_to_the_kernel_log_check(
    fault_guest: Guest, line: str
) -> None:
    """The watch took any "BUG: " line for a dead guest: a test marked
    check_kernel_log=False (the opt-out for tests that expect such reports) was ended
    with GuestFault.  The kernel prints them at KERN_ERR; said by a test module
    (tests/e2e/kmods/kernel_says: no hook of our driver makes one; a line written to
    /dev/kmsg is userspace's, no kernel report), the console shows them the same."""
    console = fault_guest.machine.paths.console_log  # type: ignore[union-attr]
    fault_guest.put(build_test_kmod("kernel_says"), "/tmp/kernel_says.ko")
    says = "/sys/module/kernel_says/parameters/line"
    fault_guest.sh(f"insmod /tmp/kernel_says.ko level=3 && echo '{line}' > {says}")
    wait_until(lambda: console.read_text(errors="replace"), lambda t: line in t, 10, "the line")
    # a look begun once the line was there found nothing wrong and nothing pending (a
    # line taken for a fault is pending for the watch's grace, then the fault)
    seen = time.monotonic()
    watch = fault_guest._watch
    assert watch is not None
    wait_until(lambda: watch.last_clean_look, lambda t: t > seen, 10 * timeout_scale(), "a look")
    assert fault_guest.fault is None, fault_guest.fault.cause
    fault_guest.sh("true")
    with pytest.raises(AssertionError, match="the guest kernel reported problems") as info:
        check_guest_kernel_log(fault_guest)
    assert line in str(info.value), info.value


def test_a_killed_qemu_is_named_with_its_status(
    fault_guest: Guest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="irqlab")
    os.kill(fault_guest.machine.pid, signal.SIGKILL)
    e = raises_within(lambda: fault_guest.sh("true"), VERDICT, GuestFault)
    assert str(e).startswith("QEMU exited with status -9 (running 'true')"), e
    # the connection QEMU's exit reset was not replaced first: "SSH connection to
    # 127.0.0.1:N unusable (ConnectionResetError...): reconnecting" on every such run
    said = [r.getMessage() for r in caplog.records if r.name.startswith("irqlab")]
    assert not [m for m in said if "reconnecting" in m], said


def test_qemu_dying_while_a_file_is_copied_in_is_named(tmp_path: Path) -> None:
    """A copy into the guest (extra_files, --put, a module) whose QEMU dies is named as
    that copy, at once.  The guest path is a FIFO nobody reads: the copy waits there,
    whatever the accelerator's speed, until QEMU is killed under it."""
    f = tmp_path / "payload"
    f.write_bytes(b"irqlab\n")
    g = start_guest(GuestConfig(name="fault-copy", extra_files={"/root/pipe": f}))
    try:
        g.sh("rm /root/pipe && mkfifo /root/pipe")
        assert g.machine is not None
        kill = threading.Timer(0.3, os.kill, (g.machine.pid, signal.SIGKILL))
        kill.start()
        try:
            e = raises_within(g.install_extras, 0.3 + VERDICT, GuestFault)
        finally:
            kill.cancel()
        assert str(e).startswith("QEMU exited with status -9 (writing /root/pipe)"), e
    finally:
        g.close()


def test_qemu_dying_while_a_restore_reseeds_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reseed is a restore's first wait on the guest: QEMU gone during it is named
    at once, and nothing is left running.  The snapshot is made first where there is
    none (the first run after an image change cold-booted here: no reseed, no error)."""
    first = start_guest(GuestConfig(name="fault-reseed"))  # restores, or saves one
    first.close()
    again = start_guest(GuestConfig(name="fault-reseed"))
    try:
        assert again.restored, "the configuration's snapshot was saved by the first start"
    finally:
        again.close()
    reseed = Guest._reseed

    def kill_then_reseed(self: Guest) -> int:
        assert self.machine is not None
        os.kill(self.machine.pid, signal.SIGKILL)
        return reseed(self)

    monkeypatch.setattr(Guest, "_reseed", kill_then_reseed)
    running = set(_qemu_children())
    g = Guest(GuestConfig(name="fault-reseed"))
    e = raises_within(g.start, VERDICT, GuestFault)
    assert str(e).startswith("QEMU exited with status -9"), e
    assert g.machine is None and set(_qemu_children()) == running


def test_a_frozen_qemu_is_named_within_ten_seconds(fault_guest: Guest) -> None:
    os.kill(fault_guest.machine.pid, signal.SIGSTOP)
    try:
        # the QMP limit (3 s) stretches with the host's load (so does _raises_within's)
        e = raises_within(lambda: fault_guest.sh("true", timeout=60), 10.0 + VERDICT, GuestFault)
    finally:
        os.kill(fault_guest.machine.pid, signal.SIGCONT)
    assert str(e).startswith("guest stopped responding: QEMU did not answer QMP"), e
    assert "no reply within" not in str(e), e  # the silence is said once
    # the cause itself: it said only that QMP was silent
    assert f"its process (pid {fault_guest.machine.pid}) is stopped" in str(e), e


def test_closing_a_stopped_qemu_before_the_verdict_is_quick() -> None:
    """A QEMU stopped by SIGSTOP, closed before the watch's verdict: the agent's quit
    waited out its 2 s and the watch's thread, blocked in its QMP ping, was joined for up
    to 5 s (a close took 6-9 s); now no goodbyes, QEMU killed at once."""
    running = set(_qemu_children())
    g = start_guest(GuestConfig(name="fault-stop-close"))
    try:
        g.fault_notice = False
        assert g.machine is not None
        pid = g.machine.pid
        watch = g._watch
        assert watch is not None
        os.kill(pid, signal.SIGSTOP)
        # the watch pings QMP every 2 s and waits 3 s (x load) for the reply: wait until
        # a ping begun after the stop waits on the stopped QEMU, before its verdict
        begun = watch.qmp_pings
        wait_until(
            lambda: (watch.qmp_pings, watch.qmp_ping_pending),
            lambda v: v[0] > begun and v[1],
            10.0 * timeout_scale(),
            "the health watch's QMP ping of the stopped QEMU (begun, pings in flight)",
        )
        assert g.fault is None, g.fault.cause
        t0 = time.monotonic()
        g.close()
        took = time.monotonic() - t0
    finally:
        g.close()
    assert took < 1.0 * timeout_scale(), f"close took {took:.1f} s"
    assert process_exited(pid, 0) and set(_qemu_children()) == running


def test_a_panic_after_a_push_many_cut_short_by_ctrl_c_is_named(fault_guest: Guest) -> None:
    """Ctrl-C in a big pipelined push_many (a REPL user's): the QMP loop spent seconds
    creating and then cancelling a task per word, the health watch's QMP wait timed
    out meanwhile and its thread died of it, and a panic afterwards came out as
    ``CommandError rc=-1`` and "QMP qom-set: not connected", unnamed."""
    injector = fault_guest.injector
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main

    def ctrl_c_once_pushing() -> None:  # SIGINT to the main thread, as a terminal's
        wait_until(injector.counters, lambda c: c.raised + c.dropped > 0, 60, "the first word")
        signal.pthread_kill(main, signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own
    interrupter = threading.Thread(target=ctrl_c_once_pushing)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            injector.push_many(range(200_000))
        interrupter.join()
    finally:
        signal.signal(signal.SIGINT, before)
    fault_guest.sh("true")  # the guest and its watch go on
    e = raises_within(lambda: fault_guest.sh(PANIC), VERDICT, GuestFault)
    assert str(e).startswith("guest kernel panic: Kernel panic - not syncing: sysrq"), e
    e2 = raises_within(lambda: injector.push(1), 1.0, GuestFault)
    assert str(e2).startswith("guest kernel panic"), e2


@pytest.mark.parametrize("how", ["panic", "SIGKILL", "SIGSTOP"])
def test_the_devices_controls_name_a_dead_or_frozen_guest(fault_guest: Guest, how: str) -> None:
    """QMP from the test's thread (the device fixture's controls, the injector): a panic
    said "QMP qom-get: not connected" without the cause, a frozen QEMU cost each call
    its whole 30 s QMP timeout; now the watch's verdict ends them, named."""
    device = DeviceControl(fault_guest)
    pid = fault_guest.machine.pid
    if how == "panic":
        fault_guest.ssh.run(PANIC, timeout=10)  # type: ignore[union-attr]
    else:
        os.kill(pid, getattr(signal, how))
    try:
        limit = 10.0 + VERDICT if how == "SIGSTOP" else VERDICT  # QMP's 3 s limit, scaled
        poll = lambda: device.wait_counters(lambda c: c.acked > 0, 60)  # noqa: E731
        e = raises_within(poll, limit, GuestFault)
    finally:
        if how == "SIGSTOP":
            os.kill(pid, signal.SIGCONT)
    cause = {
        "panic": "guest kernel panic: Kernel panic - not syncing: sysrq",
        "SIGKILL": "QEMU exited with status -9",
        "SIGSTOP": "guest stopped responding: QEMU did not answer QMP",
    }[how]
    first = str(e).splitlines()[0]
    assert first.startswith(cause) and first.endswith("(QMP qom-get)"), first
    # the next call says the same at once
    e2 = raises_within(device.counters, 1.0, GuestFault)
    assert str(e2).startswith(cause), e2


def test_a_device_poll_ends_when_the_heartbeat_stops() -> None:
    """wait_counters polls QMP, which a guest whose userspace stopped still answers: it
    waited out its own timeout and said only that the counters never got there."""
    g = start_guest(GuestConfig(name="fault-beat-qmp", freeze_timeout=3.0))
    try:
        g.agent.ping()
        g.sh(STOP_USERSPACE)
        device = DeviceControl(g)
        poll = lambda: device.wait_counters(lambda c: False, 60)  # noqa: E731
        e = raises_within(poll, 3.0 + SSH_GREETING_S + VERDICT, GuestFault)
        assert str(e).startswith("guest stopped responding: no agent heartbeat"), e
    finally:
        g.close()


def test_an_unplug_whose_qemu_dies_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unplug waits for QEMU's DEVICE_DELETED: a dead QEMU made it wait its 30 s."""
    g = start_guest(GuestConfig(name="fault-unplug", hotplug=True))
    try:
        machine = g.machine
        assert machine is not None
        wait_event = machine.wait_event

        def killed_then_wait(*args: Any, **kw: Any) -> Any:  # QEMU dies as the wait begins
            os.kill(machine.pid, signal.SIGKILL)
            return wait_event(*args, **kw)

        monkeypatch.setattr(machine, "wait_event", killed_then_wait)
        e = raises_within(g.unplug, VERDICT, GuestFault)
        assert str(e).startswith("QEMU exited with status -9"), e
    finally:
        g.close()


def test_unplug_and_replug_of_a_guest_known_dead_are_named() -> None:
    """A guest that died before the call: unplug and replug raised MachineError "QMP
    device_del: not connected", as if QEMU had failed, not the guest's fault."""
    g = start_guest(GuestConfig(name="fault-unplug-dead", hotplug=True))
    try:
        g.fault_notice = False
        assert g.ssh is not None
        g.ssh.run(PANIC, timeout=10)
        assert g.wait_fault(VERDICT) is not None
        for call, doing in ((g.unplug, "unplugging"), (g.replug, "plugging the device back")):
            e = raises_within(call, 1.0, GuestFault)
            first = str(e).splitlines()[0]
            assert first.startswith("guest kernel panic") and doing in first, first
    finally:
        g.close()


def test_a_guest_that_stops_running_userspace_is_named_by_the_heartbeat() -> None:
    g = start_guest(GuestConfig(name="fault-beat", freeze_timeout=3.0))
    try:
        g.agent.arm("read")
        g.sh(STOP_USERSPACE)  # every process but init stops: the SSH server too
        # a request shorter than the verdict's limit (3 s x load and a greeting's 3 s),
        # once the heartbeat stopped: its timeout waits for the verdict (it said
        # "timeout (2s) waiting for response to request N")
        agent = g.agent
        wait_until(lambda: time.monotonic() - (agent.last_heartbeat or 0.0),
                   lambda silent: silent > 1.5, 30, "the agent's heartbeat to stop")  # fmt: skip
        with pytest.raises(AgentError) as info:
            agent.ping(timeout=2)
        assert str(info.value).startswith("guest stopped responding: no agent heartbeat")
        with pytest.raises(AgentError) as info:
            agent.expect(path="read", timeout=60)  # the session the guest's freeze ended
        assert str(info.value).startswith("guest stopped responding: no agent heartbeat")
    finally:
        g.close()


def test_a_stopped_agent_in_a_guest_that_answers_ends_agent_waits_not_commands() -> None:
    """SIGSTOP of the agent alone: "guest stopped responding: no agent heartbeat"
    ended a g.sh('sleep 120') that ran fine over SSH.  The agent's waits end, naming
    it; SSH commands go on; the next g.agent is a new agent."""
    g = start_guest(GuestConfig(name="fault-agent-stop", freeze_timeout=3.0))
    try:
        pid = g.agent.ping()["pid"]
        g.agent.arm("read")
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                g.agent.expect(path="read", timeout=60)
            except BaseException as e:
                errors.append(e)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        g.sh(f"(sleep 1; kill -STOP {pid}) </dev/null >/dev/null 2>&1 &")
        assert g.sh("sleep 12; echo alive", timeout=60).strip() == "alive"
        waiter.join(3.0 + SSH_GREETING_S + VERDICT)
        assert errors, "the agent's wait did not end"
        first = str(errors[0]).splitlines()[0]
        assert first.startswith("agent stopped responding: no agent heartbeat for "), first
        assert "; the guest still answers (its SSH server greets) (waiting for" in first, first
        assert not isinstance(errors[0], (GuestFault, AgentTimeout)), errors[0]
        assert g.fault is None
        assert g.agent.ping()["pid"] != pid  # a new agent; the stopped one was killed
        assert g.sh(f"kill -0 {pid} 2>/dev/null || echo gone").strip() == "gone"
    finally:
        g.close()


@pytest.mark.parametrize("op", ["bind", "bind_uio_pci_generic", "reload_module"])
@pytest.mark.parametrize("when", ["known", "under"])
def test_a_method_whose_guest_is_dead_names_the_method_not_its_script(
    fault_guest: Guest, op: str, when: str
) -> None:
    """bind(), bind_uio_pci_generic() and reload_module() on a guest that died named
    their internal step script ("(running 'for d in /sys/bus/pci/devices/*; do ...')")
    as what ran, or nothing when the death was known; they name the method.  *when*:
    the verdict came before the call, or QEMU dies as it begins."""
    pid = fault_guest.machine.pid if fault_guest.machine is not None else 0
    os.kill(pid, signal.SIGKILL)
    if when == "known":
        assert fault_guest.wait_fault(VERDICT) is not None
    with pytest.raises(GuestFault) as info:
        getattr(fault_guest, op)()
    first = str(info.value).splitlines()[0]
    said = {f"QEMU exited with status -9 (in {op}())"}  # known before its first step
    if op == "reload_module" and when == "under":  # or in it, a step with its own words
        said.add(f"QEMU exited with status -9 (running 'rmmod irqlab; modprobe irqlab' in {op}())")
    assert first in said, first


def test_a_request_that_times_out_on_a_stopped_agent_names_the_verdict() -> None:
    """SIGSTOP of the agent alone, then requests shorter than the verdict's limit
    from 2 threads: their timeouts waited for the verdict, which gave the session up,
    and each said "timeout (2s) waiting for response to request N" though the
    notice had said "agent stopped responding: ..."."""
    g = start_guest(GuestConfig(name="fault-agent-stop-req", freeze_timeout=3.0))
    try:
        agent = g.agent
        g.sh(f"kill -STOP {agent.ping()['pid']}")
        wait_until(lambda: time.monotonic() - (agent.last_heartbeat or 0.0),
                   lambda silent: silent > 1.5, 30, "the agent's heartbeat to stop")  # fmt: skip
        errors: list[BaseException] = []

        def ping() -> None:
            try:
                agent.ping(timeout=2)
            except BaseException as e:
                errors.append(e)

        pingers = [threading.Thread(target=ping, daemon=True) for _ in range(2)]
        for t in pingers:
            t.start()
        for t in pingers:
            t.join(60)
        assert len(errors) == 2, errors
        for e in errors:
            first = str(e).splitlines()[0]
            assert first.startswith("agent stopped responding: no agent heartbeat for "), first
            assert "(waiting for response to request " in first, first
            assert not isinstance(e, (GuestFault, AgentTimeout)), e
        assert g.fault is None
    finally:
        g.close()


@pytest.mark.parametrize(
    ("trigger", "cause"),
    [
        ("echo o > /proc/sysrq-trigger", "guest powered off (reboot: Power down; "),
        ("echo b > /proc/sysrq-trigger", "guest rebooted (sysrq: Resetting; "),
        ("poweroff -f", "guest powered off (reboot: Power down; "),
    ],
    ids=["sysrq-o", "sysrq-b", "poweroff-f"],
)
def test_a_guest_that_powers_off_or_reboots_is_named_so(
    fault_guest: Guest, trigger: str, cause: str
) -> None:
    """QEMU runs with -no-reboot: a poweroff and a reboot both end it with status 0,
    and the verdict said only "QEMU exited with status 0 (running 'sleep 120')"."""
    fault_guest.sh("echo 1 > /proc/sys/kernel/sysrq")
    fault_guest.sh(f"(sleep 1; {trigger}) </dev/null >/dev/null 2>&1 &")
    e = raises_within(lambda: fault_guest.sh("sleep 120", timeout=150), 1 + VERDICT, GuestFault)
    first = str(e).splitlines()[0]
    assert first.startswith(cause), first
    assert first.endswith("; QEMU exited with status 0) (running 'sleep 120')"), first


FILL_MEMORY = (  # the guest's root, /run and /tmp are tmpfs: its memory fills
    "dd if=/dev/zero of=/fill bs=1M 2>/dev/null; dd if=/dev/zero of=/run/fill bs=1M "
    "2>/dev/null; dd if=/dev/zero of=/tmp/fill bs=1M"
)
HOG = "python3 -c 'a = []\nwhile True: a.append(bytearray(1 << 20))'"


@pytest.mark.parametrize("wait", ["sh", "agent"])
def test_a_guest_out_of_memory_is_named_when_it_kills_the_agent_or_sshd(
    fault_guest: Guest, wait: str
) -> None:
    """The OOM killer took the agent, then dropbear: the user saw "command failed
    (rc=-1): sleep 120" or "agent exited (end of output)", no cause, no console."""
    if wait == "agent":
        fault_guest.agent.arm("read")
    fault_guest.sh(f"(sleep 1; {FILL_MEMORY}) </dev/null >/dev/null 2>&1 &")
    if wait == "sh":
        e = raises_within(lambda: fault_guest.sh("sleep 120", timeout=150), 30, GuestFault)
    else:
        e = raises_within(
            lambda: fault_guest.agent.expect(path="read", timeout=150), 30, AgentError
        )
    first, *rest = str(e).splitlines()
    assert first.startswith("guest out of memory: Out of memory: Killed process "), str(e)
    assert "(the agent) (" in first or "(the SSH server) (" in first, first
    assert any("Out of memory: Killed process" in line for line in rest), str(e)
    assert fault_guest.fault is not None


def test_a_command_the_oom_killer_killed_is_named_and_a_hog_is_no_fault(fault_guest: Guest) -> None:
    """A memory hog's kill leaves the guest running: no fault; a command killed by
    SIGKILL while the OOM killer killed a process notes that kill (it said only "command
    failed (signal KILL, rc=137)"); it is not claimed as a guest fault: the kill may have
    been another process's."""
    fault_guest.sh(f"({HOG}) </dev/null >/dev/null 2>&1 &")
    waited = "until dmesg | grep -q 'Out of memory: Killed process'; do sleep 0.1; done"
    assert fault_guest.sh(f"{waited}; echo alive", timeout=60).strip() == "alive"
    e = raises_within(lambda: fault_guest.sh(HOG, timeout=60), 30, CommandError)
    (note,) = getattr(e, "__notes__", ())
    assert re.match(
        r"guest out of memory: Out of memory: Killed process \d+ \(python3\) while it ran",
        note,
    ), note
    assert fault_guest.fault is None  # the guest lives on
    assert fault_guest.sh("echo alive").strip() == "alive"
    assert fault_guest.run(HOG, timeout=60).rc == 137  # run() returns the status, as before


def _qemu_children() -> list[int]:
    """This process's QEMUs (those not reaped yet: a zombie's command line is empty)."""
    me = os.getpid()
    return [p.pid for p in host_processes() if p.ppid == me and b"qemu-system" in p.cmdline()]


def test_a_start_that_fails_part_way_leaves_nothing_behind() -> None:
    before = set(Path(tempfile.gettempdir()).glob(f"irqlab-{os.getpid()}-*"))
    running = set(_qemu_children())  # the session's own guests, if any
    for _ in range(5):
        g = Guest(GuestConfig(name="fails", agent_timeout=0.001))
        with pytest.raises((AgentError, TimeoutError)):
            g.start()
        assert g.machine is None
    assert set(_qemu_children()) == running
    assert set(Path(tempfile.gettempdir()).glob(f"irqlab-{os.getpid()}-*")) == before


def test_a_boot_script_failure_is_named_at_once_not_after_the_boot_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The boot script prints the failed marker with its reason and waits on a console
    shell: the start fails with that reason within seconds (it used to wait for the ready
    marker until boot_timeout), the console's tail quoted, and no QEMU is left."""
    from irqlab.vm.guest import GuestError

    start_args = Guest._machine_args

    def no_nic(self: Guest, ssh_port: int) -> list[str]:
        args = start_args(self, ssh_port)
        cut = args.index("virtio-net-pci,netdev=net0,romfile=")
        del args[cut - 1 : cut + 1]  # no eth0 in the guest: the boot script fails
        return args

    monkeypatch.setattr(Guest, "_machine_args", no_nic)
    running = set(_qemu_children())
    boot_timeout = 170.0
    g = Guest(GuestConfig(name="boot-fails", snapshot=False, boot_timeout=boot_timeout))
    t0 = time.monotonic()
    with pytest.raises(GuestError) as e:
        g.start()
    took = time.monotonic() - t0
    assert "the guest's boot script failed: no eth0" in str(e.value), e.value
    assert "guest console (last lines)" in str(e.value)
    # a cold boot takes 2-6 s here (15 s on a loaded host): 60 s is only reached by
    # waiting for the ready marker until the boot timeout
    assert took < 60, f"took {took:.1f} s"
    assert g.machine is None and set(_qemu_children()) == running


INNER_SESSION = """
from irqlab.vm.health import GuestFault
import pytest

def test_1_panics(irqlab_guest):
    with pytest.raises(GuestFault, match="^guest kernel panic"):
        irqlab_guest.sh("echo c > /proc/sysrq-trigger")
    assert False, "the guest died in this test"

def test_2_gets_a_healthy_guest(irqlab_guest, irqlab_agent, irqlab_device):
    irqlab_agent.arm("read")
    irqlab_device.push(7)
    assert irqlab_agent.expect(path="read", timeout=30)["value"] == 7

def test_3_still_healthy(irqlab_guest):
    assert irqlab_guest.sh("echo ok").strip() == "ok"
"""


def _inner_env(tmp_path: Path) -> dict[str, str]:
    """The inner session's environment: its logs (and its log pruning) in *tmp_path*."""
    return {**os.environ, "IRQLAB_LOG_DIR": str(tmp_path / "logs")}


def _inner(tmp_path: Path, body: str) -> Path:
    test = tmp_path / "test_inner.py"
    test.write_text(textwrap.dedent(body))
    return test


def _run_inner(tmp_path: Path, body: str) -> str:
    """An inner pytest session of *body*: its output (stdout, then stderr)."""
    test = _inner(tmp_path, body)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=_inner_env(tmp_path),
    )  # fmt: skip
    return r.stdout + r.stderr


def test_a_session_goes_on_with_a_new_guest_after_one_died(tmp_path: Path) -> None:
    test = _inner(tmp_path, INNER_SESSION)
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=_inner_env(tmp_path),
    )  # fmt: skip
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert "1 failed, 2 passed" in out, out
    assert "the session guest died (guest kernel panic" in out, out
    assert took < 120, f"{took:.0f} s: {out}"


INNER_SHARED_GUEST_ONLY = """
import os
import signal
import threading

import pytest
from irqlab.vm.health import GuestFault

PANIC = "echo c > /proc/sysrq-trigger"

@pytest.fixture
def guest_name(irqlab_guest):  # a fixture of the user's own: uses the guest at setup
    return irqlab_guest.sh("uname -n").strip()

def test_01_panics_from_a_thread(irqlab_guest):
    said = []
    def panic():
        try:
            irqlab_guest.sh(PANIC)
        except GuestFault as e:
            said.append(str(e))
    t = threading.Thread(target=panic)
    t.start()
    t.join(60)
    assert said and said[0].startswith("guest kernel panic"), said

def test_02_gets_a_new_guest(irqlab_guest):
    assert irqlab_guest.sh("echo hi").strip() == "hi"

def test_03_so_does_the_next(irqlab_guest):
    assert irqlab_guest.sh("echo hi").strip() == "hi"

def test_04_panics_under_a_command_and_fails(irqlab_guest):
    with pytest.raises(GuestFault, match="^guest kernel panic"):
        irqlab_guest.sh(PANIC, check=False)
    assert False, "the guest died in this test"

def test_05_its_own_fixture_gets_a_new_guest(guest_name):
    assert guest_name

# killed, then frozen: the frozen case's own setup replaces the killed guest
@pytest.mark.parametrize("signo, cause", [
    (signal.SIGKILL, "QEMU exited with status -9"),
    (signal.SIGSTOP, "guest stopped responding"),
], ids=["killed", "frozen"])
def test_06_stops_qemu(irqlab_guest, signo, cause):
    os.kill(irqlab_guest.machine.pid, signo)
    fault = irqlab_guest.wait_fault(60)
    assert fault is not None and fault.cause.startswith(cause), fault

def test_07_gets_a_new_guest(irqlab_guest):
    assert irqlab_guest.sh("echo hi").strip() == "hi"
"""


@pytest.mark.parametrize(
    "args",
    [(), ("-n", "2", "--dist", "loadfile", "-k", "not frozen")],  # one worker runs them all
    ids=["one-process", "xdist"],
)
def test_tests_with_only_the_session_guest_get_a_new_one_after_it_died(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Tests that use the shared guest through ``irqlab_guest`` alone (or a fixture of
    their own) get a new one as ``irqlab_agent`` does: none inherits an earlier test's
    GuestFault; the test that killed the guest passes or fails on its own."""
    test = _inner(tmp_path, INNER_SHARED_GUEST_ONLY)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(test)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=_inner_env(tmp_path),
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert f"1 failed, {6 if args else 7} passed" in out, out
    assert "FAILED test_inner.py::test_04_panics_under_a_command_and_fails" in out, out
    if args:
        return  # an xdist worker's terminal output is not shown
    # the terminal's lines (a failure's report lists the replacements again, unprefixed)
    died = re.findall(r"^irqlab: the session guest died \((.*)\); starting a new one", out, re.M)
    assert [c.split(":")[0].split(" (")[0] for c in died] == [
        "guest kernel panic",
        "guest kernel panic",
        "QEMU exited with status -9",
        "guest stopped responding",
    ], out


INNER_MODULE_FIXTURE = """
import pytest
from irqlab.vm.health import GuestFault

def test_01_panics(irqlab_guest):
    with pytest.raises(GuestFault, match="^guest kernel panic"):
        irqlab_guest.sh("echo c > /proc/sysrq-trigger", check=False)

@pytest.fixture(scope="module")
def prepared(irqlab_guest):  # set up after test_01 killed the guest
    irqlab_guest.sh("echo ready > /tmp/prepared")
    return irqlab_guest

def test_02_a_module_fixture_meets_a_live_guest(prepared):
    assert prepared.sh("cat /tmp/prepared").strip() == "ready"

def test_03_fails(irqlab_guest):
    assert irqlab_guest.sh("echo hi").strip() == "bye"
"""


def test_a_module_fixture_after_a_death_meets_a_new_guest_and_failures_say_it_was_replaced(
    tmp_path: Path,
) -> None:
    """A module-scoped fixture that takes the session guest is set up before the autouse
    revive: it met the guest an earlier test killed, and every test of its module
    failed with that test's fault.  A failure after a replacement says the guest was
    replaced after which test (what was set up in it before is gone)."""
    out = _run_inner(tmp_path, INNER_MODULE_FIXTURE)
    assert "1 failed, 2 passed" in out, out
    assert "FAILED test_inner.py::test_03_fails" in out, out
    assert "the last test to use it: test_inner.py::test_01_panics)" in out, out
    assert "irqlab: the session guest was replaced during this run" in out, out
    assert "set up in the guest before a replacement is gone" in out, out


INNER_SSHD_KILLED = """
def test_01_kills_the_guests_sshd(irqlab_guest):
    irqlab_guest.sh("killall dropbear; true", check=False)

def test_02_gets_a_new_guest(irqlab_guest, irqlab_agent):
    assert irqlab_guest.sh("echo hi").strip() == "hi"
    assert irqlab_agent.request("ping")["pong"]

def test_03_so_does_the_next(irqlab_device):
    irqlab_device.push(7)
    assert irqlab_device.wait_counters(lambda c: c.raised == 1, timeout=30).raised == 1
"""


def test_a_session_guest_the_host_cannot_reach_is_replaced(tmp_path: Path) -> None:
    """A test that kills the guest's sshd leaves a live guest no one can reach: the
    next test gets a new one at once (each waited 30 s for SSH, then failed, and so
    did every test after it)."""
    out = _run_inner(tmp_path, INNER_SSHD_KILLED)
    assert "3 passed" in out, out
    assert (
        "the session guest cannot be reached (its SSH connection closed); starting a new one" in out
    ), out


INNER_FROZEN_AFTER = """
import re

def test_01_leaves_the_guest_frozen(irqlab_guest):
    g = irqlab_guest
    g.ssh.put({ko!r}, "/tmp/hang_on_load.ko")
    g.sh("(sleep 0.5; insmod /tmp/hang_on_load.ko how=spin) </dev/null >/dev/null 2>&1 &")
    g.machine.wait_console(re.compile("hang_on_load: how=spin, never returning"), timeout=60)

def test_02_gets_a_new_guest(irqlab_guest, irqlab_agent):
    assert irqlab_guest.sh("echo hi").strip() == "hi"
    assert irqlab_agent.request("ping")["pong"]
"""


def test_a_session_guest_an_earlier_test_left_frozen_is_replaced(tmp_path: Path) -> None:
    """Nothing knows yet, as the next test's setup begins, that an earlier test left the
    guest frozen: the heartbeat's verdict came during its agent's reset, and the next
    test failed its setup with the earlier test's fault.  It gets a new guest."""
    ko = build_test_kmod("hang_on_load")
    out = _run_inner(tmp_path, INNER_FROZEN_AFTER.format(ko=str(ko)))
    assert "2 passed" in out, out
    assert "irqlab: the session guest died (guest stopped responding: no agent heartbeat" in out
    assert "(the last test to use it: test_inner.py::test_01_leaves_the_guest_frozen)" in out


def _wait_signal_taken(pid: int, signo: int, timeout: float = 10.0) -> None:
    """Wait until *signo* no longer pends for *pid* (its handler has it): the pending
    masks of /proc/PID/status, SigPnd (the thread's) and ShdPnd (the process's)."""
    bit = 1 << (signo - 1)

    def pending() -> list[int]:
        status = Path(f"/proc/{pid}/status").read_text()  # gone: the OSError says so
        return [int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith(("SigPnd:", "ShdPnd:"))]  # fmt: skip

    wait_until(pending, lambda masks: not any(m & bit for m in masks), timeout,
               f"signal {signo} pending for pytest {pid}")  # fmt: skip


INNER_SLOW = """
import time
def test_waits(irqlab_fresh_guest):
    print("GUEST-UP", irqlab_fresh_guest.machine.pid, flush=True)
    irqlab_fresh_guest.agent.arm("read")
    irqlab_fresh_guest.agent.expect(path="read", timeout=300)
"""


INNER_SLOW_SHARED = """
def test_waits(irqlab_guest, irqlab_agent):
    irqlab_guest.sh("echo 512 > /proc/sys/kernel/tainted")  # W: the end's check would fail
    print("GUEST-UP", irqlab_guest.machine.pid, flush=True)
    irqlab_agent.arm("read")
    irqlab_agent.expect(path="read", timeout=300)
"""


def _default_stop_signals() -> None:
    for signo in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signo, signal.SIG_DFL)


def _inner_until_up(tmp_path: Path, source: str) -> tuple[subprocess.Popen[bytes], int]:
    """An inner pytest of *source* started, once its test printed ``GUEST-UP <qemu pid>``:
    the process and that pid."""
    test = _inner(tmp_path, source)
    p = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_inner_env(tmp_path),
        # a shell's background job (`cmd &`) inherits SIGINT ignored, one under nohup
        # SIGHUP: undo that here, as an interactive pytest would have it
        preexec_fn=_default_stop_signals,
    )  # fmt: skip
    assert p.stdout is not None
    for raw in p.stdout:
        line = raw.decode(errors="replace")
        if "GUEST-UP" in line:
            return p, int(line.split("GUEST-UP", 1)[1].split()[0])
    raise AssertionError(f"the inner test never started its guest: {p.communicate()[0]!r}")


def test_an_interrupted_run_skips_the_session_guests_kernel_log_check(tmp_path: Path) -> None:
    """Ctrl-C of a run whose session guest was tainted: the end-of-run kernel-log check
    ran anyway (a kmemleak scan of up to minutes), and its report escaped pytest's
    interrupted exit as a raw traceback."""
    p, _ = _inner_until_up(tmp_path, INNER_SLOW_SHARED)
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=60)[0].decode(errors="replace")
    assert p.returncode == pytest.ExitCode.INTERRUPTED, rest[-3000:]
    assert "kernel reported problems" not in rest, rest[-3000:]
    assert "Traceback" not in rest and "Failed:" not in rest, rest[-3000:]


@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_or_sigint_of_pytest_stops_its_guests(
    tmp_path: Path, signo: int, times: int
) -> None:
    """Once, or twice back to back as timeout(1) and CI runners send it (to pytest,
    then to its process group): pytest's interrupted run, status 2, no second
    KeyboardInterrupt inside its report.  SIGHUP (the terminal closed) too: it left
    QEMU to its parent-death signal and its socket folder behind."""
    p, qemu = _inner_until_up(tmp_path, INNER_SLOW)
    p.send_signal(signo)
    if times == 2:
        # the second once the kernel delivered the first (sent while the first still
        # pends, the two merge into one, and the repeat would not be tested)
        _wait_signal_taken(p.pid, signo)
        p.send_signal(signo)
    rest = p.communicate(timeout=60)[0].decode(errors="replace")
    assert p.returncode == pytest.ExitCode.INTERRUPTED, rest[-3000:]
    assert "During handling of the above exception" not in rest, rest[-3000:]
    assert "KeyboardInterrupt" in rest, rest[
        -3000:
    ]  # pytest's "!!! KeyboardInterrupt !!!" and where
    assert process_exited(qemu, 0), f"QEMU {qemu} outlived its pytest"
    assert not list(Path(tempfile.gettempdir()).glob(f"irqlab-{p.pid}-*"))


def test_pvpanic_tells_qemu_the_guest_panicked(fault_guest: Guest) -> None:
    fault_guest.machine.qmp("set-action", panic="pause")  # keep QEMU up to ask it afterwards
    e = raises_within(lambda: fault_guest.sh(PANIC), VERDICT, GuestFault)
    assert str(e).startswith("guest kernel panic"), e
    assert fault_guest.machine.is_running()
    assert fault_guest.machine.qmp_ping(5.0) == "guest-panicked"  # only pvpanic can say this


def test_the_guest_is_fenced_in(fault_guest: Guest) -> None:
    """User networking with restrict=on: the SSH forward works, but the guest cannot
    reach a service on the host's loopback through the gateway 10.0.2.2 (without
    restrict=on it can).  Only loopback is probed: no packet is meant to leave."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        probe = (
            'python3 -c "import socket\n'
            "try:\n"
            f"    socket.create_connection(('10.0.2.2', {port}), timeout=5).close()\n"
            "    print('open')\n"
            "except OSError as e:\n"
            "    print('closed', e.errno)\""
        )
        out = fault_guest.sh(probe, timeout=60).strip()
    assert out.startswith("closed"), out


def test_only_the_guest_images_host_key_is_accepted(fault_guest: Guest) -> None:
    from irqlab.vm.ssh import SshClient, SshError

    img = fault_guest.image
    good = SshClient(
        "127.0.0.1", fault_guest.ssh_port, key_path=img.client_key, host_key=img.host_key
    ).connect(timeout=30)
    try:
        assert good.run("echo ok").out.strip() == "ok"
    finally:
        good.close()
    kind, blob = img.host_key.split()[:2]
    forged = f"{kind} {blob[:-8]}AAAAAAAA"
    bad = SshClient("127.0.0.1", fault_guest.ssh_port, key_path=img.client_key, host_key=forged)
    with pytest.raises(SshError, match="presented host key"):
        bad.connect(timeout=30)
