"""The guest SSH keys: processes generating them at once on a fresh cache agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from racers import race  # same directory (rootdir-relative import)

from irqlab.build import sshkeys

TRIALS = 20


def test_processes_racing_on_a_fresh_cache_get_the_keys_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ensure_keys took no lock and wrote one fixed ``.tmp``: two builds on a fresh cache
    each generated keys; one crashed (FileNotFoundError on the other's renamed .tmp) or
    returned a key that the other then overwrote on disk (the guest presented a host key
    the build did not know).  Now every racer returns the keys that stay on disk."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))

    def keys(trial: int) -> object:
        k = sshkeys.ensure_keys(tmp_path / f"keys-{trial}")
        return (k.client_pub, k.host_pub)

    got = race(keys, TRIALS)
    wrong = []
    for trial, pubs in got:
        on_disk = sshkeys.find_keys(tmp_path / f"keys-{trial}")
        if on_disk is None or pubs != (on_disk.client_pub, on_disk.host_pub):
            wrong.append((trial, str(pubs)[:80]))
    assert wrong == []
    assert not list(tmp_path.glob("keys-*/*.tmp"))


def test_keys_on_disk_are_read_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every guest start took the keys' lock and rewrote the public halves: a start
    waited on another process's ("waiting for another process, which is generating the
    guest SSH keys").  Keys that are all there are read, no lock taken, nothing written."""
    d = tmp_path / "keys"
    first = sshkeys.ensure_keys(d)
    mtimes = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}

    def no_lock(*_a: object, **_k: object) -> None:
        raise AssertionError("the lock was taken")

    monkeypatch.setattr(sshkeys, "exclusive_lock", no_lock)
    assert sshkeys.ensure_keys(d) == first
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == mtimes


@pytest.mark.parametrize("damage", ["client_ed25519.pub", "host_ed25519.dropbear"])
def test_a_damaged_key_file_is_rewritten_under_the_lock(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "keys"
    first = sshkeys.ensure_keys(d)
    good = (d / damage).read_bytes()
    (d / damage).write_bytes(good[: len(good) // 2])
    assert sshkeys.ensure_keys(d) == first
    assert (d / damage).read_bytes() == good
