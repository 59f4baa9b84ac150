"""The default guest image boots with the project's QEMU and serves SSH.

Real QEMU (``irqlab.build.qemu.find_qemu``), real Debian kernel, real dropbear:
readiness marker on the console, SSH with the image's keys and a strictly
checked host key, Python and the agent package, sftp, the shipped modules,
and a guest poweroff ending QEMU.  A missing QEMU build fails (never skips).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from irqlab.build.boot import MACHINE_ARGS, GuestImage, cpu_args
from irqlab.build.image import ensure_image
from irqlab.vm.guest import GUEST_SSH_PORT, forwarded_port
from irqlab.vm.machine import Machine, MachineConfig

BOOT_TIMEOUT = 180.0


@dataclass
class Booted:
    image: GuestImage
    machine: Machine
    port: int
    accel: str
    boot_s: float  # QEMU start -> readiness marker
    first_cmd_s: float  # QEMU start -> first SSH command's exit status


def _host_key(img: GuestImage) -> paramiko.PKey:
    kind, blob = img.host_key.split()[:2]
    assert kind == "ssh-ed25519"
    return paramiko.Ed25519Key(data=base64.b64decode(blob))


def _client(
    img: GuestImage, port: int, host_key: paramiko.PKey | None = None
) -> paramiko.SSHClient:
    """Connect with strict host key checking; retries while the forwarded port is not served."""
    key = paramiko.Ed25519Key.from_private_key_file(str(img.client_key))
    deadline = time.monotonic() + 60
    while True:
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.get_host_keys().add(f"[127.0.0.1]:{port}", "ssh-ed25519", host_key or _host_key(img))
        try:
            c.connect(
                "127.0.0.1",
                port,
                username=img.ssh_user,
                pkey=key,
                timeout=2,
                banner_timeout=2,
                auth_timeout=10,
                look_for_keys=False,
                allow_agent=False,
            )
            return c
        except paramiko.BadHostKeyException:
            c.close()
            raise
        except (paramiko.SSHException, OSError, EOFError):
            c.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _run(c: paramiko.SSHClient, cmd: str, timeout: float = 60) -> tuple[int, str, str]:
    _, out, err = c.exec_command(cmd, timeout=timeout)
    o, e = out.read().decode(), err.read().decode()
    return out.channel.recv_exit_status(), o, e


@pytest.fixture(scope="module")
def booted() -> Iterator[Booted]:
    from irqlab.build.qemu import find_qemu
    from irqlab.vm.accel import choose

    qemu = find_qemu()
    if qemu is None:
        pytest.fail(
            "QEMU with the irqlab device is not built: run `invoke build-qemu`", pytrace=False
        )
    img = ensure_image()
    accel = choose(qemu.binary, datadir=qemu.datadir).accel
    args = [*MACHINE_ARGS, *cpu_args(accel), *img.qemu_args(0)]  # QEMU picks the port
    m = Machine(
        MachineConfig(
            binary=qemu.binary, args=args, datadir=qemu.datadir, accel=accel, name="image-boot"
        )
    )
    t0 = time.monotonic()
    m.start()
    port = forwarded_port(m, GUEST_SSH_PORT)
    try:
        text = m.wait_console(
            re.compile(f"{img.ready_marker}|{img.failed_marker}.*"), timeout=BOOT_TIMEOUT
        )
        boot_s = time.monotonic() - t0
        assert img.failed_marker not in text, f"guest boot failed: {text[-2000:]}"
        c = _client(img, port)
        rc, _, _ = _run(c, "true")
        first = time.monotonic() - t0
        c.close()
        assert rc == 0
        print(f"\nimage {img.version} ({accel}): marker {boot_s:.2f} s, first cmd {first:.2f} s")
        yield Booted(img, m, port, accel, boot_s, first)
    finally:
        m.close()


@pytest.fixture
def ssh(booted: Booted) -> Iterator[paramiko.SSHClient]:
    c = _client(booted.image, booted.port)
    yield c
    c.close()


def test_boot_and_first_command(booted: Booted) -> None:
    limit = 60.0 if booted.accel == "tcg" else 20.0  # generous: the host is shared
    assert booted.first_cmd_s < limit


def test_system_basics(ssh: paramiko.SSHClient, booted: Booted) -> None:
    rc, out, err = _run(ssh, "uname -r; id -u; ip -4 addr show eth0; cat /proc/cmdline")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == booted.image.kernel_version
    assert lines[1] == "0"
    assert f"inet {booted.image.guest_ip}/24" in out
    assert "console=ttyS0" in out


def test_python_and_agent(ssh: paramiko.SSHClient, booted: Booted) -> None:
    cmd = (
        "python3 -c 'import sys, json, ctypes, lzma, asyncio; "
        f"import {booted.image.agent_package} as a; print(sys.version_info[:2], a.__file__)'"
    )
    rc, out, err = _run(ssh, cmd)
    assert rc == 0, err
    assert out.startswith("(3, 11) /usr/lib/python3/dist-packages/irqlab_agent/")


def test_sftp(ssh: paramiko.SSHClient, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(bytes(range(256)) * 512)
    sftp = ssh.open_sftp()
    try:
        sftp.put(str(src), "/tmp/blob")
        back = tmp_path / "back"
        sftp.get("/tmp/blob", str(back))
    finally:
        sftp.close()
    assert back.read_bytes() == src.read_bytes()


def test_shipped_modules_load(ssh: paramiko.SSHClient) -> None:
    rc, out, err = _run(ssh, "modprobe uio_pci_generic && lsmod")
    assert rc == 0, out + err
    assert re.search(r"^uio_pci_generic\b", out, re.M) and re.search(r"^uio\b", out, re.M)
    assert re.search(r"^virtio_net\b", out, re.M)


def test_wrong_host_key_and_passwords_refused(booted: Booted) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(booted.image.client_key))
    with pytest.raises(paramiko.BadHostKeyException):
        _client(booted.image, booted.port, host_key=other).close()
    t = paramiko.Transport(("127.0.0.1", booted.port))
    try:
        t.start_client(timeout=30)
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password(booted.image.ssh_user, "root")
    finally:
        t.close()


def test_boot_without_a_nic_prints_the_failed_marker(booted: Booted) -> None:
    """The shared boot sequence (irqlab-boot.sh) reports a failure on the console with the
    failed marker and its reason instead of hanging or printing the ready marker."""
    img = booted.image
    args = [*MACHINE_ARGS, *cpu_args(booted.accel), *img.qemu_args(0)]
    cut = args.index("virtio-net-pci,netdev=net0,romfile=")
    del args[cut - 1 : cut + 1]  # the -device virtio-net-pci: no eth0 in the guest
    qemu = booted.machine.config
    m = Machine(
        MachineConfig(
            binary=qemu.binary, args=args, datadir=qemu.datadir, accel=booted.accel,
            name="image-boot-no-nic",
        )
    )  # fmt: skip
    m.start()
    try:
        text = m.wait_console(
            re.compile(f"{img.ready_marker} |{img.failed_marker}: [^\r\n]*[\r\n]"),
            timeout=BOOT_TIMEOUT,
        )
        assert f"{img.failed_marker}: no eth0" in text, text[-2000:]
        assert img.ready_marker + " " not in text
    finally:
        m.close()


def test_zz_poweroff_ends_qemu(booted: Booted) -> None:
    """Last in this file: a guest poweroff ends QEMU by itself, with status 0."""
    c = _client(booted.image, booted.port)
    c.exec_command("poweroff")
    try:
        assert booted.machine.wait_exit(60) == 0
    finally:
        c.close()
