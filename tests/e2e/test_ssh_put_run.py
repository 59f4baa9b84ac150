"""SSH: copy a file into the guest, start it at once, read its output: 200 times in a row
under ``invoke soak`` (20 under ``invoke test-all``).

Issue 16 item 9: a channel opened right after an SFTP copy sometimes failed with
``SSHException: Channel closed.`` (dropbear wants the previous channel's exit status
before the next one opens), and every round after it failed too.  The test uses its
own connection to the session guest so a broken transport cannot sink the session's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from irqlab.vm.guest import Guest, GuestError
from irqlab.vm.ssh import RemoteWriteError, SshClient, SshTimeout

ROUNDS = (20, 200)  # (test-all, soak)


@pytest.fixture
def ssh(irqlab_guest: Guest) -> Iterator[SshClient]:
    assert irqlab_guest.ssh is not None
    client = SshClient(
        "127.0.0.1",
        irqlab_guest.ssh_port,
        user=irqlab_guest.ssh.user,
        key_path=irqlab_guest.ssh.key_path,
    ).connect(timeout=30)
    try:
        yield client
    finally:
        client.close()


def test_put_then_open_process_in_a_loop(
    ssh: SshClient, soak: Callable[[float, float], float]
) -> None:
    for i in range(int(soak(*ROUNDS))):
        script = f"import sys\nprint('round', {i})\nsys.exit({i % 7})\n".encode()
        ssh.put_bytes(script, "/tmp/put_run.py", mode=0o755)
        proc = ssh.open_process("python3 /tmp/put_run.py", timeout=30)
        out = proc.stdout.read()
        assert proc.exit_status(timeout=30) == i % 7, f"round {i}"
        proc.close()
        assert out == f"round {i}\n".encode(), f"round {i}: {out!r}"
    assert ssh.reconnects == 0  # not papered over by reconnecting


def test_put_then_run_in_a_loop(ssh: SshClient, soak: Callable[[float, float], float]) -> None:
    for i in range(int(soak(*ROUNDS))):
        ssh.put_bytes(f"echo {i}\n".encode(), "/tmp/put_run.sh", mode=0o755)
        assert ssh.run("/tmp/put_run.sh", timeout=30, check=True).out == f"{i}\n", f"round {i}"
    assert ssh.reconnects == 0


def test_sshclient_put_replaces_a_running_program_and_names_what_fails(ssh: SshClient) -> None:
    """SshClient.put wrote with SFTP, in place: a running program could not be replaced
    (SFTP's "Failure": Text file busy), a copy cut short left a cut file, and a path the
    guest refused raised paramiko's IOError.  It runs Guest.put's command now."""
    d = "/tmp/irqlab-sshput"
    # a copy of sleep, running: its file is busy (busybox's too: the copy is named sleep)
    pid = ssh.run(
        f'rm -rf {d} && mkdir {d} && cp "$(readlink -f /bin/sleep)" {d}/sleep && '
        f"{{ {d}/sleep 600 </dev/null >/dev/null 2>&1 & p=$!; }} && "
        f'while [ "$(readlink /proc/$p/exe)" != {d}/sleep ]; do :; done; echo $p',
        timeout=30,
        check=True,
    ).out.strip()
    try:
        busy = ssh.run(f"echo > {d}/sleep", timeout=30)
        assert busy.rc != 0 and "busy" in busy.err, busy  # what a write in place meets
        ssh.put_bytes(b"#!/bin/sh\necho replaced\n", f"{d}/sleep", mode=0o755)
        assert ssh.run(f"{d}/sleep", timeout=30, check=True).out == "replaced\n"
        assert ssh.run(f"ls -A {d}", check=True).out == "sleep\n"  # no temporary left
    finally:
        ssh.run(f"kill {pid}; rm -rf {d}")
    with pytest.raises(RemoteWriteError) as info:
        ssh.put_bytes(b"x", "/proc/irqlab-no-such-file")
    msg = str(info.value)
    assert msg.startswith("cannot write /proc/irqlab-no-such-file in the guest: "), msg
    assert "\n" not in msg, msg


def test_a_put_its_timeout_cuts_short_leaves_the_old_file_and_no_temporary(
    ssh: SshClient,
) -> None:
    """A timeout closes the command's channel before it kills the command: cat took
    that EOF for the end of the data, and the cut copy (10 MB of 32) was renamed over
    the target.  Its partial copy is removed (a SIGKILL that came first leaves it to the
    next put into the directory)."""
    d = "/tmp/irqlab-cutput"
    ssh.run(f"rm -rf {d} && mkdir {d} && echo old > {d}/f", check=True)
    with pytest.raises(SshTimeout):  # 64 MiB in 0.3 s: some 200 MB/s, never under TCG
        ssh.put_bytes(os.urandom(64 << 20), f"{d}/f", timeout=0.3)
    assert ssh.run(f"cat {d}/f", check=True).out == "old\n"
    ssh.put_bytes(b"new\n", f"{d}/g")
    assert ssh.run(f"ls -A {d}", check=True).out == "f\ng\n"
    ssh.run(f"rm -rf {d}")


def test_guest_put_takes_a_timeout(irqlab_guest: Guest, tmp_path: Path) -> None:
    """``Guest.put``/``put_bytes`` had a fixed 60 s timeout: a big file on a slow guest
    could not be given longer, nor a short wait shorter."""
    g = irqlab_guest
    big = tmp_path / "big"
    big.write_bytes(os.urandom(64 << 20))
    d = "/tmp/irqlab-guestput"
    g.sh(f"rm -rf {d} && mkdir {d} && echo old > {d}/f")
    with pytest.raises(TimeoutError):  # 64 MiB in 0.3 s: never under TCG
        g.put(big, f"{d}/f", timeout=0.3)
    with pytest.raises(TimeoutError):
        g.put_bytes(big.read_bytes(), f"{d}/f", timeout=0.3)
    assert g.sh(f"cat {d}/f") == "old\n"
    g.put_bytes(b"new\n", f"{d}/f", timeout=30)
    assert g.sh(f"cat {d}/f; rm -rf {d}") == "new\n"


def test_the_connection_sends_small_messages_at_once(ssh: SshClient) -> None:
    """TCP_NODELAY on the SSH socket: with Nagle's algorithm a small message sent right
    after another waits for the peer's delayed ACK (~40 ms on loopback)."""
    sock = ssh.transport.sock
    assert isinstance(sock, socket.socket), f"the transport runs on {sock!r}"
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "Nagle is on"
    assert ssh.run("echo ok").out.strip() == "ok"


def test_a_file_the_guest_cannot_take_is_named_with_the_guests_words(irqlab_guest: Guest) -> None:
    """extra_files={"/proc/x": ...} ended in our internal `mkdir -p /proc && cat > ...`
    command and its streams; now the path and what the guest said."""
    from irqlab.vm.guest import GuestError
    from irqlab.vm.ssh import CommandError

    with pytest.raises(GuestError) as info:
        irqlab_guest._put(b"x", "/proc/irqlab-no-such-file", 0o644)
    assert isinstance(info.value, CommandError), "what a failed copy raised before, too"
    msg = str(info.value)
    assert msg.startswith("cannot write /proc/irqlab-no-such-file in the guest: "), msg
    assert "cat >" not in msg and "\n" not in msg, msg
    assert irqlab_guest.sh("echo still fine").strip() == "still fine"


def test_files_go_in_and_come_out_byte_for_byte(irqlab_guest: Guest, tmp_path: Path) -> None:
    """Copying out had no method: g.run("cat f").out decoded the bytes (a binary file
    came back changed), and g.ssh.put took only a Path."""
    g = irqlab_guest
    blob = os.urandom(100_000) + bytes(range(256))
    local = tmp_path / "blob.bin"
    local.write_bytes(blob)
    local.chmod(0o640)
    g.put(str(local), "/tmp/irqlab-copy/in/blob.bin")  # parents made, a str path taken
    assert g.get("/tmp/irqlab-copy/in/blob.bin") == blob
    assert g.sh("stat -c %a /tmp/irqlab-copy/in/blob.bin") == "640\n"
    g.put_bytes(b"\x00\xff\n", "/tmp/irqlab-copy/small", mode=0o600)
    assert g.get("/tmp/irqlab-copy/small") == b"\x00\xff\n"
    with pytest.raises(GuestError, match=r"cannot read /tmp/irqlab-copy/nosuch in the guest: "):
        g.get("/tmp/irqlab-copy/nosuch")
    g.sh("rm -rf /tmp/irqlab-copy")


def test_get_refuses_a_device_node_at_once_and_reads_proc_and_sys(irqlab_guest: Guest) -> None:
    """g.get("/dev/irqlab0") read the node: it waited for an interrupt until its
    timeout (SshTimeout), naming neither the path nor why."""
    g = irqlab_guest
    with pytest.raises(
        GuestError,
        match=r"^cannot read /dev/irqlab0 in the guest: it is a character device, not a "
        r"regular file",
    ):
        g.get("/dev/irqlab0", timeout=20)  # a timeout would be SshTimeout, not this
    with pytest.raises(GuestError, match="cannot read /tmp in the guest: it is a directory"):
        g.get("/tmp")
    assert b"irqlab" in g.get("/proc/interrupts")
    assert g.get("/sys/module/irqlab/initstate") == b"live\n"
    assert g.sh("echo still fine").strip() == "still fine"


def test_get_refuses_the_kernel_logs_stream_at_once(irqlab_guest: Guest) -> None:
    """g.get("/proc/kmsg") read the kernel log's stream, a regular file that never ends:
    the read took its whole timeout (and the messages from the log's other readers)."""
    g = irqlab_guest
    g.sh("ln -sf /proc/kmsg /tmp/irqlab-klog")
    try:
        for path in ("/proc/kmsg", "/tmp/irqlab-klog"):
            with pytest.raises(GuestError) as info:
                g.get(path, timeout=20)  # a timeout would be SshTimeout, not this
            said = str(info.value)
            assert said.startswith(f"cannot read {path} in the guest: it never ends"), said
            assert 'g.sh("dmesg")' in said, said
    finally:
        g.sh("rm -f /tmp/irqlab-klog")
    assert g.sh("dmesg").strip(), "the kernel log it points to"
