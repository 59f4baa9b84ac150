"""irqlab.testing.helpers.host_processes: the host's processes as ``/proc/PID/stat``
says them (pid, state, parent, process group; the command line when asked), for the
tests that look for what a guest or a build left running.  Four e2e tests scanned
``/proc`` by hand, each parsing the stat line its own way."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.testing.helpers import HostProcess, host_processes, process_exited
from irqlab.vm import proc


def _listed(pid: int) -> HostProcess | None:
    found = [p for p in host_processes() if p.pid == pid]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child in a process group of its own (as irqlab.vm.proc starts QEMU)."""
    child = proc.spawn(["sleep", "60"])
    try:
        yield child
    finally:
        proc.stop(child)


def test_a_child_in_its_own_process_group_is_listed(sleeper: subprocess.Popen[bytes]) -> None:
    p = _listed(sleeper.pid)
    assert p is not None
    assert (p.ppid, p.pgrp) == (os.getpid(), sleeper.pid), p
    assert p.state in (b"R", b"S") and not p.exited, p
    assert p.cmdline() == b"sleep\0" + b"60\0"
    assert _listed(os.getpid()) is not None  # this process too


def test_a_reaped_child_is_not_listed() -> None:
    child = subprocess.Popen(["true"])
    assert child.wait(30) == 0
    assert _listed(child.pid) is None


def test_a_zombie_is_listed_as_exited() -> None:
    child = subprocess.Popen(["true"])
    try:
        assert process_exited(child.pid, 30)  # a pidfd's readiness: not reaped
        p = _listed(child.pid)
        assert p is not None and p.state == b"Z" and p.exited, p
        assert p.cmdline() == b""
    finally:
        child.wait(30)


def test_a_command_name_with_parentheses_and_spaces_is_parsed_after_its_last_paren(
    tmp_path: Path,
) -> None:
    """The name in ``/proc/PID/stat`` ("pid (comm) state ppid pgrp ...") is the
    program's file name as run, up to 15 bytes: one holding ``) Z 1 2 (`` read up to
    its first ``)`` says a zombie whose parent is 1."""
    weird = "x) Z 1 2 (y"
    (tmp_path / weird).symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = proc.spawn([str(tmp_path / weird), "60"])
    try:
        assert Path(f"/proc/{child.pid}/comm").read_text() == weird + "\n"
        p = _listed(child.pid)
        assert p is not None
        assert (p.ppid, p.pgrp) == (os.getpid(), child.pid), p
        assert p.state in (b"R", b"S") and not p.exited, p
    finally:
        proc.stop(child)
