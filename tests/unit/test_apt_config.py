"""APT_CONFIG moving apt's package lists: the memos of apt's answers follow them.

apt-cache honours ``APT_CONFIG`` (a container's or CI's own lists directory), but the
memo of its answers was keyed by /var/lib/apt/lists alone: another set of lists gave the
old answers, and an ``apt-get update`` of the moved lists was never seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from irqlab.build import debs, qemu
from irqlab.vm import proc


@pytest.fixture
def moved_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An APT_CONFIG whose package lists live in ``tmp_path/lists`` (empty)."""
    if shutil.which("apt-config") is None:
        pytest.fail("apt-config is missing: these tests need Debian's apt (apt-get install apt)")
    lists = tmp_path / "lists"
    lists.mkdir()
    config = tmp_path / "apt.conf"
    config.write_text(f'Dir::State::lists "{lists}";\n')
    monkeypatch.setenv("APT_CONFIG", str(config))
    return lists


def test_without_apt_config_no_process_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APT_CONFIG", raising=False)

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(proc, "spawn", no_process)  # irqlab.cancel.run's
    assert debs.apt_state_files() == debs.APT_STATE_FILES
    assert debs.apt_lists_dir() == debs.APT_LISTS


def test_the_apt_memo_key_follows_the_lists_apt_config_names(moved_lists: Path) -> None:
    assert debs.apt_lists_dir() == moved_lists
    assert moved_lists in debs.apt_state_files()
    before = debs.apt_state_key()
    (moved_lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text(
        "Package: x\n"
    )
    assert debs.apt_state_key() != before, "an apt-get update of the moved lists went unseen"


def test_another_apt_config_is_another_memo_key(
    moved_lists: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = debs.apt_state_key()
    monkeypatch.delenv("APT_CONFIG")
    assert debs.apt_state_key() != moved


def test_the_qemu_version_memo_follows_the_moved_lists(moved_lists: Path) -> None:
    assert qemu.apt_lists_state() == qemu.apt_lists_state(moved_lists)
    before = qemu.apt_lists_state()
    (moved_lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text(
        "Package: x\n"
    )
    assert qemu.apt_lists_state() != before


def test_an_apt_config_apt_cannot_read_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt-config failing (a config with a syntax error) keys by the usual places and the
    config file itself, never by nothing."""
    bad = tmp_path / "bad.conf"
    bad.write_text("Dir::State::lists {{{\n")
    monkeypatch.setenv("APT_CONFIG", str(bad))
    assert debs.apt_state_files() == (bad, *debs.APT_STATE_FILES)


def test_a_qemu_source_apt_config_hides_names_the_deb_src_entry(
    moved_lists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deb-src entry goes to /etc/apt/sources.list.d/ whatever APT_CONFIG says: an
    apt that reads its sources elsewhere found no QEMU source, and the error did not say
    why."""
    from irqlab.build.steps import BuildError, StepLog

    entry = tmp_path / "irqlab-deb-src.sources"
    entry.write_text("Types: deb-src\n")  # written before: only apt's update runs
    monkeypatch.setattr(qemu, "DEB_SRC_FILE", entry)
    monkeypatch.setattr(qemu, "_have_qemu_source", lambda version: False)
    with StepLog(tmp_path / "build.log") as steps:
        monkeypatch.setattr(steps, "run", lambda *a, **kw: None)
        with pytest.raises(BuildError) as e:
            qemu._ensure_deb_src(steps, "1:7.2+dfsg-7+deb12u99")
    said = str(e.value)
    assert "apt has no source for qemu 1:7.2+dfsg-7+deb12u99" in said
    assert f"APT_CONFIG={os.environ['APT_CONFIG']}" in said and str(entry) in said, said
