"""``Guest.get`` copies a file out and refuses what is no regular file before reading
it: ``g.get("/dev/irqlab0")`` waited for data until its timeout.  The guest's shell is
this host's here (``sh``, ``stat``, ``cat``: the command is POSIX), the files its own."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestError, RunResult

# far below get's own: a read that blocks fails the test at once, not after a minute
LOCAL_TIMEOUT = 10.0


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> Guest:
    def run_here(
        cmd: str, *, timeout: float, input: bytes | None = None, doing: str = ""
    ) -> RunResult:
        p = subprocess.run(
            ["sh", "-c", cmd], capture_output=True, timeout=LOCAL_TIMEOUT, check=False
        )
        out, err = p.stdout, p.stderr.decode(errors="replace")
        return RunResult(p.returncode, out.decode(errors="replace"), err, None, out)

    g = Guest(GuestConfig(name="get"))
    monkeypatch.setattr(g, "_run", run_here)
    return g


def test_a_file_comes_out_byte_for_byte(guest: Guest, tmp_path: Path) -> None:
    f = tmp_path / "-odd name's"
    f.write_bytes(bytes(range(256)))
    assert guest.get(str(f)) == bytes(range(256))
    (tmp_path / "link").symlink_to(f)
    assert guest.get(str(tmp_path / "link")) == bytes(range(256))


def test_proc_and_sys_files_still_come_out(guest: Guest) -> None:
    assert guest.get(f"/proc/{os.getpid()}/status").startswith(b"Name:")
    assert guest.get("/proc/self/cmdline").startswith(b"cat\0")
    if Path("/sys/kernel/ostype").exists():  # absent in some containers
        assert guest.get("/sys/kernel/ostype") == b"Linux\n"


def special(kind: str, d: Path) -> str:
    """A path of *kind* (a FIFO made in *d*)."""
    if kind == "a FIFO":
        os.mkfifo(d / "fifo")
        return str(d / "fifo")
    return {"a character device": "/dev/null", "a directory": str(d)}[kind]


@pytest.mark.parametrize("kind", ["a character device", "a FIFO", "a directory"])
def test_what_is_no_regular_file_is_refused_naming_path_and_kind(
    guest: Guest, tmp_path: Path, kind: str
) -> None:
    path = special(kind, tmp_path)
    said = f"^cannot read {re.escape(path)} in the guest: it is {kind}, not a regular file"
    with pytest.raises(GuestError, match=said) as e:
        guest.get(path)
    assert "\n" not in str(e.value) and "mode" not in str(e.value), e.value


def test_a_socket_and_a_link_to_a_device_are_refused_too(guest: Guest, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        with pytest.raises(GuestError, match="it is a socket, not a regular file"):
            guest.get(str(tmp_path / "sock"))
    (tmp_path / "null").symlink_to("/dev/null")
    with pytest.raises(GuestError, match="null in the guest: it is a character device"):
        guest.get(str(tmp_path / "null"))


def test_a_missing_file_is_said_in_the_guests_words(guest: Guest, tmp_path: Path) -> None:
    with pytest.raises(
        GuestError, match=f"cannot read {re.escape(str(tmp_path))}/nosuch in the guest: cat: "
    ):
        guest.get(str(tmp_path / "nosuch"))


@pytest.fixture
def no_cat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``cat`` that reads nothing, first on the commands' PATH: a check that let the
    read through fails the test, and the host's own /proc/kmsg is never read (a read
    takes its messages from the host's log readers, and waits for the next)."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "cat").write_text('#!/bin/sh\necho "irqlab test: cat ran on $2" >&2\nexit 99\n')
    (stub / "cat").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("no_cat")
def test_the_kernel_logs_stream_is_refused_pointing_to_dmesg(guest: Guest, tmp_path: Path) -> None:
    """g.get("/proc/kmsg") is a regular file's read that never ends: it waited out its
    timeout.  A link to it is refused too."""
    (tmp_path / "klog").symlink_to("/proc/kmsg")
    for path in ("/proc/kmsg", str(tmp_path / "klog")):
        with pytest.raises(GuestError) as e:
            guest.get(path)
        said = str(e.value)
        assert said.startswith(f"cannot read {path} in the guest: it never ends"), said
        assert 'g.sh("dmesg")' in said and "cat ran" not in said, said


@pytest.mark.usefixtures("no_cat")
@pytest.mark.parametrize(
    "path",
    [
        "/sys/kernel/tracing/trace_pipe",
        "/sys/kernel/debug/tracing/trace_pipe",
        "/sys/kernel/tracing/per_cpu/cpu0/trace_pipe",
        "/sys/kernel/tracing/instances/x/trace_pipe",
        "/sys/kernel/tracing/per_cpu/cpu1/trace_pipe_raw",
    ],
)
def test_a_trace_pipe_is_refused_too(guest: Guest, path: str) -> None:
    with pytest.raises(GuestError, match=r"in the guest: it never ends \(a read of .*trace_pipe"):
        guest.get(path)


def test_a_file_of_that_name_elsewhere_is_read(guest: Guest, tmp_path: Path) -> None:
    for name in ("kmsg", "trace_pipe"):
        (tmp_path / name).write_bytes(b"just a file")
        assert guest.get(str(tmp_path / name)) == b"just a file"
