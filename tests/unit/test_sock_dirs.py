"""Socket directories: a $TMPDIR too long for a unix socket's path falls back to /tmp,
and a directory whose owner holds its lock stays although its pid looks gone (another
pid namespace sharing /tmp)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from irqlab.vm import machine
from irqlab.vm.machine import (
    SUN_PATH_MAX,
    make_sock_dir,
    remove_sock_dir,
    remove_stale_sock_dirs,
    sock_parent,
)


def test_a_short_tmpdir_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(short))
        assert sock_parent() == short
        d = make_sock_dir("shell")
        assert d.parent == short and d.name.startswith(f"irqlab-{os.getpid()}-shell")
        remove_sock_dir(d)
        assert not d.exists()
    finally:
        os.rmdir(short)


def test_a_tmpdir_too_long_for_a_socket_falls_back_to_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    long = tmp_path / ("y" * 80)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert sock_parent() == Path("/tmp")
    d = make_sock_dir()
    try:
        for name in ("qmp.sock", "console.sock", "qtest.sock"):
            path = d / name
            assert len(os.fsencode(path)) <= SUN_PATH_MAX
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(path))  # what QEMU and our listeners do
    finally:
        remove_sock_dir(d)
    # and it is where the sweep looks
    assert machine.sock_parent() == Path("/tmp")


def test_a_dir_whose_owner_holds_its_lock_stays_though_its_pid_is_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = tmp_path / f"irqlab-{gone.pid}-live1234"
    stale = tmp_path / f"irqlab-{gone.pid}-dead1234"
    live.mkdir()
    stale.mkdir()
    (stale / machine.OWNER_LOCK).write_text("")  # its owner died: nobody holds it
    # a process in another pid namespace: its pid means nothing here, its lock does
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
            str(tmp_path / f"irqlab-{gone.pid}-live1234" / machine.OWNER_LOCK),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        for d in (live, stale):  # made a minute ago: not new
            os.utime(d, (time.time() - 60, time.time() - 60))
        assert remove_stale_sock_dirs(tmp_path) == [stale]
        assert live.exists() and not stale.exists()
    finally:
        holder.communicate("")
    assert remove_stale_sock_dirs(tmp_path) == [live]  # its owner is gone now


def test_a_temp_dir_without_locks_still_gets_a_socket_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """flock says ENOLCK on an NFS /tmp: the directory is made all the same (the sweep
    goes by pid and age there); it said "QEMU failed to start: No locks available"."""
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    d = make_sock_dir()
    try:
        assert d.is_dir() and machine._SOCK_DIRS[d].fd == -1
    finally:
        remove_sock_dir(d)
    assert not d.exists() and d not in machine._SOCK_DIRS
    # and the sweep there: a stale one (owner gone, old, its lock file made) goes, no
    # ENOLCK out of it (every later start failed with "No locks available")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"irqlab-{gone.pid}-nolock12"
    stale.mkdir()
    (stale / machine.OWNER_LOCK).write_text("")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    assert remove_stale_sock_dirs(tmp_path) == [stale]


def test_another_users_dirs_are_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A non-root user's start met root's old ``/tmp/irqlab-XXXXXXXX``: the sweep's
    ``iterdir`` raised PermissionError and every guest start failed ("QEMU exited with
    status None").  Here the directories are this user's and the sweep is told it is
    another (uid + 1): it looks into none and removes none."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    legacy = tmp_path / "irqlab-zzsim001"
    pid_named = tmp_path / f"irqlab-{gone.pid}-other123"
    for d in (legacy, pid_named):
        d.mkdir()
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    looked: list[Path] = []
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda p: looked.append(p) or real_iterdir(p))
    monkeypatch.setattr(machine.os, "geteuid", lambda: os.getuid() + 1)
    assert remove_stale_sock_dirs(tmp_path) == []
    assert legacy.exists() and pid_named.exists() and looked == []
    monkeypatch.undo()  # this user's after all: both are stale
    assert sorted(remove_stale_sock_dirs(tmp_path)) == sorted([legacy, pid_named])


def test_a_dir_the_sweep_could_not_remove_is_not_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"irqlab-{gone.pid}-stuck123"
    stale.mkdir()
    os.utime(stale, (time.time() - 60, time.time() - 60))
    monkeypatch.setattr(machine.shutil, "rmtree", lambda *_a, **_k: None)  # EPERM, EBUSY...
    assert remove_stale_sock_dirs(tmp_path) == []
