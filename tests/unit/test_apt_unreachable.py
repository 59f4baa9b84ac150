"""apt that cannot be asked (no package lists: a fresh container, a CI runner whose
``apt-get update`` could not reach the mirror; apt-cache failing): lookups take apt's
last answer from the cache and say so once; what must really be fetched says what and
apt's own words."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from irqlab import notice
from irqlab.build import debs, qemu, shared
from irqlab.build.debs import Package
from irqlab.build.steps import BuildError, StepLog

KERNEL = Package("linux-image-amd64", "6.1.192-3", "amd64", (("linux-image-6.1.0-57-amd64",),))


class FakeApt:
    """apt-cache as :func:`debs._query_apt`: answers from its lists while they hold a
    ``*_Packages`` file, "No packages found" (nothing) without, or fails like apt."""

    def __init__(self, lists: Path) -> None:
        self.lists = lists
        self.calls: list[list[str]] = []
        self.broken = False
        self.db = {KERNEL.name: KERNEL}

    def __call__(self, names: Sequence[str]) -> dict[str, Package]:
        self.calls.append(list(names))
        if self.broken:
            raise debs.AptUnanswered(
                "apt-cache show x failed: E: The package cache file is corrupted"
            )
        if not any(self.lists.glob("*_Packages*")):
            return {}  # what apt-cache says without lists: none of them
        return {n: self.db[n] for n in names if n in self.db}


@pytest.fixture
def apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApt:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("x")
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("APT_CONFIG", raising=False)
    monkeypatch.setattr(debs, "APT_LISTS", lists)
    monkeypatch.setattr(debs, "APT_STATE_FILES", (lists,))
    monkeypatch.setattr(debs, "_SAID_LAST", [])
    fake = FakeApt(lists)
    monkeypatch.setattr(debs, "_query_apt", fake)
    return fake


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The notices said (instead of to the terminal)."""
    lines: list[str] = []
    monkeypatch.setattr(notice, "_sink", lines.append)
    return lines


def lose_lists(apt: FakeApt) -> None:
    for f in apt.lists.iterdir():
        f.unlink()


def test_without_package_lists_a_lookup_takes_apts_last_answer_and_says_so_once(
    apt: FakeApt, said: list[str]
) -> None:
    """A complete cache and a mirror out of reach (apt's lists gone): the kernel's
    lookup found "package linux-image-amd64 not found in the apt lists" and no guest
    started, although everything it needed was cached."""
    assert debs.apt_show([KERNEL.name, "ghost"]) == {KERNEL.name: KERNEL}
    lose_lists(apt)
    asked = len(apt.calls)
    assert debs.apt_show([KERNEL.name, "ghost"]) == {KERNEL.name: KERNEL}
    assert debs.apt_show([KERNEL.name]) == {KERNEL.name: KERNEL}
    assert len(apt.calls) == asked  # apt is not asked: it could only say "none"
    assert len(said) == 1, said
    assert f"apt cannot be asked (no package lists in {apt.lists})" in said[0]
    assert "its last answer" in said[0] and "may be out of date" in said[0]
    memo = next((debs.pool_dir().parent).glob("apt-show-2-*.json"))
    assert str(memo) in said[0]
    answer = debs.apt_answer([KERNEL.name])
    assert answer.unanswered == f"no package lists in {apt.lists}"


def test_answers_from_two_memos_are_said_once(apt: FakeApt, said: list[str]) -> None:
    """apt's state changed between two lookups (an architecture added, apt-get update):
    their last answers are in two memos, and a start said "apt cannot be asked" twice
    (a fresh-clone CI run failed on it)."""
    debs.apt_show([KERNEL.name])
    next(apt.lists.iterdir()).write_text("another state")  # a memo of its own
    apt.db["kmod"] = Package("kmod", "30+20221128-1", "amd64", ())
    debs.apt_show(["kmod"])
    assert len(list(debs.pool_dir().parent.glob("apt-show-2-*.json"))) == 2
    lose_lists(apt)
    assert debs.apt_show(["kmod"]) == {"kmod": apt.db["kmod"]}
    assert debs.apt_show([KERNEL.name]) == {KERNEL.name: KERNEL}  # the older memo's
    assert len(said) == 1, said


def test_apt_cache_failing_takes_the_last_answer_too(apt: FakeApt, said: list[str]) -> None:
    debs.apt_show([KERNEL.name])
    next(apt.lists.iterdir()).write_text("another state")  # not this memo's apt state
    apt.broken = True
    assert debs.apt_show([KERNEL.name]) == {KERNEL.name: KERNEL}
    assert "The package cache file is corrupted" in said[0]


def test_without_an_earlier_answer_the_error_names_the_packages_and_why(
    apt: FakeApt, said: list[str]
) -> None:
    lose_lists(apt)
    with pytest.raises(debs.AptUnanswered) as e:
        debs.apt_show([KERNEL.name, "kmod"])
    assert str(e.value) == (
        f"apt cannot be asked (no package lists in {apt.lists}), and the cache holds no "
        "earlier answer of apt's about linux-image-amd64, kmod: run apt-get update "
        "(it needs the Debian mirror)"
    )
    assert said == []


def test_an_answer_apt_gave_without_lists_is_no_last_answer(apt: FakeApt, said: list[str]) -> None:
    """Before, apt asked without lists answered "none" for every name, and that was
    memoised (for that apt state): it is not the answer to go on with."""
    debs.apt_show([KERNEL.name])
    memo_dir = debs.pool_dir().parent
    older = next(memo_dir.glob("apt-show-2-*.json"))
    os.utime(older, (1, 1))
    (memo_dir / "apt-show-2-0000000000000000.json").write_text(json.dumps({KERNEL.name: None}))
    lose_lists(apt)
    assert debs.apt_show([KERNEL.name]) == {KERNEL.name: KERNEL}
    assert str(older) in said[0]


def test_a_prune_takes_no_old_answer_for_apts_candidates(apt: FakeApt, said: list[str]) -> None:
    """What a prune keeps must be apt's present candidates: an old answer may name
    versions apt no longer offers (and not the ones it offers now)."""
    debs.apt_show([KERNEL.name])
    next(apt.lists.iterdir()).write_text("another state")
    apt.broken = True
    with pytest.raises(debs.AptUnanswered, match="corrupted"):
        shared.apt_candidates([shared.DebId(KERNEL.name, KERNEL.version, "amd64")])
    with debs.apt_answers_only(), pytest.raises(debs.AptUnanswered):
        debs.apt_show([KERNEL.name])
    assert debs.apt_show([KERNEL.name]) == {KERNEL.name: KERNEL}  # outside it: taken


def test_qemus_versions_from_the_last_answer_are_not_memoised_as_apts(
    apt: FakeApt, said: list[str]
) -> None:
    """QEMU's firmware versions, as the kernel's packages, from apt's last answer (it
    was "apt knows no candidate for seabios"), not kept as this apt state's."""
    apt.db["seabios"] = Package("seabios", "1.16.2-1", "all")
    assert qemu._apt_versions(["seabios"]) == {"seabios": "1.16.2-1"}
    (qemu.work_dir() / "apt-versions.json").unlink()
    lose_lists(apt)
    assert qemu._apt_versions(["seabios"]) == {"seabios": "1.16.2-1"}
    assert not (qemu.work_dir() / "apt-versions.json").exists()
    assert len(said) == 1


DEAD_MIRROR_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$FAKE_APT_CALLS"
case "$1" in
update)
  echo "Err:1 http://127.0.0.1:9/debian bookworm InRelease"
  echo "  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)"
  echo "W: Some index files failed to download. They have been ignored, or old ones used instead."
  exit 0 ;;
*)
  echo "E: Failed to fetch http://127.0.0.1:9/debian/pool/main/s/strace/strace_6.1-0.1_amd64.deb"\
" Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)" >&2
  exit 100 ;;
esac
"""


@pytest.fixture
def dead_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """apt-get on $PATH fails as with a mirror out of reach; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(DEAD_MIRROR_APT_GET)
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    calls = tmp_path / "apt-calls"
    calls.touch()
    monkeypatch.setenv("FAKE_APT_CALLS", str(calls))
    return calls


def test_a_download_apt_cannot_make_names_what_is_missing_and_apts_words(
    tmp_path: Path, dead_mirror: Path
) -> None:
    pool = tmp_path / "pool"
    pkgs = [Package("strace", "6.1-0.1", "all"), Package("libunwind8", "1.6.2-3", "all")]
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps, pytest.raises(BuildError) as e:
        debs.download(pkgs, steps, pool)
    msg = str(e.value)
    assert f"2 Debian package(s) are not in the cache ({pool}) and must be downloaded" in msg
    assert "strace=6.1-0.1 libunwind8=1.6.2-3" in msg
    assert "apt-get exited 100" in msg and "Could not connect to 127.0.0.1:9" in msg


def test_an_install_apt_get_update_fetched_no_lists_for_says_so_with_apts_words(
    apt: FakeApt, tmp_path: Path, dead_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``apt-get update`` exits 0 when no mirror answers: the install then failed on
    "Unable to locate package", which hid that apt had no lists at all."""
    lose_lists(apt)
    monkeypatch.setattr(debs, "missing_packages", lambda names: list(names))
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps, pytest.raises(BuildError) as e:
        debs.ensure_apt_packages(steps, ["libfdt1"], step="runtime-deps")
    msg = str(e.value)
    assert f"libfdt1 must be installed, but apt has no package lists in {apt.lists}" in msg
    assert "Could not connect to 127.0.0.1:9" in msg
    assert dead_mirror.read_text().splitlines() == ["apt-get update -q"]  # no install tried
