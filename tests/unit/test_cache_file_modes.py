"""What the cache holds of the guest's secrets is the user's alone: a cache directory
irqlab creates is 0700 (one that exists keeps its mode), an image's initramfs (the
guest's SSH host key is in it) and a snapshot's state.mig (guest memory) are 0600,
whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab import paths
from irqlab.build import initramfs
from irqlab.build.cpio import Entry
from irqlab.vm import snapshot


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual one: it lets files be world-readable
    yield
    os.umask(old)


def test_a_cache_directory_irqlab_creates_is_the_users_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "parent" / "cache"))
    assert paths.cache_dir() == tmp_path / "parent" / "cache"
    assert _mode(tmp_path / "parent" / "cache") == 0o700
    assert _mode(tmp_path / "parent") == 0o755  # only the cache itself


def test_an_existing_cache_directory_keeps_its_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The user's own choice (a directory shared on purpose): left as it is."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(shared))
    assert paths.cache_dir() == shared
    assert _mode(shared) == 0o755


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_an_image_archive_is_written_0600(tmp_path: Path, compression: str) -> None:
    key = Entry.file("etc/dropbear/dropbear_ed25519_host_key", b"secret", 0o600)
    out, _size = initramfs.write_archive([key], tmp_path, compression)
    assert _mode(out) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_an_image_archive_written_over_an_old_one_is_0600(tmp_path: Path) -> None:
    (tmp_path / "initramfs.cpio").write_bytes(b"old")
    (tmp_path / "initramfs.cpio").chmod(0o644)
    out, _size = initramfs.write_archive([], tmp_path, "none")
    assert _mode(out) == 0o600 and out.read_bytes() != b"old"


class _FdQemu:
    def send_fd(self, fd: int, name: str) -> None:
        pass


def test_a_snapshot_state_file_is_created_0600(tmp_path: Path) -> None:
    state = tmp_path / snapshot.STATE_FILE
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # as save() opens it
    with snapshot._state_fd(_FdQemu(), state, flags):  # type: ignore[arg-type]
        pass
    assert _mode(state) == 0o600
