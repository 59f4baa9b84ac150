"""apt that cannot be asked (no package lists: a fresh container, a CI runner whose
``apt-get update`` could not reach the mirror; apt-cache failing): lookups take apt's
last answer from the cache and say so once."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from irqlab import notice
from irqlab.build import debs, qemu, shared
from irqlab.build.debs import Package

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
    monkeypatch.setattr(debs, "_SAID_LAST", set())
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
