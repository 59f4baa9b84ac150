"""Where the build cache is: $IRQLAB_CACHE_DIR, else an absolute $XDG_CACHE_HOME/irqlab
(a relative one is ignored, as the XDG spec says: it built a new cache under the
working directory), else ~/.cache/irqlab; a missing QEMU build says where it looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab import paths
from irqlab.vm.guest import Guest, GuestConfig, PrerequisiteMissing


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IRQLAB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_a_relative_xdg_cache_home_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")
    assert paths.cache_location() == tmp_path / "home" / ".cache" / "irqlab"
    assert paths.cache_description().endswith("(the default, ~/.cache/irqlab)")


def test_an_absolute_xdg_cache_home_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_location() == tmp_path / "xdg" / "irqlab"
    assert paths.cache_description() == f"{tmp_path / 'xdg' / 'irqlab'} ($XDG_CACHE_HOME/irqlab)"


def test_a_missing_qemu_build_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from irqlab.build import qemu

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(qemu, "find_qemu", lambda: None)
    with pytest.raises(PrerequisiteMissing) as e:
        Guest(GuestConfig(name="t")).prepare()
    assert f"looked in the build cache {tmp_path / 'empty'} (IRQLAB_CACHE_DIR=" in str(e.value)


@pytest.mark.parametrize(("code", "words"), [(28, "No space left on device"), (122, "Disk quota")])
def test_a_full_cache_disk_is_said_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    """With no inode left, every command (even `irqlab cache --prune`, which would free
    room) refused at the probe: "not writable: No space left on device"."""
    import tempfile

    from irqlab import notice

    def full(*a: object, **kw: object) -> None:
        raise OSError(code, words)

    said: list[str] = []
    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    monkeypatch.setattr(notice, "_sink", said.append)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert paths.cache_dir() == paths.cache_dir() == tmp_path / "cache"
    assert len(said) == 1 and words in said[0] and "irqlab cache --prune" in said[0]


@pytest.mark.parametrize(("code", "words"), [(30, "Read-only file system"), (13, "Permission")])
def test_an_unwritable_cache_dir_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    import tempfile

    def refused(*a: object, **kw: object) -> None:
        raise OSError(code, words)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(paths.CacheDirError, match=f"is not writable: {words}"):
        paths.cache_dir()
