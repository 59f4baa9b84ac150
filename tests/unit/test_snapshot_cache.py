"""Ready-state snapshot bookkeeping (no QEMU): keys, completeness, meta, discard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from irqlab.build import cache
from irqlab.vm import snapshot

BASE = {
    "qemu": "/c/qemu-0123456789abcdef/bin/qemu-system-x86_64",
    "image": "fedcba9876543210",
    "args": ["-machine", "q35", "-device", "irqlab,id=irqlab0"],
    "module": "irqlab",
    "module_params": {},
    "accel": "tcg",
    "agent_port": 7707,
    "tag": "",
}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_is_stable_and_order_free() -> None:
    assert snapshot.snapshot_key(BASE) == snapshot.snapshot_key(dict(reversed(BASE.items())))
    assert len(snapshot.snapshot_key(BASE)) == 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("qemu", "/c/qemu-1111111111111111/bin/qemu-system-x86_64"),
        ("image", "0000000000000000"),
        ("args", ["-machine", "q35", "-device", "irqlab,id=irqlab0,irq-mode=intx"]),
        ("args", ["-machine", "q35", "-smp", "2", "-device", "irqlab,id=irqlab0"]),
        ("module_params", {"uio": "1"}),
        ("accel", "kvm"),
        ("agent_port", 7708),
        ("tag", "mine"),
    ],
)
def test_every_input_changes_the_key(name: str, value: object) -> None:
    assert snapshot.snapshot_key({**BASE, name: value}) != snapshot.snapshot_key(BASE)


def test_lookup_finds_only_complete_snapshots(_cache_dir: Path) -> None:
    key = snapshot.snapshot_key(BASE)
    assert snapshot.lookup(key) is None
    partial = _cache_dir / f"snapshot-{key}.tmp"  # an interrupted save
    partial.mkdir(parents=True)
    (partial / snapshot.STATE_FILE).write_bytes(b"half")
    assert snapshot.lookup(key) is None

    def write(tmp: Path) -> None:
        (tmp / snapshot.STATE_FILE).write_bytes(b"QEVM")
        (tmp / snapshot.META_FILE).write_text(json.dumps({"key": key}))

    done = cache.cached_build("snapshot", key, write)
    assert snapshot.lookup(key) == done
    assert snapshot.read_meta(done)["key"] == key
    (done / snapshot.STATE_FILE).unlink()  # complete marker but no state: a bad snapshot
    assert snapshot.lookup(key) == done and not snapshot.intact(done)
    with pytest.raises(snapshot.SnapshotError, match=f"{done / snapshot.STATE_FILE} is missing"):
        snapshot.check(done)


def test_a_save_never_takes_a_bad_snapshot_in_its_way_for_its_own(_cache_dir: Path) -> None:
    """A snapshot without state.mig: lookup() said none, the save's cached_build found the
    directory complete and returned it, and every start cold-booted, "saved" nothing."""
    key = snapshot.snapshot_key(BASE)
    done = cache.cached_build("snapshot", key, lambda t: (t / snapshot.META_FILE).write_text("{}"))
    machine = object()  # the save stops before it asks QEMU anything
    with pytest.raises(snapshot.SnapshotError, match=f"^{done} could not be replaced"):
        snapshot.save(machine, key, {})  # type: ignore[arg-type]


def test_discard_removes_it_and_prune_lists_it(_cache_dir: Path) -> None:
    key = snapshot.snapshot_key(BASE)
    cache.cached_build("snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"x"))
    assert [e.name for e in cache.entries()] == ["snapshot"]
    assert snapshot.discard(key) is None
    assert snapshot.lookup(key) is None and cache.entries() == []
    assert snapshot.discard(key) is None  # nothing left to remove


def test_discard_leaves_a_held_snapshot_and_says_so(_cache_dir: Path) -> None:
    key = snapshot.snapshot_key(BASE)
    done = cache.cached_build(
        "snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"x")
    )
    held = cache.hold([done])
    try:
        assert snapshot.discard(key) == "another process holds it"
        assert snapshot.lookup(key) == done
    finally:
        held.release()
    assert snapshot.discard(key) is None and snapshot.lookup(key) is None


def test_discard_says_why_the_os_refused(_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An immutable (or another user's) snapshot: discard said it was removed, and every
    start said "removed it; booting cold" with the files still there."""
    import os

    key = snapshot.snapshot_key(BASE)
    done = cache.cached_build(
        "snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"x")
    )

    def refused(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(src))

    monkeypatch.setattr(os, "rename", refused)
    assert snapshot.discard(key) == f"cannot remove {done}: Operation not permitted"
    assert snapshot.lookup(key) == done


def test_discard_of_a_snapshot_moved_aside_but_not_all_removed_says_so(
    _cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of its place (a cold boot can save anew), its files left: said, not "stays"."""
    import shutil

    from irqlab import notice

    key = snapshot.snapshot_key(BASE)
    done = cache.cached_build(
        "snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"x")
    )

    def refused(path: str, *a: object, **kw: object) -> None:
        if Path(path).exists():  # (none left by an earlier removal)
            raise PermissionError(13, "Permission denied", f"{path}/{snapshot.STATE_FILE}")

    monkeypatch.setattr(shutil, "rmtree", refused)
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        assert snapshot.discard(key) is None
    finally:
        notice.set_sink(old)
    trash = f"{done}.trash/{snapshot.STATE_FILE}"
    assert said == [
        f"irqlab: cannot remove {trash}: Permission denied (irqlab cache --prune removes the rest)"
    ]
    assert snapshot.lookup(key) is None


def test_unreadable_meta_names_the_file(tmp_path: Path) -> None:
    (tmp_path / snapshot.META_FILE).write_text("{not json")
    with pytest.raises(snapshot.SnapshotError, match=str(tmp_path / snapshot.META_FILE)):
        snapshot.read_meta(tmp_path)


def test_prune_keeps_the_most_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    keys = [snapshot.snapshot_key({**BASE, "tag": str(i)}) for i in range(5)]
    for i, key in enumerate(keys):
        d = cache.cached_build(
            "snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"x")
        )
        os.utime(d, (time.time() - 100 + i, time.time() - 100 + i))
    removed = snapshot.prune(2)
    assert len(removed) == 3
    assert [snapshot.lookup(k) is not None for k in keys] == [False, False, False, True, True]


def test_snapshot_keep_reads_as_the_cache_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRQLAB_SNAPSHOT_KEEP", raising=False)
    assert snapshot.keep_snapshots() == 32
    monkeypatch.setenv("IRQLAB_SNAPSHOT_KEEP", "3")
    assert snapshot.keep_snapshots() == 3
    monkeypatch.setenv("IRQLAB_SNAPSHOT_KEEP", "0")  # as IRQLAB_CACHE_KEEP=0: no pruning
    assert snapshot.keep_snapshots() is None
    for bad in ("x", "-1"):
        monkeypatch.setenv("IRQLAB_SNAPSHOT_KEEP", bad)
        with pytest.raises(cache.CacheKeepError, match=r"IRQLAB_SNAPSHOT_KEEP.*snapshots"):
            snapshot.keep_snapshots()


def test_another_users_snapshot_is_not_found_listed_or_pruned(
    _cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot directory another user owns (0700) in the cache: its .complete raised
    PermissionError at every lookup (`irqlab run` failed), at the prune after a
    successful save (the start failed) and in `irqlab cache`.  (Root reads any mode:
    the OS's refusal is faked.)"""
    from irqlab import notice

    def state(t: Path) -> None:
        (t / snapshot.STATE_FILE).write_bytes(b"x")

    theirs_key, ours_key = (snapshot.snapshot_key({**BASE, "tag": t}) for t in ("a", "b"))
    theirs = cache.cached_build("snapshot", theirs_key, state)
    real = os.stat

    def refused(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        if Path(path).parent == theirs:  # what is under their 0700 directory
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kw)

    said: list[str] = []
    monkeypatch.setattr(os, "stat", refused)
    monkeypatch.setattr(notice, "_sink", said.append)
    assert snapshot.lookup(theirs_key) is None
    ours = cache.cached_build("snapshot", ours_key, state)
    assert [e.path for e in cache.entries()] == [ours]
    assert snapshot.prune(0) == [ours] and theirs.is_dir()
    assert said == [
        f"irqlab: {theirs} cannot be read (Permission denied): another user's? left alone"
    ]


def test_a_prune_after_a_save_never_fails_the_save(
    _cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from irqlab import notice

    def refused(keep: int) -> list[Path]:
        raise PermissionError(13, "Permission denied", "/c/snapshot-x/.complete")

    said: list[str] = []
    monkeypatch.setattr(cache, "cached_build", lambda *a, **kw: _cache_dir / "saved")
    monkeypatch.setattr(snapshot, "prune", refused)
    monkeypatch.setattr(notice, "_sink", said.append)
    assert snapshot.save(object(), "k", {}) == _cache_dir / "saved"  # type: ignore[arg-type]
    assert len(said) == 1 and "Permission denied" in said[0]
