"""A guest command that outlives its wait is killed in the guest by its tag
(``IRQLAB_CMD=<tag>``), whoever started it: ``SshClient.run`` at its timeout or Ctrl-C,
``open_process``'s at a ``close()`` it does not end by or Ctrl-C, ``irqlab run``'s at
Ctrl-C (closing the channel alone left ``cat /dev/irqlab0`` running); fakes stand in
for paramiko."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
from fake_ssh import FakeChannel, FakeTransport, connected  # same directory

from irqlab.vm.ssh import CMD_TAG_VAR, SshClient, SshTimeout, killed_message, tagged


def kill_finds_two(cmd: str) -> tuple[bytes, int | None]:
    """The guest: the kill's script finds two processes, any other command runs on."""
    return (b"2\n", 0) if "/proc/[0-9]*/environ" in cmd else (b"", None)


def kill_of(tag: str, transport: FakeTransport) -> list[FakeChannel]:
    """The channels on *transport* that ran the kill of *tag*'s processes."""
    pattern = f"IRQLAB_CMD=[{tag[0]}]{tag[1:]}"
    return [ch for ch in transport.opened if any(pattern in c for c in ch.commands)]


def test_tagged_exports_the_tag_before_the_command() -> None:
    tag, line = tagged("cat /dev/irqlab0 | od")
    assert len(tag) == 16 and line == f"export IRQLAB_CMD={tag}; cat /dev/irqlab0 | od"
    assert tagged("true")[0] != tag


def test_open_process_runs_its_command_under_a_tag() -> None:
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    proc = ssh.open_process("cat /dev/irqlab0")
    assert proc.tag and proc.channel.commands == [f"export IRQLAB_CMD={proc.tag}; cat /dev/irqlab0"]


def test_a_process_close_does_not_end_is_killed_by_its_tag() -> None:
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    proc = ssh.open_process("cat /dev/irqlab0")
    assert proc.close(timeout=0.01) == " (killed in the guest: 2 processes)"
    assert len(kill_of(proc.tag, t)) == 1 and proc.channel.closed


def test_a_process_that_ended_is_not_killed() -> None:
    t = FakeTransport(reply=lambda cmd: (b"", 0))
    ssh, _ = connected(t)
    proc = ssh.open_process("true")
    assert proc.close(timeout=5) == ""
    assert t.opened == [proc.channel] and proc.channel.closed


class _Interrupted(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        raise KeyboardInterrupt


def test_ctrl_c_while_close_waits_kills_the_process() -> None:
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    proc = ssh.open_process("cat /dev/irqlab0")
    proc.channel.status_event = _Interrupted()
    with pytest.raises(KeyboardInterrupt):
        proc.close(timeout=60)
    assert len(kill_of(proc.tag, t)) == 1 and proc.channel.closed


def test_run_kills_its_command_at_the_timeout_by_the_same_tag() -> None:
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    with pytest.raises(SshTimeout, match=r"running: cat /dev/irqlab0 \(killed in the guest: 2"):
        ssh.run("cat /dev/irqlab0", timeout=0.01)
    line = t.opened[0].commands[0]
    assert line.startswith("export IRQLAB_CMD=") and line.endswith("; cat /dev/irqlab0")
    assert len(kill_of(line.split("=", 1)[1].split(";")[0], t)) == 1


class _Outcome(BaseException):
    """What pytest-timeout's signal method raises in the test's thread: pytest's Failed,
    a BaseException that is neither a TimeoutError nor a KeyboardInterrupt."""


@pytest.mark.parametrize("raised", [_Outcome("Timeout >3.0s"), SystemExit(1), ValueError("x")])
def test_run_ended_by_anything_else_kills_its_command_but_not_for_a_broken_connection(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException
) -> None:
    """A run that pytest-timeout ended left `cat /dev/irqlab0` running in the guest, and
    the next test's module reload failed on it; a connection that broke has nothing to
    run a kill on."""
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)

    for error, killed in ((raised, 1), (OSError("Socket is closed"), 0)):

        def interrupted(chan: object, deadline: float, error: BaseException = error) -> None:
            raise error

        monkeypatch.setattr(SshClient, "_collect", staticmethod(interrupted))
        before = len(t.opened)
        with pytest.raises(type(error)):
            ssh.run("cat /dev/irqlab0", timeout=60)
        tag = t.opened[before].commands[0].split("=", 1)[1].split(";")[0]
        assert len(kill_of(tag, t)) == killed, error


def test_a_kill_does_not_wait_for_ever_behind_another_threads_command() -> None:
    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    proc = ssh.open_process("cat /dev/irqlab0")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ssh._exec_lock:  # what a long run() in another thread does
            held.set()
            release.wait(30)

    other = threading.Thread(target=hold, daemon=True)
    other.start()
    try:
        held.wait(30)
        said = proc.kill(timeout=0.01)
    finally:
        release.set()
        other.join(30)
    assert said.endswith("killing it failed: another command held the connection)"), said
    assert not kill_of(proc.tag, t) and proc.channel.closed


def test_irqlab_run_at_ctrl_c_stops_its_guest_without_a_kill_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's guest is its own and stops with it: a kill in the guest first cost a
    frozen guest's Ctrl-C seconds for nothing."""
    from irqlab.cli import guestcmd
    from irqlab.cli.main import main

    t = FakeTransport(reply=kill_finds_two)
    ssh, _ = connected(t)
    kills: list[str] = []
    closed: list[bool] = []

    def kill_command(self: SshClient, chan: FakeChannel, tag: str, timeout: float = 5.0) -> str:
        kills.append(tag)
        return ""

    class Guest:
        def __init__(self, config: object) -> None:
            self.ssh, self.config = ssh, config

        def prepare(self) -> Guest:
            return self

        def snapshot_key(self) -> str:
            return "no-such-snapshot"

        def base_snapshot_key(self) -> str | None:
            return None

        def start(self) -> Guest:
            self.restored, self.phases = True, {}
            return self

        def close(self) -> None:
            closed.append(True)

        def console_mark(self) -> int:
            return 0

    def ctrl_c(*args: object, **kw: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("irqlab.vm.guest.Guest", Guest)
    monkeypatch.setattr(SshClient, "kill_command", kill_command)
    monkeypatch.setattr(guestcmd, "bridge", ctrl_c)
    assert main(["run", "-n", "--", "cat /dev/irqlab0"]) == 130
    assert t.opened[0].commands == ["cat /dev/irqlab0"]
    assert kills == [] and closed == [True]


# -- a killed process that does not die ------------------------------------------------

# The kill script's report of a process SIGKILL did not end: a driver's wait_event.
STUCK_CAT = (
    b"1\n151 state D\n151 comm cat\n151 wchan mydrv_read\n"
    b"151 stack [<0>] mydrv_read+0x22c/0x2ad [mydrv]\n151 stack [<0>] vfs_read+0xa5/0x310\n"
)


def test_a_timeout_whose_command_did_not_die_says_so_and_where_it_waits() -> None:
    """It said "(killed in the guest: 1 process)" of a `cat` that ps showed in state D
    after: the kills sent were counted, not the processes that died."""
    t = FakeTransport(
        reply=lambda cmd: (STUCK_CAT, 0) if "/proc/[0-9]*/environ" in cmd else (b"", None)
    )
    ssh, _ = connected(t)
    with pytest.raises(SshTimeout) as e:
        ssh.run("cat /dev/mydrv", timeout=0.01)
    assert str(e.value) == (
        "timeout (0.01s) running: cat /dev/mydrv (1 process did not die: pid 151 (cat), "
        "state D (uninterruptible), wchan mydrv_read, kernel stack: "
        "mydrv_read+0x22c/0x2ad [mydrv] <- vfs_read+0xa5/0x310)"
    )


def test_killed_message_counts_the_dead_and_names_the_living() -> None:
    assert killed_message(0, "") == ""
    assert killed_message(3, "") == " (killed in the guest: 3 processes)"
    stack = "".join(f"9 stack [<0>] f{i}+0x1/0x2\n" for i in range(12))
    said = killed_message(3, f"9 state D\n9 comm my prog\n9 wchan 0\n{stack}8 state D\n")
    assert said == (
        " (killed in the guest: 1 process; 2 processes did not die: pid 9 (my prog), "
        "state D (uninterruptible), kernel stack: f0+0x1/0x2 <- f1+0x1/0x2 <- f2+0x1/0x2 <- "
        "f3+0x1/0x2 <- f4+0x1/0x2 <- f5+0x1/0x2 <- f6+0x1/0x2 <- f7+0x1/0x2 <- ...; "
        "pid 8, state D (uninterruptible))"
    )


def test_a_killed_process_a_loaded_guest_had_not_run_yet_is_not_called_undying() -> None:
    """SIGKILL ends a process in R or S as soon as it runs: one the kill's 1 s look still
    saw so (a loaded guest) was said "did not die", blaming the driver."""
    said = killed_message(2, "9 state R\n9 comm busy\n")
    assert said == (
        " (killed in the guest: 1 process; 1 process not dead yet when the kill stopped "
        "looking (no uninterruptible wait: a loaded guest had not run it since): pid 9 "
        "(busy), state R (running))"
    )


def test_the_kill_script_in_a_real_shell_sees_its_processes_die() -> None:
    """The script itself, run by this host's sh over its own /proc: the tagged process
    is killed, and found dead (a zombie of this test until reaped: dead too)."""

    def reply(cmd: str) -> tuple[bytes, int | None]:
        if "/proc/[0-9]*/environ" not in cmd:
            return b"", None
        r = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=30, check=False)
        assert r.stderr == b"", r.stderr
        return r.stdout, r.returncode

    ssh, _ = connected(FakeTransport(reply=reply))
    proc = ssh.open_process("sleep 60")
    local = subprocess.Popen(["sleep", "60"], env={**os.environ, CMD_TAG_VAR: proc.tag})
    try:
        assert proc.kill() == " (killed in the guest: 1 process)"
        assert local.wait(10) == -signal.SIGKILL
    finally:
        local.kill()
        local.wait()
