"""A host command's answer about host files is asked once while the files stay the same
(:mod:`irqlab.build.hostfacts`), and asked again when one changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    real_run = responder.subprocess.run

    def run(argv: list[str], **kw: object) -> object:
        argvs.append(list(argv))
        return real_run(argv, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(responder.subprocess, "run", run)
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
