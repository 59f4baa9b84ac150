"""A host command's answer about host files is asked once while the files stay the same
(:mod:`irqlab.build.hostfacts`), and asked again when one changes."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from irqlab import cancel
from irqlab.build import debs, hostfacts, qemu, responder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))


class Asker:
    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self) -> object:
        self.asked += 1
        return self.answers[min(self.asked, len(self.answers)) - 1]


def test_an_answer_is_asked_once_while_the_file_is_the_same(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("a\n")
    ask = Asker(["x"], ["y"])
    assert hostfacts.remembered("q", [status], ask) == ["x"]
    assert hostfacts.remembered("q", [status], ask) == ["x"]
    assert ask.asked == 1
    new = tmp_path / "status.new"  # replaced, as dpkg does: another inode
    new.write_text("a\n")
    new.replace(status)
    assert hostfacts.remembered("q", [status], ask) == ["y"]
    assert ask.asked == 2
    assert len(list((tmp_path / "cache" / hostfacts.DIR).glob("q-*.json"))) == 1


def test_a_file_changed_in_place_is_asked_again(tmp_path: Path) -> None:
    binary = tmp_path / "gcc"
    binary.write_text("1")
    ask = Asker("gcc 12", "gcc 13")
    assert hostfacts.remembered("cc", [binary], ask) == "gcc 12"
    binary.write_text("22")
    os.utime(binary, ns=(1, 1))
    assert hostfacts.remembered("cc", [binary], ask) == "gcc 13"
    assert ask.asked == 2


def test_other_arguments_are_another_question(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("")
    ask = Asker("one", "two")
    assert hostfacts.remembered("q", [status], ask, args=["a"]) == "one"
    assert hostfacts.remembered("q", [status], ask, args=["b"]) == "two"
    assert hostfacts.remembered("q", [status], ask, args=["a"]) == "one"
    assert ask.asked == 2


def test_a_missing_file_or_an_answer_not_kept_is_asked_every_time(tmp_path: Path) -> None:
    ask = Asker("x")
    for _ in range(2):
        hostfacts.remembered("q", [tmp_path / "missing"], ask)
    status = tmp_path / "status"
    status.write_text("")
    for _ in range(2):
        hostfacts.remembered("q", [status], ask, keep=lambda _a: False)
    assert ask.asked == 4


def test_answers_to_a_question_with_many_arguments_are_bounded(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("")
    for n in range(hostfacts.KEPT_PER_QUESTION + 5):
        hostfacts.remembered("q", [status], lambda: 1, args=[str(n)])
    kept = list((tmp_path / "cache" / hostfacts.DIR).glob("q-*.json"))
    assert len(kept) == hostfacts.KEPT_PER_QUESTION


def _replaces_in(
    folder: Path, monkeypatch: pytest.MonkeyPatch, then: Callable[[str], None]
) -> list[str]:
    """The temporary files renamed into *folder* (os.replace spied on: other paths, and
    other threads', go through untouched); *then* runs with each, before its rename."""
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if Path(dst).parent == folder:
            renamed.append(os.path.basename(src))
            then(os.fspath(src))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return renamed


def test_two_threads_storing_the_same_answer_write_files_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file was named by the process alone: a thread storing the same
    answer as the first wrote the same file and renamed it away under the first."""
    status = tmp_path / "status"
    status.write_text("")
    folder = tmp_path / "cache" / hostfacts.DIR

    def another_thread_stores_it_too(_src: str) -> None:
        if len(renamed) == 1:  # the first's file is written, not yet renamed
            other = threading.Thread(target=hostfacts.remembered, args=("q", [status], ask))
            other.start()
            other.join()

    renamed = _replaces_in(folder, monkeypatch, another_thread_stores_it_too)
    ask = Asker(["x"])
    assert hostfacts.remembered("q", [status], ask) == ["x"]
    assert ask.asked == 2 and len(renamed) == 2 and renamed[0] != renamed[1], renamed
    assert [p.suffix for p in folder.iterdir()] == [".json"]
    assert hostfacts.remembered("q", [status], ask) == ["x"] and ask.asked == 2


def test_a_store_that_fails_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status"
    status.write_text("")
    folder = tmp_path / "cache" / hostfacts.DIR

    def full(_src: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    _replaces_in(folder, monkeypatch, full)
    assert hostfacts.remembered("q", [status], lambda: "x") == "x"  # answered all the same
    assert list(folder.iterdir()) == []


def test_a_stale_temporary_file_is_swept(tmp_path: Path) -> None:
    """One left by a writer killed before its rename (or by an older irqlab on a full
    disk) went with nothing: only answers were swept.  A fresh one may be a writer's at
    work: it stays."""
    status = tmp_path / "status"
    status.write_text("")
    folder = tmp_path / "cache" / hostfacts.DIR
    folder.mkdir(parents=True)
    stale = folder / "q-0123.json.4242.tmp"
    stale.write_text('{"about": ')
    old = time.time() - hostfacts.STALE_TMP_S - 5
    os.utime(stale, (old, old))
    fresh = folder / "cc-4567.json.abcd.tmp"
    fresh.write_text("")
    hostfacts.remembered("q", [status], lambda: "x")
    assert not stale.exists() and fresh.exists()


def dpkg_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    status = tmp_path / "dpkg-status"
    status.write_text("")
    (tmp_path / "updates").mkdir()
    monkeypatch.setattr(hostfacts, "DPKG_DATABASE", (status, tmp_path / "updates"))
    return status


def test_dpkg_is_asked_again_only_when_a_package_was_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dpkg_database(tmp_path, monkeypatch)
    installed = {"gcc"}
    calls: list[list[str]] = []

    def dpkg(names: list[str]) -> list[str]:
        calls.append(list(names))
        return sorted(installed & set(names))

    monkeypatch.setattr(debs, "_installed", dpkg)
    assert debs.missing_packages(["gcc", "libc6-dev"]) == ["libc6-dev"]
    installed.add("libc6-dev")  # apt-get installed it (our fake database: unchanged)
    assert debs.missing_packages(["gcc", "libc6-dev"]) == []
    assert debs.missing_packages(["gcc", "libc6-dev"]) == []
    assert len(calls) == 2


def test_the_compiler_and_libc_versions_are_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dpkg_database(tmp_path, monkeypatch)
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc (fake) 1.0'\necho second line\n")
    cc.chmod(0o755)
    argvs: list[list[str]] = []
    real_run = cancel.run_text

    def run(argv: list[str], **kw: Any) -> object:
        argvs.append(list(argv))
        return real_run(argv, **kw)

    monkeypatch.setattr(cancel, "run_text", run)
    for _ in range(2):
        assert responder.compiler_version(str(cc)) == "cc (fake) 1.0"
        responder.libc_version()
    assert [a[0] for a in argvs] == [str(cc), "dpkg-query"]


def test_ldd_is_asked_again_until_it_finds_every_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dpkg_database(tmp_path, monkeypatch)
    monkeypatch.setattr(hostfacts, "LOADER_CACHE", tmp_path / "dpkg-status")
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text("")
    said = ["\tlibslirp.so.0 => not found\n", "\tlibslirp.so.0 => /lib/libslirp.so.0 (0x1)\n"]
    asked: list[Path] = []

    def ldd(b: Path) -> str:
        asked.append(b)
        return said[min(len(asked), 2) - 1]

    monkeypatch.setattr(qemu, "_ldd", ldd)
    assert qemu.libraries_not_found(qemu._remembered_ldd(binary)) == ["libslirp.so.0"]
    for _ in range(2):
        assert qemu.libraries_not_found(qemu._remembered_ldd(binary)) == []
    assert asked == [binary, binary]
