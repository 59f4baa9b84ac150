"""Leftovers in the build cache: lock files of outputs no longer cached and temporary
files of killed writers; ``irqlab cache`` counts them, ``--prune`` removes those nobody
holds, waits for or still writes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fake_cache  # same directory (rootdir-relative import)
import pytest

from irqlab.build import cache, inventory
from irqlab.cli.main import main
from irqlab.testing.helpers import wait_until
from irqlab.vm import proc


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(inventory, "current", lambda found: inventory.Current())
    return tmp_path


def _locker(lock: Path, *, blocking_only: bool = False) -> subprocess.Popen[bytes]:
    """Another process that locks *lock* (created if missing) and says so on stdout, or
    (*blocking_only*) waits for it in flock(2) at once, as irqlab did before it checked
    the file it got was still the one of that name."""
    code = (
        "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
        + ("" if blocking_only else "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); ")
        + "fcntl.flock(f, fcntl.LOCK_EX); sys.stdin.read()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def _blocked_on(lock: IO[str]) -> bool:
    """Whether /proc/locks lists a process blocked in flock(2) on *lock*'s file."""
    ino = os.fstat(lock.fileno()).st_ino
    return any(
        len(f) > 5 and f[1] == "->" and f[-3].endswith(f":{ino}")
        for f in map(str.split, Path("/proc/locks").read_text().splitlines())
    )


def test_a_lock_file_unlinked_between_open_and_flock_is_taken_anew(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prune unlinks a lock file after a builder opened it and before its flock: the
    builder must not hold the unlinked file (a third process locks a new one of that
    name: both would build into the same directory)."""
    lock = root / f"kmod-{fake_cache.digest(1)}.lock"
    real = fcntl.flock
    unlinked: list[int] = []  # an fd of the unlinked file: its inode is not used again

    def flock(f: IO[str] | int, op: int) -> None:
        if not unlinked:  # the first try, on the file the builder just opened
            unlinked.append(os.open(lock, os.O_RDONLY))
            lock.unlink()
        real(f, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    try:
        with cache.take_lock(lock, "building kmod") as f:
            assert lock.exists(), "the lock taken is a file no longer of its name"
            got = os.fstat(f.fileno())
            assert got.st_ino == os.stat(lock).st_ino != os.fstat(unlinked[0]).st_ino
            assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        os.close(unlinked[0])


def test_a_lock_a_process_waits_for_in_flock_stays(
    root: Path, monkeypatch: pytest.MonkeyPatch, processes: list[subprocess.Popen[bytes]]
) -> None:
    """An older irqlab blocked in flock(2) on a lock file, which the prune takes as its
    holder lets go: removed, that irqlab would hold the unlinked file while a third
    process locks a new file of that name."""
    lock = root / f"snapshot-{fake_cache.digest(2)}.boot.lock"
    ours = cache._locked_file(lock, wait=False)
    assert ours is not None
    with ours:
        processes.append(waiter := _locker(lock, blocking_only=True))
        wait_until(lambda: _blocked_on(ours), bool, 10, "the other process to wait in flock")
        # the prune won the lock from under that waiter: it is ours when it looks
        monkeypatch.setattr(cache, "_locked_file", lambda path, *, wait: ours)
        assert cache.remove_stale_locks(root) == []
        assert lock.exists()
    assert waiter.poll() is None


def test_prune_removes_orphan_locks_and_dead_writers_temporaries(
    root: Path, capsys: pytest.CaptureFixture[str], processes: list[subprocess.Popen[bytes]]
) -> None:
    """A CI run left ~137 lock files, snapshot locks of configurations long pruned piled
    up, and nothing ever removed them or a killed writer's ``<name>.<pid>.tmp``; the
    listing did not mention them.  Held locks, a live output's lock and the temporary
    of a live (or recent) writer stay."""
    live = fake_cache.kmod(root, 1, fake_cache.EM_X86_64, 10)
    live_lock = cache.lock_file(live)
    live_lock.write_text("")
    boot = cache.lock_file(root / f"snapshot-{fake_cache.digest(2)}", cache.BOOT_LOCK)
    build = cache.lock_file(root / f"snapshot-{fake_cache.digest(2)}")
    held = cache.lock_file(root / f"image-{fake_cache.digest(3)}")
    for f in (boot, build):
        f.write_text("")
    processes.append(holder := _locker(held))
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 2 * cache.TMP_MIN_AGE_S
    killed = root / "debs" / f"apt-show-2-0123.json.{dead.pid}.tmp"
    young = root / "accel-probe" / f"k.{dead.pid + 1}.tmp"  # being written (another pid ns?)
    writing = root / "guest-keys" / "id_ed25519.1.tmp"  # pid 1 lives, started before
    for f, mtime in ((killed, old), (young, time.time()), (writing, old)):
        f.parent.mkdir(exist_ok=True)
        f.write_text("{}")
        os.utime(f, (mtime, mtime))

    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert (
        "leftovers: 3 lock files of outputs or unpacked packages no longer cached; 1 temporary "
        f"file of writers killed before their rename (debs/{killed.name})\n"
    ) in out
    assert all(p.exists() for p in (boot, build, held, killed))  # a listing removes nothing

    assert main(["cache", "--prune", "8"]) == 0
    out = capsys.readouterr().out
    assert "; 2 lock files of outputs no longer cached; 1 temporary files of killed" in out
    assert not boot.exists() and not build.exists() and not killed.exists()
    assert held.exists() and live_lock.exists() and live.is_dir()
    assert young.exists() and writing.exists()
    assert holder.poll() is None

    holder.kill()
    holder.wait()
    assert main(["cache"]) == 0
    assert "leftovers: 1 lock file of outputs" in capsys.readouterr().out
    assert main(["cache", "--prune", "8"]) == 0
    capsys.readouterr()
    assert main(["cache"]) == 0
    assert "leftovers" not in capsys.readouterr().out  # none: nothing said
    assert not held.exists() and live_lock.exists()


def test_a_temporary_whose_pid_was_used_again_is_stale(root: Path) -> None:
    """The pid in a temporary's name names a process that started after the file was
    last written: not its writer (pids are used again), so the writer is gone."""
    started = proc.started_at(os.getpid())
    assert started is not None
    mine = root / "host-facts" / f"memo.json.{os.getpid()}.tmp"
    mine.parent.mkdir()
    mine.write_text("{}")
    before = started - 2 * cache.TMP_MIN_AGE_S  # written before this process started
    os.utime(mine, (before, before))
    assert cache.stale_temporaries(root) == [mine]
    os.utime(mine, (started + 2, started + 2))  # written by this process: it lives
    assert cache.stale_temporaries(root, now=started + 2 + 2 * cache.TMP_MIN_AGE_S) == []


def test_what_is_no_writer_temporary_is_not_one(root: Path) -> None:
    """Outputs (their .tmp directories go by their lock), ccache's own files, a
    directory named like a temporary and one deeper down are none of these."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = fake_cache.kmod(root, 1, fake_cache.EM_X86_64, 10)
    inside = [
        out / f"x.{dead.pid}.tmp",
        root / "ccache" / f"x.{dead.pid}.tmp",
        root / "qemu" / "src-1.tmp" / f"x.{dead.pid}.tmp",
    ]
    for f in inside:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("")
    (root / f"d.{dead.pid}.tmp").mkdir()
    assert cache.stale_temporaries(root, now=time.time() + 2 * cache.TMP_MIN_AGE_S) == []
