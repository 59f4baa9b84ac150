"""The guest's sshd killed under a command: the command's error says that the SSH
connection closed under it, and the reconnect of the next command fails in a second or
two with a message that names what happened (it retried for 30 s, then "SSH is not
connected" ever after), while a busy guest's reconnect still retries (fault tester's
kill-sshd case; a real paramiko server stands in for dropbear: fake_sshd)."""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import paramiko
import pytest
from fake_ssh import FakeTransport, fake_ssh  # same directory (rootdir-relative import)
from fake_sshd import FakeSshd

from irqlab.vm import guest as guest_mod
from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.health import Fault, GuestFault
from irqlab.vm.ssh import (
    GONE_AGAIN_ATTEMPTS,
    GONE_ATTEMPTS,
    CommandError,
    SshClient,
    SshError,
    SshTimeout,
    SshUnreachable,
)


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    yield server
    server.close()


def _killed_under(ssh: SshClient, sshd: FakeSshd, cmd: str = "sleep 120") -> Any:
    killer = threading.Timer(0.3, sshd.kill)
    killer.start()
    try:
        return ssh.run(cmd, timeout=30, check=True)
    finally:
        killer.join()


def test_a_command_whose_connection_closed_says_so(sshd: FakeSshd) -> None:
    ssh = sshd.client()
    try:
        assert ssh.run("echo hi", timeout=10).out == "hi\n"
        with pytest.raises(CommandError) as info:
            _killed_under(ssh, sshd)
        first = str(info.value).splitlines()[0]
        assert first == (
            "command did not finish (rc=-1): the SSH connection to the guest closed while "
            "it ran: no exit status came: sleep 120"
        ), first
        assert info.value.result.rc == -1
    finally:
        ssh.close()


def test_a_reconnect_to_a_guest_without_sshd_fails_at_once_and_says_why(
    sshd: FakeSshd,
) -> None:
    ssh = sshd.client()
    try:
        with pytest.raises(CommandError):
            _killed_under(ssh, sshd)
        t0 = time.monotonic()
        with pytest.raises(SshUnreachable) as info:
            ssh.run("echo second", timeout=10)
        took = time.monotonic() - t0
        assert took < 5, took  # the backoff's 1.5 s, not the reconnect's 30 s
        msg = str(info.value)
        assert msg.startswith(
            "nothing answers SSH in the guest any more (was its sshd, dropbear, killed?): "
            f"127.0.0.1:{sshd.port} reset or closed {GONE_ATTEMPTS} connections in a row"
        ), msg
        assert "after a connection had worked; last error: " in msg, msg
        # the reset or EOF, bare or under paramiko's banner error (as the timing has it)
        assert any(w in msg for w in ("ConnectionResetError", "reset by peer", "EOFError")), msg
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert sshd.resets == GONE_ATTEMPTS
        # a later command tries more briefly again (an sshd restarted would be found)
        t0 = time.monotonic()
        with pytest.raises(SshUnreachable, match=r"^nothing answers SSH in the guest"):
            ssh.run("echo third", timeout=10)
        assert time.monotonic() - t0 < 1
        assert sshd.resets == GONE_ATTEMPTS + GONE_AGAIN_ATTEMPTS
        with pytest.raises(SshUnreachable, match=r"^nothing answers SSH in the guest"):
            ssh.transport  # noqa: B018 (the property raises)
    finally:
        ssh.close()


def test_the_first_connect_still_retries_a_guest_whose_sshd_does_not_listen_yet(
    sshd: FakeSshd,
) -> None:
    """A booting guest resets connections too: connect() retries them to its deadline."""
    sshd.killed.set()
    sshd.listens_after = 2 * GONE_ATTEMPTS  # then its sshd starts
    ssh = SshClient("127.0.0.1", sshd.port, pkey=paramiko.RSAKey.generate(1024))
    ssh.connect(timeout=30, max_interval=0.2)
    try:
        assert sshd.resets == 2 * GONE_ATTEMPTS, sshd.resets
        assert ssh.run("echo up", timeout=10).out == "up\n"
    finally:
        ssh.close()


def _banner_error(cause: BaseException) -> paramiko.SSHException:
    """paramiko's banner error as its transport raises it: the read's error under it."""
    banner = paramiko.SSHException(f"Error reading SSH protocol banner{cause}")
    banner.__context__ = cause
    return banner


class _AfterBanner(ConnectionResetError):
    """A reset that came after the server's banner (during kex)."""


class _Scripted:
    """A connection that fails with the next of *script*'s errors (None: connects)."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script
        self.transport = FakeTransport()

    def connect(self, hostname: str, **kw: Any) -> None:
        error = self.script.pop(0)
        if isinstance(error, _AfterBanner):  # as paramiko's Transport has it then
            self.transport.remote_version = "SSH-2.0-dropbear_2022.83"  # type: ignore[attr-defined]
        if error is not None:
            raise error

    def get_transport(self) -> FakeTransport:
        return self.transport

    def close(self) -> None:
        pass


def _reconnecting(script: list[BaseException | None]) -> tuple[SshClient, list[float]]:
    """An SshClient connected once, its connection then dead, the reconnect's attempts
    as *script* says, on a fake clock (the sleeps listed)."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    ssh, clients = fake_ssh(lambda: _Scripted(script), clock=lambda: now[0], sleep=sleep)
    script.insert(0, None)
    ssh.connect(timeout=5)
    clients[0].transport.active = False
    return ssh, sleeps


def test_a_busy_guests_late_banners_are_retried_to_the_deadline() -> None:
    late = [_banner_error(TimeoutError("timed out")) for _ in range(100)]
    ssh, sleeps = _reconnecting([*late])
    with pytest.raises(SshError, match=r"no SSH connection .* after \d+ attempts in 30s") as info:
        ssh.run("true", timeout=5)
    assert not isinstance(info.value, SshUnreachable)
    assert sum(sleeps) >= 29


@pytest.mark.parametrize(
    "answered",
    [
        _AfterBanner(104, "Connection reset by peer"),  # something answers SSH
        paramiko.SSHException("Negotiation failed."),
        _banner_error(TimeoutError("timed out")),
        None,  # connected
    ],
    ids=["reset-in-kex", "kex-failed", "banner-timeout", "connected"],
)
def test_fewer_resets_in_a_row_than_the_limit_are_retried(
    answered: BaseException | None,
) -> None:
    reset = _banner_error(ConnectionResetError(104, "Connection reset by peer"))
    before = [reset] * (GONE_ATTEMPTS - 1)
    script: list[BaseException | None] = [*before, answered]
    if answered is not None:  # the count starts again: as many more, then it connects
        script += [*before, None]
    ssh, _ = _reconnecting(script)
    proc = ssh.open_process("agent")
    assert proc.channel is not None and ssh.reconnects == 1 and ssh.unreachable is None
    assert not script


def test_an_eof_before_the_banner_and_a_refused_connection_count_as_no_answer() -> None:
    no_answer = [
        _banner_error(EOFError()),
        ConnectionRefusedError(111, "Connection refused"),
        BrokenPipeError(32, "Broken pipe"),  # our banner's write, the connection reset
    ] * GONE_ATTEMPTS
    ssh, sleeps = _reconnecting(no_answer)
    with pytest.raises(SshUnreachable, match=f"closed {GONE_ATTEMPTS} connections in a row"):
        ssh.run("true", timeout=5)
    assert len(sleeps) == GONE_ATTEMPTS - 1 and sum(sleeps) < 2


class _RunningQemu:
    console = None
    closing = False  # nobody closes it

    def is_running(self) -> bool:
        return True

    def abort_qmp(self, why: str, *, later: bool = False) -> None:
        pass


@pytest.fixture
def guest(sshd: FakeSshd) -> Iterator[Guest]:
    """A Guest whose SSH is the fake sshd's and whose QEMU runs (no health watch: no
    verdict)."""
    g = Guest(GuestConfig(name="sshloss", freeze_timeout=None))
    g.machine = _RunningQemu()  # type: ignore[assignment]
    g.ssh = sshd.client()
    yield g
    g.machine = None
    g.close()


def _unreachable_within(guest: Guest, cmd: str, limit: float) -> None:
    """*cmd* raises SshUnreachable within *limit* s, saying it and that the guest lives."""
    t0 = time.monotonic()
    with pytest.raises(SshUnreachable) as info:
        guest.sh(cmd)
    took = time.monotonic() - t0
    assert took < limit, took
    msg = str(info.value)
    assert msg.startswith("nothing answers SSH in the guest any more"), msg
    assert msg.endswith(
        f"(running {cmd!r}; QEMU and the guest kernel are alive: the health watch has no verdict)"
    ), msg


def test_a_guest_command_whose_connection_closed_says_the_guest_is_alive(
    guest: Guest, sshd: FakeSshd
) -> None:
    threading.Timer(0.3, sshd.kill).start()
    with pytest.raises(CommandError) as info:
        guest.sh("sleep 120")
    first = str(info.value).splitlines()[0]
    assert first == (
        "command did not finish (rc=-1): the SSH connection to the guest closed while it "
        "ran: no exit status came (QEMU and the guest kernel are alive: the health watch "
        "has no verdict): sleep 120"
    ), first
    _unreachable_within(guest, "echo second", 5)
    assert guest.fault is None and guest.connection_lost() == "its SSH connection closed"


def test_a_probe_of_a_frozen_guest_ends_within_its_timeout_without_a_reconnect(
    sshd: FakeSshd,
) -> None:
    """Whether a guest still answers (after a module's init did not return): the probe's
    channel that never opened cost 10 s, then a reconnect's 30 s (53 s before a
    spinning module's insmod was named)."""
    ssh = sshd.client()
    try:
        assert ssh.run("echo alive", timeout=5, reconnect=False).out == "alive\n"
        sshd.freeze()
        t0 = time.monotonic()
        with pytest.raises(SshTimeout) as info:
            ssh.run("echo alive", timeout=1.0, reconnect=False)
        took = time.monotonic() - t0
        assert took < 3, took
        msg = str(info.value)
        assert msg.startswith("timeout (1.0s) running: echo alive (its channel did not open"), msg
        assert ssh.reconnects == 0
    finally:
        ssh.close()


def test_a_reconnect_made_while_an_error_is_handled_still_finds_no_sshd_at_once(
    sshd: FakeSshd,
) -> None:
    """A reconnect from inside an ``except`` block (Guest.start_agent's, after the
    agent's forward found SSH gone): Python replaced the banner error's context (the
    reset or the EOF, raised in paramiko's thread) by the error being handled, no
    attempt counted as unanswered, and ``g.agent`` retried for 30 s."""
    ssh = sshd.client()
    try:
        with pytest.raises(CommandError):
            _killed_under(ssh, sshd)
        sshd.reset_after = 0.05  # the reset under paramiko's banner error, as QEMU's comes
        t0 = time.monotonic()
        with pytest.raises(SshUnreachable, match=r"^nothing answers SSH in the guest"):
            try:
                raise SshError("the agent's forward: SSH is not connected")
            except SshError:
                ssh.open_process("agent")
        took = time.monotonic() - t0
        assert took < 5, took  # the backoff's 1.5 s, not the reconnect's 30 s
        assert sshd.resets == GONE_ATTEMPTS
    finally:
        ssh.close()


class _Watch:
    """A health watch whose verdict on a guest told silent is that the guest froze."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.told: list[tuple[str, float]] = []

    def silent(self, why: str, since: float) -> None:
        self.told.append((why, since))
        self.guest._on_fault(Fault(f"guest stopped responding: {why}", "[ 3.6] spinning"))

    def wait_verdict(self, timeout: float) -> Fault | None:
        return self.guest.fault

    def stop(self, wait: float = 5.0) -> None:
        pass


def test_a_kernel_step_of_a_starting_guest_that_freezes_is_named_within_the_freeze_limit(
    guest: Guest, sshd: FakeSshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No agent heartbeat watches a guest that starts: a module whose init spun with
    interrupts off was named after the step's 60 s (and a kill's and a probe's 5 s).
    The step looks at the SSH server's greeting meanwhile: silent for freeze_timeout,
    the guest is frozen, and the health watch's verdict ends the step naming it."""
    from irqlab.vm import loadscale

    monkeypatch.setattr(loadscale, "timeout_scale", lambda **kw: 1.0)
    monkeypatch.setattr(guest_mod, "STEP_GREET_EVERY", 0.1)
    guest.config = GuestConfig(name="frozen-step", freeze_timeout=1.0)
    guest.ssh_port = sshd.port
    watch = _Watch(guest)
    guest._watch = watch  # type: ignore[assignment]
    threading.Timer(0.3, sshd.freeze).start()  # the command runs (never ends), then it spins
    t0 = time.monotonic()
    with pytest.raises(GuestFault) as info:
        guest._run_kernel_step("sleep 120", "insmod /x/spin.ko", timeout=60)
    took = time.monotonic() - t0
    assert took < 8, took  # the freeze limit and a greeting's 3 s, not the step's 60 s
    first = str(info.value).partition("\n")[0]
    assert first.startswith("guest stopped responding: its SSH server did not greet for "), first
    assert "(limit 1 s: 1 s x host load; no agent heartbeat yet)" in first, first
    assert first.endswith("(running 'insmod /x/spin.ko')"), first
    assert len(watch.told) == 1


def test_a_kernel_step_watched_by_the_agents_heartbeat_makes_no_greeting_look(
    guest: Guest, sshd: FakeSshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an agent session, its heartbeat watches the guest: no step look."""
    monkeypatch.setattr(guest_mod, "STEP_GREET_EVERY", 0.01)
    guest.config = GuestConfig(name="watched-step", freeze_timeout=1.0)
    guest.ssh_port = sshd.port
    guest._watch = _Watch(guest)  # type: ignore[assignment]
    guest._agent = types.SimpleNamespace(eof=False)  # type: ignore[assignment]
    try:
        stop = guest._watch_step(60)
        assert not [t for t in threading.enumerate() if t.name == "step-watched-step"]
        stop.set()
    finally:
        guest._agent = None


class _NoVerdictWatch:
    """A health watch with no verdict: each wait for one lasts its whole timeout."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait_verdict(self, timeout: float) -> Fault | None:
        self.waits.append(timeout)
        threading.Event().wait(timeout)  # as the real one: nothing comes
        return None

    def stop(self, wait: float = 5.0) -> None:
        pass


def test_a_later_command_of_a_guest_whose_sshd_is_gone_says_so_at_once(
    guest: Guest, sshd: FakeSshd
) -> None:
    """Once a reconnect found no sshd, each later command cost 4 s more: five resets with
    their backoff (1.5 s), the watch's verdict awaited 0.5 s before the reconnect and
    2 s after it, although QEMU runs and the first reconnect had asked the watch.  A
    later one tries twice (an sshd restarted meanwhile is found) and waits for no
    verdict."""
    watch = _NoVerdictWatch()
    guest._watch = watch  # type: ignore[assignment]
    threading.Timer(0.3, sshd.kill).start()
    with pytest.raises(CommandError):
        guest.sh("sleep 120")
    with pytest.raises(SshUnreachable):
        guest.sh("echo second")
    resets, watch.waits = sshd.resets, []
    _unreachable_within(guest, "echo third", 1.0)
    assert sshd.resets - resets == GONE_AGAIN_ATTEMPTS and not any(watch.waits)
    sshd.killed.clear()  # the guest's sshd started again: the next command finds it
    assert guest.sh("echo back").strip() == "back"
    guest._watch = None
