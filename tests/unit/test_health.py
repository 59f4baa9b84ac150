"""Guest health and leak helpers without a VM: console scan, port read-back, stale
socket dirs, log pruning, the agent's bounds on request lines."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from irqlab import paths
from irqlab.vm.agent_client import AgentClient, AgentError, AgentTimeout
from irqlab.vm.guest import parse_usernet
from irqlab.vm.health import (
    CONSOLE_FAULT,
    TAIL_LINES,
    Fault,
    GuestFault,
    console_excerpt,
    file_tail,
    printable,
    scan_console,
)
from irqlab.vm.machine import remove_stale_sock_dirs
from irqlab.vm.qmp.errors import QMPFailure, QMPNoReply
from irqlab_agent.protocol import MAX_LINE, ProtocolError, parse_request, read_line

OOPS_THEN_PANIC = """\
[    3.1] irqlab 0000:00:03.0: irqlab0: id 0x1a5b0100
[    3.5] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    3.5] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    3.6] Kernel panic - not syncing: Fatal exception
"""


def test_console_scan_prefers_the_panic_over_the_oops_before_it() -> None:
    hit = scan_console(OOPS_THEN_PANIC)
    assert hit is not None
    assert hit[1] == "guest kernel panic: Kernel panic - not syncing: Fatal exception"
    assert scan_console(OOPS_THEN_PANIC.rsplit("\n", 2)[0])[1].startswith(  # type: ignore[index]
        "guest kernel oops: BUG: kernel NULL pointer"
    )


NULL_DEREF = """\
[    3.5] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    3.5] #PF: supervisor read access in kernel mode
[    3.5] #PF: error_code(0x0000) - not-present page
[    3.5] PGD 0 P4D 0
[    3.5] Oops: 0000 [#1] PREEMPT SMP NOPTI
"""


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (
            NULL_DEREF,
            "guest kernel oops: BUG: kernel NULL pointer dereference, address: 0000000000000008",
        ),
        (
            "[ 4.0] BUG: unable to handle page fault for address: ffffc90000a3c000\n"
            "[ 4.0] #PF: supervisor write access in kernel mode\n"
            "[ 4.0] #PF: error_code(0x0002) - not-present page\n"
            "[ 4.0] PGD 100000067 P4D 100000067 PUD 1001d6067 PMD 0\n"
            "[ 4.0] Oops: 0002 [#1] PREEMPT SMP NOPTI\n",
            "guest kernel oops: BUG: unable to handle page fault for address: ffffc90000a3c000",
        ),
        (
            "[ 7.0] kernel BUG at drivers/misc/x.c:42!\n"
            "[ 7.0] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n",
            "guest kernel oops: kernel BUG at drivers/misc/x.c:42!",
        ),
        (
            "[ 9.0] general protection fault, probably for non-canonical address "
            "0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI\n",
            "guest kernel oops: general protection fault, probably for non-canonical address "
            "0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
        ),
        (  # arm64
            "[ 5.1] Unable to handle kernel NULL pointer dereference at virtual address "
            "0000000000000008\n[ 5.1] Mem abort info:\n[ 5.1]   ESR = 0x0000000096000005\n"
            "[ 5.1] Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP\n",
            "guest kernel oops: Unable to handle kernel NULL pointer dereference at virtual "
            "address 0000000000000008",
        ),
        (
            "[ 5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI\n",
            "guest kernel oops: Oops: 0000 [#1] PREEMPT SMP NOPTI",
        ),
    ],
    ids=["null-deref", "page-fault", "kernel-BUG-at", "gpf", "arm64", "bare-oops"],
)
def test_console_scan_names_an_oops_by_the_line_before_it(text: str, cause: str) -> None:
    hit = scan_console(f"[ 1.0] ok\n{text}")
    assert hit is not None and hit[1] == cause, hit


# Reports the guest lives on after (real kernel lines): the kernel-log check's, not
# the watch's (a test marked check_kernel_log=False was ended with GuestFault)
NON_FATAL = {
    "sleeping-function": """\
[   25.1] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580
[   25.1] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 312, name: insmod
[   25.1] preempt_count: 1, expected: 0
[   25.1] RCU nest depth: 0, expected: 0
[   25.1] CPU: 0 PID: 312 Comm: insmod Tainted: G           OE      6.1.0-27-amd64 #1
[   25.1] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1
[   25.1] Call Trace:
[   25.1]  <TASK>
[   25.1]  dump_stack_lvl+0x44/0x5c
[   25.1]  __might_resched.cold+0xcc/0xe1
[   25.1]  </TASK>
""",
    "scheduling-while-atomic": """\
[   30.5] BUG: scheduling while atomic: insmod/312/0x00000002
[   30.5] Modules linked in: irqlab(OE)
[   30.5] Preemption disabled at:
[   30.5] [<ffffffffc0a1b02d>] atomic_init+0x2d/0x1000 [splat]
""",
    "kasan": """\
[   12.1] ==================================================================
[   12.1] BUG: KASAN: slab-use-after-free in irqlab_gpio_work_fn+0x2c/0x1a0 [irqlab]
[   12.1] Read of size 8 at addr ffff888004a1c008 by task kworker/0:1/37
""",
    "soft-lockup": "[ 52.2] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [kworker/0:1H:37]\n",
    "hung-task": "[  242.1] INFO: task python3:120 blocked for more than 120 seconds.\n",
}
USER_GPF = (
    "[  100.1] traps: python3[412] general protection fault ip:7f0d2c8a1b2e "
    "sp:7ffd5c2e80a0 error:0 in libc.so.6[7f0d2c828000+155000]\n"
)


@pytest.mark.parametrize("text", NON_FATAL.values(), ids=NON_FATAL.keys())
def test_a_report_the_guest_lives_on_after_is_no_console_fault(text: str) -> None:
    from irqlab.vm.kernlog import kernel_splats

    assert scan_console(text) is None
    assert not CONSOLE_FAULT.search(text)  # a command killed after it waits for no oops
    assert kernel_splats(text), text  # the kernel-log check reports it (as it did)


def test_a_user_process_general_protection_fault_is_no_kernel_report() -> None:
    """A process's crash (its "traps:" line) is no kernel bug: neither the watch's fault
    nor the kernel-log check's splat (the check failed the test that crashed one)."""
    from irqlab.vm.kernlog import kernel_splats

    assert scan_console(USER_GPF) is None and not CONSOLE_FAULT.search(USER_GPF)
    assert kernel_splats(USER_GPF) == []


def test_an_oops_is_named_by_the_bug_line_a_look_before_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch reads the console a look at a time: the BUG line may come in one and
    its oops in the next; the BUG line alone is no fault."""
    from types import SimpleNamespace

    from irqlab.vm import health

    console = tmp_path / "console.log"
    console.write_text(NON_FATAL["sleeping-function"] + NULL_DEREF.split("#PF: error")[0])
    machine = SimpleNamespace(
        config=SimpleNamespace(name="t", console=True),
        paths=SimpleNamespace(console_log=console, log_dir=tmp_path),
        is_running=lambda: True,
        take_events=lambda names, timeout: [],
        stderr_tail=lambda: "",
    )
    monkeypatch.setattr(health, "GRACE", 0.0)
    watch = health.HealthWatch(machine, lambda f: None, freeze_timeout=None, qmp_every=3600)  # type: ignore[arg-type]
    assert watch.check() is None and watch.check() is None
    with console.open("a") as f:
        f.write("[    3.5] #PF: error_code(0x0000) - not-present page\n")
        f.write("[    3.5] PGD 0 P4D 0\n[    3.5] Oops: 0000 [#1] PREEMPT SMP NOPTI\n")
    fault = watch.check()
    assert fault is not None, "no verdict on the oops"
    assert fault.cause == (
        "guest kernel oops: BUG: kernel NULL pointer dereference, address: 0000000000000008"
    )


def test_console_scan_ignores_a_healthy_console() -> None:
    assert scan_console("IRQLAB-READY uptime=1.52\n[ 2.0] irqlab: loaded\n") is None


def test_a_fault_names_its_cause_in_the_first_line() -> None:
    e = GuestFault(Fault("guest kernel panic: x", "line 1\nline 2", "qemu said"), "running 'y'")
    lines = str(e).splitlines()
    assert lines[0] == "guest kernel panic: x (running 'y')"
    assert "line 2" in lines and "qemu said" in lines


def test_a_long_oops_is_shown_from_its_first_line_not_only_its_last_lines() -> None:
    before = [f"boot line {i}" for i in range(30)]
    oops = ["BUG: kernel NULL pointer dereference", "RIP: 0010:mine_init+0x13"]
    trace = [f"trace line {i}" for i in range(80)]
    text = "\n".join(before + oops + trace)
    found = console_excerpt(text, "BUG: kernel NULL pointer dereference")
    assert found is not None
    excerpt, span = found
    lines = excerpt.splitlines()
    assert lines[:11] == [*before[-10:], oops[0]] and lines[11] == oops[1]
    assert "[... " in excerpt and lines[-1] == "trace line 79"  # and how it ends
    assert span == "from 10 lines before the fault"
    assert len(lines) == TAIL_LINES + 1 + 8
    # a fault among the last lines anyway, or not found: the plain tail does
    assert console_excerpt("\n".join(before + oops), oops[0]) is None
    assert console_excerpt(text, "no such line") is None
    fault = Fault("guest kernel oops: BUG: x", excerpt, console_span=span)
    assert f"--- guest console ({span})\n" in fault.describe()


USERNET = """Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  12       127.0.0.1 44519       10.0.2.15    22     0     0
  TCP[ESTABLISHED]   14       10.0.2.15 51234        10.0.2.2  8080     0     0
"""


def test_the_forwarded_port_is_read_back_from_qemu() -> None:
    assert parse_usernet(USERNET, 22) == 44519
    assert parse_usernet(USERNET, 7707) is None


def test_stale_socket_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"irqlab-{dead.pid}-abc123"
    live = tmp_path / f"irqlab-{os.getpid()}-def456"
    other = tmp_path / "irqlab-notapid"
    young = tmp_path / f"irqlab-{dead.pid}-new123"
    for d in (stale, live, other, young):
        d.mkdir()
        (d / "qmp.sock").write_text("")
        if d is not young:  # made a minute ago
            os.utime(d, (time.time() - 60, time.time() - 60))
    assert remove_stale_sock_dirs(tmp_path) == [stale]
    # a new one stays: its owner (another pid namespace) may not hold its lock yet
    assert not stale.exists() and live.exists() and other.exists() and young.exists()


GONE = 999_999_999  # a pid no process has (above the kernel's pid_max)


def test_prune_logs_leaves_what_a_running_process_writes(tmp_path: Path) -> None:
    """A guest that runs for hours writes into its files, not its directory: by the
    directory's age it was among the oldest, and its logs went while it ran."""
    now = time.time()
    # another process's (this one's own go once closed: test_log_runs.py)
    mine = tmp_path / f"shell-20261206-000000-{os.getppid()}-1"
    mine.mkdir()
    os.utime(mine, (now - 1000, now - 1000))
    for i in range(3):
        (tmp_path / f"run-2026120{i}-000000-{GONE}-1").mkdir()
    (tmp_path / f"pytest-20261206-000000-{GONE}").mkdir()
    assert paths.prune_logs(tmp_path, keep_runs=None, keep_other=1) == 2
    assert mine.exists() and (tmp_path / f"pytest-20261206-000000-{GONE}").exists()


def test_prune_logs_keeps_the_newest_runs(tmp_path: Path) -> None:
    for i in range(5):
        d = tmp_path / f"pytest-2026120{i}-000000-{GONE}"
        d.mkdir()
        (d / paths.RUN_OUTCOME).write_text("passed\n")  # a failed one is kept longer
        os.utime(d, (time.time() - 100 + i, time.time() - 100 + i))
    (tmp_path / "e2e-x").mkdir()
    assert paths.prune_logs(tmp_path, keep_runs=2) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e2e-x",
        f"pytest-20261203-000000-{GONE}",
        f"pytest-20261204-000000-{GONE}",
    ]


def test_prune_logs_keeps_the_newest_other_entries_files_too(tmp_path: Path) -> None:
    """A script's or the CLI's guest runs and an agent's top-level log files were never
    pruned (99 runs had piled up); the recipes' build/ logs stay."""
    now = time.time()
    for i in range(4):
        d = tmp_path / f"run-2026120{i}-000000-{GONE}-1"
        d.mkdir()
        f = tmp_path / f"agent-2026120{i}-000000.rx.jsonl"
        f.write_text("{}\n")
        for k, p in enumerate((d, f)):  # newest last: agent-3, run-3, agent-2, ...
            os.utime(p, (now - 100 + 2 * i + k, now - 100 + 2 * i + k))
    (tmp_path / "build").mkdir()
    os.utime(tmp_path / "build", (now - 1000, now - 1000))
    assert paths.prune_logs(tmp_path, keep_other=3) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent-20261202-000000.rx.jsonl",
        "agent-20261203-000000.rx.jsonl",
        "build",
        f"run-20261203-000000-{GONE}-1",
    ]  # the newest three but build/, which stays whatever its age


def test_prune_logs_leaves_the_users_own_files(tmp_path: Path) -> None:
    """A log directory the user named (--irqlab-log-dir ~/work) may hold their files:
    beyond the newest 50 "other entries" they were removed, the oldest first."""
    old = time.time() - 10_000
    mine = [tmp_path / f"thesis-chapter-{i:02d}.txt" for i in range(60)]
    for p in mine:
        p.write_text("data\n")
        os.utime(p, (old, old))
    (tmp_path / "my-project").mkdir()
    os.utime(tmp_path / "my-project", (old, old))
    for i in range(3):
        (tmp_path / f"run-2026120{i}-000000-{GONE}-1").mkdir()
    assert paths.prune_logs(tmp_path, keep_other=1) == 2  # irqlab's own, the oldest two
    assert all(p.exists() for p in mine) and (tmp_path / "my-project").is_dir()


def test_a_deeply_nested_request_is_refused_not_a_crash() -> None:
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_request(b'{"id": 1, "op": "ping", "x": ' + b"[" * 100_000 + b"}")


def test_an_overlong_request_line_is_refused_and_skipped() -> None:
    stream = io.BytesIO(b"x" * (MAX_LINE + 10) + b"\n" + b'{"id": 2, "op": "ping"}\n')
    first = read_line(stream)
    with pytest.raises(ProtocolError, match="longer than"):
        parse_request(first)
    assert parse_request(read_line(stream)).id == 2


def test_the_agent_survives_hostile_lines_end_to_end(tmp_path: Path, abi_json: Path) -> None:
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    try:
        agent.wait_hello(30)
        agent.send_raw(b"[" * 100_000)
        agent.send_raw(b'{"id": 99, "op": "' + b"p" * (MAX_LINE + 1) + b'"}')
        assert agent.request("ping", timeout=30)["ok"]
        assert agent.process.poll() is None
    finally:
        agent.close(timeout=5)


def test_a_request_to_a_dead_agent_names_its_exit(tmp_path: Path, abi_json: Path) -> None:
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    agent.process.kill()
    agent.process.wait(10)
    with pytest.raises(AgentError, match="agent exited"):
        for _ in range(3):  # the first write may still land in the pipe buffer
            agent.ping(timeout=5)
    agent.close(timeout=5)


def test_a_request_when_the_guest_died_names_the_fault_not_an_agent_exit(
    tmp_path: Path, abi_json: Path
) -> None:
    """After a freeze the first line was the fault, the second "agent exited (end of
    output)": the agent had not exited, the guest had stopped."""
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    fault = Fault("guest stopped responding: a test says so", "")
    agent._diagnose = lambda: fault
    agent.process.kill()
    agent.process.wait(10)
    with pytest.raises(AgentError) as info:
        for _ in range(3):  # the first write may still land in the pipe buffer
            agent.ping(timeout=5)
    first, second = str(info.value).splitlines()[:2]
    assert first.startswith("guest stopped responding: a test says so"), first
    assert second.startswith("(the agent's session ended with it; logs "), second
    assert isinstance(info.value, GuestFault) and info.value.fault is fault  # AgentFault
    agent.close(timeout=5)


def test_an_agent_wait_that_times_out_on_a_frozen_guest_names_the_fault(
    tmp_path: Path, abi_json: Path
) -> None:
    """A request shorter than the heartbeat's limit (a ping's 10 s) on a frozen guest
    said only "timeout (10s) waiting for response to request 2"."""
    import signal

    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    fault = Fault("guest stopped responding: a test says so", "")
    verdicts: list[Fault | None] = [None, fault]  # no verdict (it runs), then the freeze
    agent._frozen = lambda: verdicts.pop(0)
    os.kill(agent.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(AgentTimeout, match=r"^timeout \(0.2s\) waiting for response"):
            agent.ping(timeout=0.2)  # the guest runs: its own timeout
        with pytest.raises(AgentError) as info:
            agent.ping(timeout=0.2)
        first, second = str(info.value).splitlines()[:2]
        assert first.startswith("guest stopped responding: a test says so (waiting for "), first
        assert second.startswith("(the agent's session ended with it; logs "), second
        assert isinstance(info.value, GuestFault) and info.value.fault is fault  # AgentFault
        assert not verdicts
    finally:
        os.kill(agent.process.pid, signal.SIGCONT)
        agent.close(timeout=5)


def test_an_agent_wait_that_times_out_while_the_agent_is_given_up_names_that(
    tmp_path: Path, abi_json: Path
) -> None:
    """A stopped agent in a guest that answers: the request's timeout came first, the
    wait for the verdict then saw the watch give the session up (abandon()), and the
    request said "timeout (30s) waiting for response to request 2" (4 threads, each
    after 37.8 s), not the verdict the notice had printed."""
    import signal

    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    agent._diagnose = lambda: pytest.fail("no guest verdict to wait for")  # type: ignore[assignment,return-value]

    def frozen() -> Fault | None:  # the watch's verdict on the agent, during the wait
        agent.abandon("agent stopped responding: a test says so")
        return None  # the guest has no fault

    agent._frozen = frozen
    os.kill(agent.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(AgentError) as info:
            agent.ping(timeout=0.2)
        assert not isinstance(info.value, (AgentTimeout, GuestFault)), info.value
        first = str(info.value).splitlines()[0]
        assert first.startswith(
            "agent stopped responding: a test says so (waiting for response to request "
        ), first
    finally:
        os.kill(agent.process.pid, signal.SIGCONT)
        agent.close(timeout=5)


def test_an_agent_wait_the_guests_death_ends_says_what_it_waited_for_on_the_first_line(
    tmp_path: Path, abi_json: Path
) -> None:
    """The fault's console tail spans many lines: "(waiting for message {...})" came
    after its last line, not on the cause's line as a GuestFault's does."""
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    tail = "[   12.345678] sysrq: Trigger a crash\n[   12.345999] Call Trace:"
    fault = Fault(
        "guest kernel panic: Kernel panic - not syncing: sysrq triggered crash", tail, "bye"
    )
    agent._diagnose = lambda: fault
    agent.process.kill()
    agent.process.wait(10)
    with pytest.raises(AgentError) as info:
        agent.expect(path="read", timeout=5)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(fault.cause + " (waiting for message {"), lines[0]
    assert lines[0].endswith(")") and "'read'" in lines[0], lines[0]
    # the console's tail and QEMU's words follow as in a GuestFault, the agent's note last
    assert lines[1:6] == [
        "--- guest console (last 40 lines)",
        *tail.splitlines(),
        "--- QEMU said",
        "bye",
    ]
    assert lines[6].startswith("(the agent's session ended with it; logs "), lines
    assert isinstance(info.value, GuestFault) and info.value.fault is fault
    agent.close(timeout=5)


def test_legacy_socket_dirs_go_once_old_and_unused(tmp_path: Path) -> None:
    import socket

    old_unused = tmp_path / "irqlab-ab12cd34"
    old_in_use = tmp_path / "irqlab-ef56gh78"
    recent = tmp_path / "irqlab-ij90kl12"
    for d in (old_unused, old_in_use, recent):
        d.mkdir()
    (old_unused / "qmp.sock").write_text("")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(old_in_use / "qmp.sock"))
        live.listen()
        past = time.time() - 3600
        for d in (old_unused, old_in_use):
            os.utime(d, (past, past))
        assert remove_stale_sock_dirs(tmp_path) == [old_unused]
    assert old_in_use.exists() and recent.exists()


def test_the_report_header_reads_the_newest_x86_64_qemu_not_another_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest QEMU output was the aarch64 build (no qemu-system-x86_64): the header
    said "accel unknown (No such file ...)"."""
    from irqlab.build import cache
    from irqlab.testing.diagnostics import report_header

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("IRQLAB_ACCEL", "tcg")  # no probe of the stand-in binaries
    for i, (digest, target, version) in enumerate(
        [("1" * 16, "x86_64", "7.2.22 (x86)"), ("2" * 16, "aarch64", "7.2.22 (arm)")]
    ):

        def fill(tmp: Path, target: str = target, version: str = version) -> None:
            (tmp / "bin").mkdir()
            (tmp / "bin" / f"qemu-system-{target}").write_text("")
            (tmp / "VERSION").write_text(version)

        out = cache.cached_build("qemu", digest, fill, evict=False)
        os.utime(out, (time.time() - 10 + i, time.time() - 10 + i))  # aarch64 newest
    for i, (digest, release) in enumerate(
        [("3" * 16, "6.1.0-57-amd64"), ("4" * 16, "6.1.0-57-arm64")]
    ):

        def fill_kernel(tmp: Path, release: str = release) -> None:
            (tmp / "root" / "lib" / "modules" / release).mkdir(parents=True)

        out = cache.cached_build("kernel", digest, fill_kernel, evict=False)
        os.utime(out, (time.time() - 10 + i, time.time() - 10 + i))  # arm64 newest
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    monkeypatch.setenv("IRQLAB_IMAGE", "debian")
    header = report_header()
    assert header.startswith("irqlab: arch x86_64, QEMU 7.2.22 (x86)"), header
    assert "kernel 6.1.0-57-amd64" in header, header  # not the newest kernel: arm64's
    assert "accel tcg forced" in header, header
    # an aarch64 session: its QEMU, its kernel, and why TCG
    monkeypatch.setenv("IRQLAB_ARCH", "aarch64")
    monkeypatch.setenv("IRQLAB_ACCEL", "kvm")
    header = report_header()
    assert header.startswith("irqlab: arch aarch64, QEMU 7.2.22 (arm)"), header
    assert "kernel 6.1.0-57-arm64" in header, header
    assert "accel tcg: an aarch64 guest on an" in header, header
    assert "the KVM asked for is not used" in header, header


def test_a_request_on_a_closed_session_is_an_agent_error(tmp_path: Path, abi_json: Path) -> None:
    """A session kept after close() (g.agent saved in a variable) raised ValueError: I/O
    operation on closed file (its log)."""
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    agent.close(timeout=5)
    with pytest.raises(AgentError, match="session is closed"):
        agent.ping(timeout=5)
    # a wait on it says so at once (it said "agent exited (end of output)" after 2 s)
    started = time.monotonic()
    with pytest.raises(AgentError, match=r"session is closed .*: waiting for an event"):
        agent.next_event(timeout=30)
    assert time.monotonic() - started < 5
    agent.close(timeout=5)  # twice: nothing more to do


def test_an_agent_wait_refuses_a_timeout_or_count_that_is_no_wait(
    tmp_path: Path, abi_json: Path
) -> None:
    """next_event(timeout="5") raised TypeError from deep inside; events(-1) was []."""
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    try:
        agent.wait_hello(30)
        with pytest.raises(TypeError, match="timeout must be a number of seconds, not '5'"):
            agent.next_event(timeout="5")  # type: ignore[arg-type]
        with pytest.raises(
            ValueError, match=r"timeout must be 0 or more and at most 604800 s \(a week\), not -1"
        ):
            agent.next_event(timeout=-1)
        with pytest.raises(ValueError, match=r"events: n must be a count >= 0, not -1"):
            agent.events(-1)
        assert agent.events(0) == []
        with pytest.raises(AgentTimeout):  # 0: look once, do not wait
            agent.next_event(timeout=0)
    finally:
        agent.close(timeout=5)


class _SilentMachine:
    """The part of Machine the watch's QMP look uses: a running QEMU whose ping fails
    with *cause* (as Machine.qmp_ping raises it: a MachineError from the QMP error)."""

    def __init__(self, cause: Exception, *, exits: bool = False) -> None:
        self.config = type("Config", (), {"name": "t"})()
        self.paths = None
        self.cause = cause
        self.exits = exits  # whether it exits while the watch waits for that
        self.running = True
        self.looks_after_ping = 0  # is_running() calls after a failed ping

    def qmp_ping(self, timeout: float) -> str:
        from irqlab.vm.machine import MachineError

        self.looks_after_ping = 0
        raise MachineError(str(self.cause)) from self.cause

    def is_running(self) -> bool:
        self.looks_after_ping += 1
        if self.exits and self.looks_after_ping > 2:
            self.running = False
        return self.running

    def take_events(self, names: Sequence[str], timeout: float = 2.0) -> list[dict[str, Any]]:
        return []

    @property
    def returncode(self) -> int | None:
        return None if self.running else 1

    def stderr_tail(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("cause", "verdict_ends"),
    [
        # the time limit is what the verdict says: not a second time in parentheses
        (QMPNoReply("QMP query-status: no reply within 3 s"), "within 3 s"),
        (
            QMPFailure("QMP query-status: connection lost before the reply (EOF)"),
            "within 3 s (QMP query-status: connection lost before the reply (EOF))",
        ),
    ],
    ids=["no-reply", "other"],
)
def test_a_silent_qmp_is_said_once(
    monkeypatch: pytest.MonkeyPatch, cause: Exception, verdict_ends: str
) -> None:
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    monkeypatch.setattr(health, "EXIT_AFTER_LOST_QMP_S", 0.1)
    machine = _SilentMachine(cause)
    watch = health.HealthWatch(machine, lambda f: None)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: None)
    fault = watch._check_qmp()
    assert fault is not None
    assert fault.cause == f"guest stopped responding: QEMU did not answer QMP {verdict_ends}"
    # a closed socket (not a silence) first waits a moment for QEMU's exit
    looked = machine.looks_after_ping
    assert looked == 1 if isinstance(cause, QMPNoReply) else looked > 2, looked


def test_a_stop_ends_the_wait_for_an_exit_after_qmp_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guest.close() of a stopped QEMU aborts the watch's QMP ping and stops the watch:
    the wait for QEMU's exit that a lost socket begins ends at once (a close took 5 s)."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    machine = _SilentMachine(QMPFailure("QMP query-status: aborted"))
    watch = health.HealthWatch(machine, lambda f: None)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: None)
    watch.stop(wait=0)
    t0 = time.monotonic()
    watch._check_qmp()
    assert time.monotonic() - t0 < health.EXIT_AFTER_LOST_QMP_S / 2


PANIC_CONSOLE = """\
[    4.6] sysrq: Trigger a crash
[    4.6] Kernel panic - not syncing: sysrq triggered crash
[    4.6] CPU: 1 PID: 212 Comm: sh Not tainted 6.1.0-57-amd64 #1  Debian 6.1.158-1
[    4.6]  </TASK>
"""


class _PanickingMachine(_SilentMachine):
    """A QEMU whose guest's panic reaches the console while the watch's ping fails:
    after the look's first read of the console, as on a loaded host."""

    def __init__(self, console: Path, exits: bool) -> None:
        super().__init__(QMPFailure("QMP query-status: not connected"), exits=exits)
        self.console = console

    def qmp_ping(self, timeout: float) -> str:
        with self.console.open("a") as f:
            f.write(PANIC_CONSOLE)
        return super().qmp_ping(timeout)


@pytest.mark.parametrize("landed", ["before-the-look", "during-the-ping"])
@pytest.mark.parametrize("exits", [False, True], ids=["exit-slow", "exits-in-the-wait"])
def test_qmp_lost_after_a_panic_on_the_console_is_the_panic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exits: bool, landed: str
) -> None:
    """QEMU closes its QMP socket as it exits after the guest's panic; under a loaded
    host the watch's ping met the closed socket before it saw the panic line (within
    its grace period) or the exit: the verdict was "guest stopped responding: QEMU did
    not answer QMP ... (not connected)".  The console's line names the cause."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    monkeypatch.setattr(health, "EXIT_AFTER_LOST_QMP_S", 0.1)
    console = tmp_path / "console.log"
    if landed == "before-the-look":  # read by the look, within its grace period
        console.write_text("[    1.0] booted\n" + PANIC_CONSOLE)
        machine = _SilentMachine(QMPFailure("QMP query-status: not connected"), exits=exits)
    else:  # only the read after the QMP fault sees it
        console.write_text("[    1.0] booted\n")
        machine = _PanickingMachine(console, exits)
    watch = health.HealthWatch(machine, lambda f: None, qmp_every=0.0)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    watch._next_qmp = 0.0
    fault = watch.check() or watch.check()  # an exit in the wait: said on the next look
    assert fault is not None
    assert fault.cause == "guest kernel panic: Kernel panic - not syncing: sysrq triggered crash"
    assert "</TASK>" in fault.console_tail
    assert fault.qmp_silent == (not exits)  # still silent: no caller waits on QMP


# An interrupt handler's NULL dereference (x86_64, Debian 6.1): the oops, then the panic
# it leads to, more than TAIL_LINES lines later
IRQ_OOPS = [
    "[    5.97] irqoops 0000:00:04.0: irqoops: bound",
    "[    5.98] BUG: kernel NULL pointer dereference, address: 0000000000000000",
    "[    5.98] #PF: supervisor write access in kernel mode",
    "[    5.98] Oops: 0002 [#1] PREEMPT SMP NOPTI",
    "[    5.99] RIP: 0010:irqoops_irq+0x5/0x20 [irqoops]",
    "[    5.99] Call Trace:",
    "[    5.99]  <IRQ>",
    "[    5.99]  __handle_irq_event_percpu+0x46/0x190",
]
IRQ_PANIC = [
    *(f"[    6.0{i % 10}]  ? trace line {i}" for i in range(60)),
    "[    6.07] RIP: 0010:irqoops_irq+0x5/0x20 [irqoops]",
    "[    6.09] Kernel panic - not syncing: Fatal exception in interrupt",
]


@pytest.mark.parametrize("looks", ["one-look", "oops-then-panic"])
def test_a_panic_after_an_oops_is_told_and_shown_with_the_oops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, looks: str
) -> None:
    """An IRQ handler's NULL dereference ends in "Fatal exception in interrupt": the
    verdict named the panic alone and showed the console's last 40 lines, which began
    in the middle of the second register dump: no BUG line, no handler in a trace."""
    from irqlab.vm import health

    console = tmp_path / "console.log"
    machine = _SilentMachine(QMPFailure("unused"))
    watch = health.HealthWatch(machine, lambda f: None)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    if looks == "oops-then-panic":  # the panic within the oops's grace, a look later
        console.write_text("\n".join(IRQ_OOPS) + "\n")
        assert watch.check() is None
        with console.open("a") as f:
            f.write("\n".join(IRQ_PANIC) + "\n")
    else:
        console.write_text("\n".join(IRQ_OOPS + IRQ_PANIC) + "\n")
    machine.running = False  # QEMU exits after the panic
    fault = watch.check()
    assert fault is not None
    assert fault.cause == (
        "guest kernel panic: Kernel panic - not syncing: Fatal exception in interrupt, "
        "after an oops: BUG: kernel NULL pointer dereference, address: 0000000000000000"
    )
    assert fault.console_span == "from 10 lines before the fault"
    shown = fault.console_tail.splitlines()
    assert shown[: len(IRQ_OOPS)] == IRQ_OOPS  # from the oops's start, its trace too
    assert shown[-1] == IRQ_PANIC[-1]  # and to the panic
    # a panic of its own (no oops before it) is told and shown as before
    machine.running = True
    plain = health.HealthWatch(machine, lambda f: None)  # type: ignore[arg-type]
    console.write_text("\n".join(IRQ_PANIC) + "\n")
    monkeypatch.setattr(plain, "_console_log", lambda: console)
    machine.running = False
    fault = plain.check()
    assert fault is not None
    assert fault.cause == f"guest kernel panic: {IRQ_PANIC[-1].partition('] ')[2]}"
    assert fault.console_span == f"last {TAIL_LINES} lines"


class _WaitingMachine(_SilentMachine):
    """A running QEMU whose ping waits until *release* is set, then answers *status*
    (or fails with *cause*, as _SilentMachine)."""

    def __init__(self, cause: Exception | None) -> None:
        super().__init__(cause or RuntimeError())
        self.fails = cause is not None
        self.release = threading.Event()

    def qmp_ping(self, timeout: float) -> str:
        assert self.release.wait(10)
        if self.fails:
            return super().qmp_ping(timeout)
        return "running"


@pytest.mark.parametrize(
    "cause", [None, QMPNoReply("no reply within 3 s")], ids=["answered", "silent"]
)
def test_the_watch_says_while_its_qmp_ping_is_in_flight(
    monkeypatch: pytest.MonkeyPatch, cause: Exception | None
) -> None:
    """qmp_pings counts the pings begun, qmp_ping_pending holds while one waits for its
    reply (a test closes a stopped QEMU then), and is cleared however the ping ended."""
    from irqlab.vm import health

    machine = _WaitingMachine(cause)
    watch = health.HealthWatch(machine, lambda f: None)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: None)
    assert (watch.qmp_pings, watch.qmp_ping_pending) == (0, False)
    result: list[Fault | None] = []
    t = threading.Thread(target=lambda: result.append(watch._check_qmp()))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not watch.qmp_ping_pending and time.monotonic() < deadline:
            time.sleep(0.001)
        assert (watch.qmp_pings, watch.qmp_ping_pending) == (1, True)
    finally:
        machine.release.set()
        t.join(10)
    assert (watch.qmp_pings, watch.qmp_ping_pending) == (1, False)
    assert (result[0] is None) == (cause is None), result


def test_console_text_shown_to_the_user_has_no_terminal_controls(tmp_path: Path) -> None:
    """The guest's prompt asks the terminal for the cursor position (ESC [ 6 n): in an
    excerpt printed on the user's terminal, the answer landed in their shell."""
    raw = "irqlab:/# \x1b[6n[    3.49] BUG: kernel NULL pointer\r\n"
    raw += "\x1b[1;31mred\x1b[0m\ttab\x07\r\n"
    assert printable(raw) == "irqlab:/# [    3.49] BUG: kernel NULL pointer\nred\ttab\n"
    log = tmp_path / "console.log"
    log.write_text(raw)
    assert file_tail(log) == "irqlab:/# [    3.49] BUG: kernel NULL pointer\nred\ttab"
    text = "\n".join([f"line {i}" for i in range(30)] + [raw] + [f"after {i}" for i in range(60)])
    found = console_excerpt(text, "BUG: kernel NULL pointer")
    assert found is not None and "\x1b" not in found[0] and "\r" not in found[0], found
    assert file_tail(tmp_path / "missing.log") == ""


def test_the_errors_a_guest_raises_are_exported_beside_it() -> None:
    """mypy --strict refused `from irqlab.vm.guest import GuestFault` (not explicitly
    exported); a user had to know irqlab.vm.health, .agent_client and .ssh."""
    import irqlab.vm.guest as guest
    from irqlab.errors import IrqlabError
    from irqlab.vm.agent_client import AgentError, AgentFault

    names = ("AgentError", "AgentFault", "AgentTimeout", "CommandError", "GuestError")
    names += ("GuestFault", "IrqlabError", "ModuleLoadError", "SshError", "RunResult")
    for name in names:
        assert name in guest.__all__ and hasattr(guest, name), name
    assert issubclass(AgentFault, GuestFault) and issubclass(AgentFault, AgentError)
    e = AgentFault("guest kernel panic: x (waiting for y)", Fault("guest kernel panic: x", ""))
    assert isinstance(e, IrqlabError) and e.fault.cause == "guest kernel panic: x"
    assert str(e) == "guest kernel panic: x (waiting for y)" and e.response is None


def test_a_fault_survives_pickle_and_copy() -> None:
    """A process pool's worker that raised GuestFault broke the pool: unpickling called
    __init__ with the message where a Fault belongs."""
    import copy
    import pickle

    from irqlab.vm.agent_client import AgentFault

    fault = Fault("guest kernel panic: x", "line 1\nline 2", log_dir="/logs/g-1")
    faults = [GuestFault(fault, "running 'y'"), AgentFault("guest kernel panic: x (y)", fault)]
    for e in faults:
        for again in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
            assert type(again) is type(e) and str(again) == str(e)
            assert again.fault == fault
            assert getattr(again, "__notes__", None) == getattr(e, "__notes__", None)


def test_a_fault_names_where_its_logs_are() -> None:
    """A guest that died under a script's command said why, not where its console
    and QEMU's output were (a failed start did)."""
    e = GuestFault(Fault("QEMU exited with status -9", "", log_dir="/logs/g-1"), "running 'x'")
    assert e.__notes__ == ["logs: /logs/g-1"]
    assert not hasattr(GuestFault(Fault("guest kernel panic: x", "")), "__notes__")


def test_dmesg_since_leaves_out_the_harness_step_markers() -> None:
    from irqlab.testing.diagnostics import GuestDiagnostics, dmesg_since
    from irqlab.vm.guest import STEP_KMSG_MARK

    text = "\n".join(
        [
            "[    1.000000] early",
            f"[    2.000000] {STEP_KMSG_MARK}141-3.33",
            "[    2.500000] irqlab 0000:00:03.0: probed",
            "    a continuation line",
        ]
    )
    assert dmesg_since(text, 1.5) == ["[    2.500000] irqlab 0000:00:03.0: probed",
                                      "    a continuation line"]  # fmt: skip
    assert dmesg_since(text, None)[0] == "[    1.000000] early"
    assert len(dmesg_since(text, None)) == 3
    d = GuestDiagnostics(guest=None, rx_log=None, rx_offset=0)  # type: ignore[arg-type]
    d.mark(None)
    assert d.since is None
    d.mark(2_250_000_000)
    d.mark(9_000_000_000)  # the first reset of the test's setup counts
    assert d.since == 2.25


def test_a_missing_aarch64_qemu_names_the_cache_it_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As x86_64's does: a wrong $IRQLAB_CACHE_DIR is not a build to start."""
    from irqlab.vm.guest import Guest, GuestConfig, PrerequisiteMissing

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(PrerequisiteMissing) as e:
        Guest(GuestConfig(arch="aarch64")).prepare()
    assert "qemu-system-aarch64" in str(e.value), e.value
    assert f"looked in the build cache {tmp_path}" in str(e.value), e.value


def test_the_watch_survives_a_check_that_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A look that fails (a QMP wait that timed out on a loop busy with a big pipelined
    batch: LoopTimeout) is logged and the watch goes on: it died of it, and the guest's
    panic afterwards went unnamed."""
    from irqlab.vm import health
    from irqlab.vm.aioloop import LoopTimeout

    faults: list[Fault] = []
    watch = health.HealthWatch(_SilentMachine(RuntimeError()), faults.append, tick=0.01)  # type: ignore[arg-type]
    looks = iter([LoopTimeout("timed out after 3.0 s"), OSError("gone"), None])

    def check() -> Fault | None:
        step = next(looks)
        if isinstance(step, Exception):
            raise step
        return Fault("guest kernel panic: Kernel panic - not syncing: sysrq", "")

    monkeypatch.setattr(watch, "check", check)
    with caplog.at_level(logging.DEBUG, logger="irqlab.vm.health"):
        watch.start()
        fault = watch.wait_verdict(10.0)
        watch.join(5.0)
    assert fault is not None and faults == [fault]
    assert fault.cause.startswith("guest kernel panic")
    failed = [r for r in caplog.records if "a check failed" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.WARNING, logging.DEBUG]


class _QuietMachine(_SilentMachine):
    """A running QEMU that answers QMP: the guest inside is what stopped."""

    def __init__(self) -> None:
        super().__init__(RuntimeError())

    def qmp_ping(self, timeout: float) -> str:
        return "running"


class _SilentAgent:
    eof = False
    hello_message: dict[str, Any] | None = None

    def __init__(self, silent_for: float) -> None:
        self.last_heartbeat = time.monotonic() - silent_for


@pytest.mark.parametrize("stall", [True, False], ids=["soft-lockup", "nothing-said"])
def test_a_silent_agent_is_named_by_the_kernels_stall_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stall: bool
) -> None:
    """A driver's IRQ handler that spins: the console said "BUG: soft lockup" ~20 s
    before the heartbeat's verdict, which said only that the agent was silent."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    console = tmp_path / "console.log"
    lockup = "watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [insmod:212]"
    console.write_text(
        "[    1.0] booted\n" + (f"[   36.1] {lockup}\n[   36.1] Modules linked in: mydrv\n" * stall)
    )
    watch = health.HealthWatch(
        _QuietMachine(),  # type: ignore[arg-type]
        lambda f: None,
        agent=lambda: _SilentAgent(20.0),  # type: ignore[arg-type,return-value]
        freeze_timeout=10.0,
        qmp_every=1e9,
    )
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    fault = watch.check()
    assert fault is not None
    head = "guest stopped responding: no agent heartbeat for 20 s (limit 10 s: 10 s x host load)"
    if stall:
        assert fault.cause == f"{head}; the kernel said: {lockup.removeprefix('watchdog: ')}"
        assert "Modules linked in: mydrv" in fault.console_tail
    else:
        assert fault.cause == head


def test_a_stall_report_the_guest_got_over_is_not_quoted_later(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A hung-task report the agent's heartbeat outlived (a test with
    check_kernel_log=False) was quoted in every later freeze verdict."""
    from types import SimpleNamespace

    from irqlab.vm import health

    clock = [1000.0]
    monkeypatch.setattr(health, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    console = tmp_path / "console.log"
    console.write_text("[   30.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.\n")
    agent = _SilentAgent(0.0)
    agent.last_heartbeat = clock[0]
    watch = health.HealthWatch(
        _QuietMachine(),  # type: ignore[arg-type]
        lambda f: None,
        agent=lambda: agent,  # type: ignore[arg-type,return-value]
        freeze_timeout=10.0,
        qmp_every=1e9,
    )
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    assert watch.check() is None  # the report is read; the agent beats on
    clock[0] += 5.0
    agent.last_heartbeat = clock[0]  # after the report
    clock[0] += 20.0  # then silence
    fault = watch.check()
    assert fault is not None
    assert fault.cause == (
        "guest stopped responding: no agent heartbeat for 20 s (limit 10 s: 10 s x host load)"
    )


def test_a_guest_another_look_found_silent_is_named_frozen_with_the_stall_said_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before the agent's heartbeat (a module's load while the guest starts), the
    harness's own look tells the watch the guest is silent (HealthWatch.silent): the
    next look names it frozen, with a stall report the kernel printed since then."""
    from types import SimpleNamespace

    from irqlab.vm import health

    clock = [1000.0]
    monkeypatch.setattr(health, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    console = tmp_path / "console.log"
    console.write_text("[   30.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.\n")
    watch = health.HealthWatch(
        _QuietMachine(),  # type: ignore[arg-type]
        lambda f: None,
        freeze_timeout=10.0,
        qmp_every=1e9,
    )
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    assert watch.check() is None  # no heartbeat yet: nothing to judge by
    clock[0] += 5.0
    since = clock[0]  # what the look saw last answer: the report is older
    clock[0] += 12.0
    lockup = "BUG: soft lockup - CPU#0 stuck for 22s! [insmod:212]"
    with console.open("a") as f:
        f.write(f"[   48.0] watchdog: {lockup}\n")
    watch.silent("its SSH server did not greet for 12 s", since)
    fault = watch.check()
    assert fault is not None
    said = f"the kernel said: {lockup}"
    assert fault.cause == f"guest stopped responding: its SSH server did not greet for 12 s; {said}"
    assert "blocked for more than" in fault.console_tail  # the tail, not the verdict


class _ExitedMachine(_SilentMachine):
    """A QEMU that exited with *status*."""

    def __init__(self, status: int) -> None:
        super().__init__(RuntimeError())
        self.running = False
        self.status = status

    @property
    def returncode(self) -> int | None:
        return self.status


@pytest.mark.parametrize(
    ("status", "said", "cause"),
    [
        (0, "[    6.9] reboot: Power down", "guest powered off (reboot: Power down; "),
        (0, "[    6.9] sysrq: Power Off\n[    6.9] reboot: Power down", "guest powered off ("),
        (0, "[    7.1] reboot: Restarting system", "guest rebooted (reboot: Restarting system; "),
        (0, "[    7.1] sysrq: Resetting", "guest rebooted (sysrq: Resetting; "),
        (0, "[    7.1] reboot: System halted", "guest halted (reboot: System halted; "),
        (0, "[    7.1] all fine", ""),  # QEMU told to terminate (SIGTERM): status 0 too
        (-9, "[    6.9] reboot: Power down", ""),  # killed as it powered off: the kill
    ],
    ids=["poweroff", "sysrq-o", "reboot", "sysrq-b", "halt", "sigterm", "killed"],
)
def test_a_guest_that_powers_off_or_reboots_is_named_by_the_kernels_last_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: int, said: str, cause: str
) -> None:
    """`poweroff -f`, SysRq o or b: QEMU (-no-reboot) exits with status 0, and the
    verdict said only "QEMU exited with status 0"."""
    from irqlab.vm import health

    console = tmp_path / "console.log"
    console.write_text(f"[    1.0] booted\n{said}\n")
    watch = health.HealthWatch(_ExitedMachine(status), lambda f: None)  # type: ignore[arg-type]
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    fault = watch.check()
    assert fault is not None
    exited = f"QEMU exited with status {status}"
    if cause:
        assert fault.cause.startswith(cause) and fault.cause.endswith(f"; {exited})"), fault
    else:
        assert fault.cause == exited, fault
    assert said.splitlines()[-1] in fault.console_tail


OOM = "Out of memory: Killed process {pid} ({comm}) total-vm:311772kB, anon-rss:5808kB, UID:0"


class _Agent(_SilentAgent):
    def __init__(self, pid: int) -> None:
        super().__init__(0.0)
        self.hello_message = {"type": "hello", "pid": pid}


@pytest.mark.parametrize(
    ("killed", "who"),
    [
        ([(139, "python3")], None),  # a memory hog: the guest lives on
        ([(128, "python3"), (110, "dropbear")], "(python3) (the agent)"),
        ([(139, "python3"), (135, "dropbear")], "(dropbear) (the SSH server)"),
    ],
    ids=["hog", "agent", "dropbear"],
)
def test_an_oom_kill_of_the_agent_or_the_ssh_server_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, killed: list[tuple[int, str]], who: str | None
) -> None:
    """A guest whose tmpfs filled its memory: the OOM killer took the agent, then
    dropbear; the user saw "agent exited (end of output)" or "command failed (rc=-1)",
    no cause, no console.  A hog's kill stays no fault."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    monkeypatch.setattr(health, "GRACE", 0.0)
    console = tmp_path / "console.log"
    lines = [
        f"[    5.{i}] {OOM.format(pid=pid, comm=comm)}" for i, (pid, comm) in enumerate(killed)
    ]
    console.write_text(
        "[    1.0] booted\n[    5.0] dd: writing: no space\n" + "\n".join(lines) + "\n"
    )
    watch = health.HealthWatch(
        _QuietMachine(),  # type: ignore[arg-type]
        lambda f: None,
        agent=lambda: _Agent(128),  # type: ignore[arg-type,return-value]
        qmp_every=1e9,
    )
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    fault = watch.check() or watch.check()  # the grace period's end: the next look
    if who is None:
        assert fault is None
        return
    assert fault is not None
    assert fault.cause.startswith("guest out of memory: Out of memory: Killed process "), fault
    assert fault.cause.endswith(who), fault
    assert "dd: writing: no space" in fault.console_tail  # the console from before it


class _Console:
    """The part of Console a command's end reads: bytes so far, a look since a mark."""

    def __init__(self, before: str) -> None:
        self.data = before

    def size(self) -> int:
        return len(self.data.encode())

    def since(self, mark: int) -> str:
        return self.data.encode()[mark:].decode()

    def text(self) -> str:
        return self.data

    def shows(self, pattern: Any, since: int, timeout: float) -> bool:
        return bool(pattern.search(self.since(since)))


@pytest.mark.parametrize("oom", [True, False], ids=["oom-killed", "killed-by-the-user"])
def test_a_command_the_oom_killer_killed_says_so(
    monkeypatch: pytest.MonkeyPatch, oom: bool
) -> None:
    """g.sh() of a command the guest's OOM killer killed said only "command failed
    (killed by signal KILL, rc=137)": its CommandError notes the kill (not claimed as
    the command's: it may have been another process's); a SIGKILL of the user's own
    stays as it was."""
    from irqlab.vm.exit_signal import ExitSignal
    from irqlab.vm.guest import Guest, GuestConfig
    from irqlab.vm.ssh import CommandError, RunResult

    g = Guest(GuestConfig(name="t"))
    console = _Console("[    1.0] booted\n")
    killed = OOM.format(pid=140, comm="python3")

    def run(cmd: str, **kw: Any) -> RunResult:
        if oom:
            console.data += f"[    4.9] {killed}\n"
        return RunResult(137, "", "", ExitSignal("KILL", False, ""))

    monkeypatch.setattr(g, "_console", lambda: console)
    monkeypatch.setattr(g, "_run", run)
    with pytest.raises(CommandError) as info:
        g.sh("python3 hog.py")
    assert str(info.value).startswith("command failed (killed by signal KILL, rc=137)")
    notes = getattr(info.value, "__notes__", [])
    if not oom:
        assert notes == [], notes
        return
    assert notes == [
        "guest out of memory: Out of memory: Killed process 140 (python3) while it ran "
        "(the guest lives on)"
    ], notes
    assert g.fault is None  # the guest lives on


class _StoppedAgent(_SilentAgent):
    """An agent silent for 20 s whose session the watch may give up."""

    def __init__(self) -> None:
        super().__init__(20.0)
        self.abandoned: str | None = None

    def abandon(self, cause: str) -> None:
        self.abandoned = cause
        self.eof = True


def _silent_agent_watch(
    monkeypatch: pytest.MonkeyPatch, answers: Callable[[], bool], console: Path | None
) -> tuple[Any, _StoppedAgent]:
    """A health watch over a quiet machine whose agent has been silent 20 s (limit 10 s,
    no load), the SSH greeting probe *answers*, the console log *console*."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    agent = _StoppedAgent()
    watch = health.HealthWatch(
        _QuietMachine(),  # type: ignore[arg-type]
        lambda f: None,
        agent=lambda: agent,  # type: ignore[arg-type,return-value]
        freeze_timeout=10.0,
        answers=answers,
        qmp_every=1e9,
    )
    monkeypatch.setattr(watch, "_console_log", lambda: console)
    return watch, agent


@pytest.mark.parametrize("answers", [True, False], ids=["guest-answers", "guest-silent"])
def test_a_silent_agent_in_a_guest_that_answers_is_the_agents_fault(
    monkeypatch: pytest.MonkeyPatch, answers: bool
) -> None:
    """SIGSTOP of the agent alone: "guest stopped responding: no agent heartbeat" ended
    a g.sh('sleep 120') that ran fine over SSH.  A guest whose SSH server still greets
    loses only its agent session; a guest that does not is named as before."""
    watch, agent = _silent_agent_watch(monkeypatch, lambda: answers, None)
    fault = watch.check()
    why = "no agent heartbeat for 20 s (limit 10 s: 10 s x host load)"
    if answers:
        assert fault is None
        assert agent.abandoned == (
            f"agent stopped responding: {why}; the guest still answers (its SSH server greets)"
        )
        assert watch.check() is None  # given up: not said again
    else:
        assert fault is not None and fault.cause == f"guest stopped responding: {why}"
        assert agent.abandoned is None


def test_an_abandoned_agent_session_names_why_in_every_wait(tmp_path: Path, abi_json: Path) -> None:
    agent = AgentClient.spawn_local(["--spec", str(abi_json)], logs=tmp_path)
    agent.wait_hello(30)
    agent._diagnose = lambda: pytest.fail("no guest verdict to wait for")  # type: ignore[assignment,return-value]
    try:
        agent.abandon("agent stopped responding: a test says so")
        with pytest.raises(AgentError) as info:
            agent.expect(path="read", timeout=5)
        assert str(info.value).startswith("agent stopped responding: a test says so (waiting for")
        assert not isinstance(info.value, (AgentTimeout, GuestFault))
        with pytest.raises(AgentError, match=r"^agent stopped responding: a test says so"):
            agent.ping(timeout=5)
    finally:
        agent.close(timeout=5)


class _PromptAgent:
    """The agent's end of a session, in the test's hands: it answers each request as it
    is written, and what it says is in the client's hands before it returns (the reply
    is there before the wait for it begins, whatever the timing)."""

    def __init__(self, tmp_path: Path) -> None:
        r, w = os.pipe()
        self._out = os.fdopen(w, "wb", buffering=0)
        self.requests: list[dict[str, Any]] = []
        self.client = AgentClient(self, os.fdopen(r, "rb"), logs=tmp_path)  # type: ignore[arg-type]

    def say(self, msg: dict[str, Any]) -> None:
        c = self.client
        self._out.write(json.dumps(msg).encode() + b"\n")
        with c._cond:
            assert c._cond.wait_for(
                lambda: (
                    msg in c._backlog
                    or c._responses.get(msg.get("id")) == msg  # type: ignore[arg-type]
                    or c.hello_message == msg
                ),
                10,
            ), msg

    # the client's stdin
    def write(self, line: bytes) -> int:
        req = json.loads(line)
        self.requests.append(req)
        self.say({"id": req["id"], "ok": True, "pid": 1})
        return len(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._out.close()  # the agent's output ends with its input


ABANDONED_WAITS = {
    "response": lambda a, rid: a.response(rid, timeout=5),
    "request": lambda a, rid: a.ping(timeout=5),
    "next_event": lambda a, rid: a.next_event(timeout=5),
    "expect": lambda a, rid: a.expect(path="read", timeout=5),
    "events": lambda a, rid: a.events(1, path="read", timeout=5),
    "wait_hello": lambda a, rid: a.wait_hello(5),
}


@pytest.mark.parametrize("wait", list(ABANDONED_WAITS))
def test_an_abandoned_agent_session_hands_out_no_reply_that_came(tmp_path: Path, wait: str) -> None:
    """After abandon() a ping answered fast enough was handed out (the wait asked for
    the answer before whether the session was given up): a full unit run under load
    failed test_an_abandoned_agent_session_names_why_in_every_wait with "DID NOT RAISE".
    Here the answer, the event, the hello are there before the wait begins."""
    fake = _PromptAgent(tmp_path)
    agent = fake.client
    agent._diagnose = lambda: pytest.fail("no guest verdict to wait for")  # type: ignore[assignment,return-value]
    try:
        fake.say({"type": "hello", "pid": 1})
        fake.say({"type": "event", "path": "read", "seq": 1})
        rid = agent.submit("ping")  # answered at once
        agent.abandon("agent stopped responding: a test says so")
        with pytest.raises(AgentError) as info:
            ABANDONED_WAITS[wait](agent, rid)
        assert str(info.value).startswith("agent stopped responding: a test says so ("), info.value
        assert not isinstance(info.value, (AgentTimeout, GuestFault))
        # nor is it asked anything more: a stopped agent that goes on would do it
        assert [r["op"] for r in fake.requests] == ["ping"]
    finally:
        agent.close(timeout=5)


@pytest.mark.parametrize("greeting", [b"SSH-2.0-dropbear_2022.83\r\n", b""], ids=["greets", "mute"])
def test_an_ssh_server_that_greets_is_told_from_one_that_only_accepts(greeting: bytes) -> None:
    """A stopped guest's kernel (or QEMU's forward) still accepts the connection."""
    import socket

    from irqlab.vm.health import ssh_greets

    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        conns.append(conn)
        if greeting:
            conn.sendall(greeting)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        assert ssh_greets(server.getsockname()[1], 0.5) == bool(greeting)
        assert time.monotonic() - t0 < 2.0
    finally:
        t.join(5)
        for c in conns:
            c.close()
        server.close()


def test_a_panic_during_the_greeting_probe_is_the_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The SSH greeting probe takes seconds (x load) on the watch's thread: a lockup
    that turned into a panic meanwhile was named "stopped responding"."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    console = tmp_path / "console.log"
    console.write_text("[    1.0] booted\n")

    def probe() -> bool:
        with console.open("a") as f:
            f.write(PANIC_CONSOLE)
        return False

    watch, _agent = _silent_agent_watch(monkeypatch, probe, console)
    fault = watch.check()
    assert fault is not None
    assert fault.cause == "guest kernel panic: Kernel panic - not syncing: sysrq triggered crash"


def test_an_agent_given_up_in_a_guest_that_answers_keeps_the_kernels_stall_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An agent stuck in D state in the driver under test: the hung-task report was
    quoted for a silent guest but dropped when only the agent was given up."""
    from irqlab.vm import health

    monkeypatch.setattr(health, "timeout_scale", lambda: 1.0)
    console = tmp_path / "console.log"
    console.write_text("[  150.0] INFO: task python3:128 blocked for more than 120 seconds.\n")
    watch, agent = _silent_agent_watch(monkeypatch, lambda: True, console)
    assert watch.check() is None
    assert agent.abandoned is not None
    assert "; the kernel said: INFO: task python3:128 blocked for more than" in agent.abandoned
