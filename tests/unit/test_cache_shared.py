"""The cache's shared build parts (QEMU source and build trees, pool .debs, unpacked
packages): one a kept output or apt's candidate needs stays, one a build holds locked
stays, an unreferenced old one goes; what cannot be known keeps all; nothing outside
the cache.  A fabricated cache in a temporary directory (the real one is shared)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fake_cache  # same directory (rootdir-relative import)
import pytest

from irqlab.build import cache, debs, inventory, kmod, qemu, shared
from irqlab.cli.main import main

OLD, NEW, NEWEST = "1:7.2+dfsg-7+deb12u16", "1:7.2+dfsg-7+deb12u17", "1:7.2+dfsg-7+deb12u18"
X86 = {"configure": ["--target-list=x86_64-softmmu"]}
FIRMWARE = {"ipxe-qemu": "1.0.0-5.1", "qemu-system-data": NEW, "seabios": "1.16.2-1"}


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def qemu_output(root: Path, n: int, version: str, used: float, **record: object) -> Path:
    manifest = {
        "source": {"kind": "debian", "version": version, "url": ""},
        "firmware": {**FIRMWARE, "qemu-system-data": version},
        **X86,
        **record,
    }
    files = {"manifest.json": json.dumps(manifest), "bin/qemu-system-x86_64": ""}
    return fake_cache.output(root, "qemu", n, files, used=used)


def image_output(root: Path, n: int, packages: dict[str, str], used: float) -> Path:
    meta = {"initramfs": "initramfs.cpio", "kernel_version": "6.1.0-57-amd64"}
    files = {"image.json": json.dumps({**meta, "packages": packages}), "initramfs.cpio": "x"}
    return fake_cache.output(root, "image", n, files, used=used)


LONG_AGO = 1_000_000.0  # a part's mtime: last used long ago (a build's mark is an hour)


def aged(path: Path, when: float = LONG_AGO) -> Path:
    """*path* last modified (or marked used by a build) at *when*."""
    os.utime(path, (when, when))
    return path


def tree(root: Path, name: str, size: int = 1000) -> Path:
    d = root / "qemu" / name
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "big").write_bytes(b"x" * size)
    return aged(d)


def deb(
    root: Path, name: str, version: str, arch: str = "amd64", *, unpacked: bool = False
) -> Path:
    stem = debs.Package(name, version, arch).deb_name.removesuffix(".deb")
    if unpacked:
        d = root / "debs" / "x" / stem
        (d / "usr").mkdir(parents=True)
        (d / ".complete").touch()
        return aged(d)
    f = root / "debs" / "pool" / f"{stem}.deb"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"d" * 100)
    return aged(f)


def slugs(*versions: str) -> set[str]:
    return {qemu.QemuSource("debian", v).slug for v in versions}


def candidates(
    *pairs: tuple[str, str],
) -> Callable[[Sequence[shared.DebId]], set[shared.DebId]]:
    def look(ids: Sequence[shared.DebId]) -> set[shared.DebId]:
        return {d for d in ids if (d.name, d.version) in pairs}

    return look


none = candidates()  # apt has none of them


def kept(root: Path) -> list[cache.CacheEntry]:
    return [e for e in cache.entries(root) if e.complete]


def unused(found: shared.Survey) -> set[Path]:
    return {p.path for p in found.unused}


def test_a_tree_of_a_kept_output_or_of_apt_s_candidate_stays_an_old_one_goes(root: Path) -> None:
    """After a point release the old QEMU's src/build trees (≈ 0.5 GB) stayed for ever."""
    qemu_output(root, 1, NEW, 100)
    used = [tree(root, "src-7.2+dfsg-7+deb12u17"), tree(root, "build-7.2+dfsg-7+deb12u17")]
    used.append(tree(root, "build-7.2+dfsg-7+deb12u17-aarch64"))
    current = [tree(root, "src-7.2+dfsg-7+deb12u18"), tree(root, "build-7.2+dfsg-7+deb12u18")]
    old = [tree(root, "src-7.2+dfsg-7+deb12u16"), tree(root, "build-7.2+dfsg-7+deb12u16")]
    old.append(tree(root, "src-7.2+dfsg-7+deb12u16.tmp"))  # an interrupted apt-get source
    found = shared.survey(root, kept(root), qemu_slugs=lambda: slugs(NEWEST), candidates=none)
    assert unused(found) == set(old) and not found.unknown
    assert all(p.size == 1000 for p in found.parts)
    done = shared.remove(found.unused, root)
    assert {p.path for p in done.removed} == set(old) and not done.held and not done.errors
    assert all(p.is_dir() for p in used + current) and not any(p.exists() for p in old)
    assert sorted(p.name for p in (root / "qemu").iterdir() if p.name.endswith(".trash")) == []


def test_a_tree_only_a_pruned_output_used_goes(root: Path) -> None:
    """The output list given is what stays: the tree of an output being pruned is unused."""
    out = qemu_output(root, 1, OLD, 100)
    old = tree(root, "src-7.2+dfsg-7+deb12u16")

    def survey(outputs: list[cache.CacheEntry]) -> set[Path]:
        found = shared.survey(root, outputs, qemu_slugs=lambda: slugs(NEWEST), candidates=none)
        return unused(found)

    assert survey(kept(root)) == set()
    assert survey([e for e in kept(root) if e.path != out]) == {old}


def test_a_part_a_build_holds_locked_stays(root: Path) -> None:
    """The QEMU build holds qemu/.lock throughout (source, graft, configure, compile), the
    download debs/pool/.lock, an unpacking its package's own lock: none waited for."""
    old_tree = tree(root, "build-7.2+dfsg-7+deb12u16")
    old_deb = deb(root, "libc6", "2.36-9+deb12u13")
    old_x = deb(root, "libc6", "2.36-9+deb12u13", unpacked=True)
    free_x = deb(root, "libc6", "2.36-9+deb12u12", unpacked=True)
    found = shared.survey(root, [], qemu_slugs=lambda: slugs(NEWEST), candidates=none)
    assert unused(found) == {old_tree, old_deb, old_x, free_x}
    locks = [root / "qemu" / ".lock", root / "debs" / "pool" / ".lock", cache.lock_file(old_x)]
    held = [cache.take_lock(lock, "building") for lock in locks]
    try:
        done = shared.remove(found.unused, root)
    finally:
        for f in held:
            f.close()
    assert [p.path for p in done.removed] == [free_x] and not done.errors
    assert {p.path for p, _ in done.held} == {old_tree, old_deb, old_x}
    assert all(p.exists() for p in (old_tree, old_deb, old_x)) and not free_x.exists()
    why = dict((p.path, w) for p, w in done.held)[old_tree]
    assert why.startswith("process ") and "QEMU's source tree" in why and str(locks[0]) in why


def test_debs_a_kept_output_records_or_apt_has_stay_old_ones_go(root: Path) -> None:
    """The pool (228 MB here) and the unpacked packages kept every version ever fetched."""
    image_output(root, 1, {"libc6": "2.36-9+deb12u13", "busybox-static": "1:1.35.0-4"}, 100)
    qemu_output(root, 2, NEW, 100)
    need = [
        deb(root, "libc6", "2.36-9+deb12u13"),
        deb(root, "libc6", "2.36-9+deb12u13", unpacked=True),
        deb(root, "busybox-static", "1:1.35.0-4", "arm64"),  # any arch of a recorded one
        deb(root, "seabios", "1.16.2-1", "all"),  # the QEMU output's firmware
        deb(root, "qemu-system-data", NEW, "all", unpacked=True),
    ]
    current = [
        deb(root, "libc6", "2.36-9+deb12u14"),
        deb(root, "libc6", "2.36-9+deb12u14", unpacked=True),
    ]
    old = [
        deb(root, "libc6", "2.36-9+deb12u12"),
        deb(root, "libc6", "2.36-9+deb12u12", unpacked=True),
        deb(root, "qemu-system-data", OLD, "all"),
    ]
    leftover = root / "debs" / "x" / "libc6_2.36-9+deb12u14_amd64.tmp"
    leftover.mkdir()
    aged(leftover)
    asked: list[shared.DebId] = []

    def look(ids: Sequence[shared.DebId]) -> set[shared.DebId]:
        asked.extend(ids)
        return candidates(("libc6", "2.36-9+deb12u14"))(ids)

    found = shared.survey(root, kept(root), qemu_slugs=set, candidates=look)
    assert unused(found) == {*old, leftover} and not found.unknown
    assert {(d.name, d.version) for d in asked} == {  # only what no kept output needs
        ("libc6", "2.36-9+deb12u14"),
        ("libc6", "2.36-9+deb12u12"),
        ("qemu-system-data", OLD),
    }
    assert (
        next(p for p in found.parts if p.path == old[2]).what == f".deb qemu-system-data {OLD} all"
    )
    done = shared.remove(found.unused, root)
    assert len(done.removed) == 4 and not done.errors and not done.held
    assert all(p.exists() for p in need + current) and not any(p.exists() for p in [*old, leftover])


def test_the_linux_source_a_kept_checkpatch_output_was_made_from_stays(root: Path) -> None:
    """checkpatch's output records no package: its name is the hash of the one it took."""
    spec = "linux-source-6.1=6.1.192-3"
    fake_cache.output(root, "checkpatch", 1, {"scripts/checkpatch.pl": ""})
    made = root / f"checkpatch-{kmod.checkpatch_digest_of(spec)}"
    (root / f"checkpatch-{fake_cache.digest(1)}").rename(made)
    source = deb(root, "linux-source-6.1", "6.1.192-3", "all")
    older = deb(root, "linux-source-6.1", "6.1.190-1", "all")
    found = shared.survey(root, kept(root), qemu_slugs=set, candidates=none)
    assert unused(found) == {older}
    assert source.exists()


def test_apt_not_answering_keeps_every_part_of_its_kind_and_says_why(root: Path) -> None:
    old_tree = tree(root, "src-7.2+dfsg-7+deb12u16")
    old_deb = deb(root, "libc6", "2.36-9+deb12u12")

    def no_apt(*_args: object) -> set[object]:
        raise debs.AptError("apt-cache not found")

    found = shared.survey(root, [], qemu_slugs=no_apt, candidates=no_apt)  # type: ignore[arg-type]
    assert not found.unused and {p.path for p in found.parts} == {old_tree, old_deb}
    assert found.unknown == [
        "every QEMU source and build tree stays: apt's QEMU source version is not known "
        "(AptError: apt-cache not found)",
        "every .deb and unpacked package stays: apt's candidates are not known "
        "(AptError: apt-cache not found)",
    ]


def test_a_kept_output_whose_record_cannot_be_read_keeps_its_kind(root: Path) -> None:
    broken = qemu_output(root, 1, NEW, 100)
    (broken / "manifest.json").write_text("{")
    tree(root, "src-7.2+dfsg-7+deb12u16")
    deb(root, "libc6", "2.36-9+deb12u12")
    found = shared.survey(root, kept(root), qemu_slugs=lambda: slugs(NEWEST), candidates=none)
    assert not found.unused and len(found.parts) == 2
    assert found.unknown == [
        f"every QEMU source and build tree stays: {broken}/manifest.json names no source",
        f"every .deb and unpacked package stays: {broken} records no package versions",
    ]


def test_nothing_outside_the_cache_or_not_named_as_a_part_is_touched(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "keep").write_text("theirs")
    (root / "qemu").mkdir()
    (root / "qemu" / "src-7.2+dfsg-7+deb12u16").symlink_to(elsewhere)  # a link to elsewhere
    (root / "qemu" / "notes-src").mkdir()
    (root / "qemu" / "apt-versions.json").write_text("{}")
    (root / "debs" / "pool").mkdir(parents=True)
    (root / "debs" / "pool" / "README").write_text("mine")
    (root / "debs" / "pool" / "partial-1").mkdir()
    linked = root / "debs" / "x"
    linked.symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "libc6_2.36-9+deb12u12_amd64").mkdir()
    found = shared.survey(root, [], qemu_slugs=set, candidates=none)
    assert found.parts == []
    part = shared.Part(linked / "libc6_2.36-9+deb12u12_amd64", "x", 0, False, root / "l", "")
    done = shared.remove([part], root)
    assert done.errors == [f"not removing {part.path}: it is not below {root}"]
    assert (elsewhere / "keep").is_file() and (elsewhere / "libc6_2.36-9+deb12u12_amd64").is_dir()


def test_stale_locks_of_unpacked_packages_go(root: Path) -> None:
    gone = deb(root, "libc6", "2.36-9+deb12u12", unpacked=True)
    there = deb(root, "libc6", "2.36-9+deb12u14", unpacked=True)
    for d in (gone, there):
        cache.lock_file(d).write_text("1\n")
    cache.remove_dir(gone)
    assert shared.remove_stale_locks(root) == [cache.lock_file(gone)]
    assert cache.lock_file(there).is_file() and not cache.lock_file(gone).exists()


# --- irqlab cache ---------------------------------------------------------------------


@pytest.fixture
def layout(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A current QEMU of NEWEST, an older one of NEW (--prune 1 removes it), their trees
    and firmware, one tree of OLD nothing uses; apt's candidates are NEWEST's."""
    made = {
        "qemu_current": qemu_output(root, 1, NEWEST, 100),
        "qemu_old": qemu_output(root, 2, NEW, 50),
        "src_current": tree(root, "src-7.2+dfsg-7+deb12u18", 3 << 20),
        "src_new": tree(root, "src-7.2+dfsg-7+deb12u17", 2 << 20),
        "src_old": tree(root, "src-7.2+dfsg-7+deb12u16", 1 << 20),
        "data_current": deb(root, "qemu-system-data", NEWEST, "all"),
        "data_new": deb(root, "qemu-system-data", NEW, "all"),
        "data_new_x": deb(root, "qemu-system-data", NEW, "all", unpacked=True),
    }
    now = inventory.Current({made["qemu_current"]})
    monkeypatch.setattr(inventory, "current", lambda found: now)
    monkeypatch.setattr(shared, "current_qemu_slugs", lambda: slugs(NEWEST))
    monkeypatch.setattr(shared, "apt_candidates", candidates(("qemu-system-data", NEWEST)))
    return made


def test_listing_shows_the_shared_parts_and_which_are_unused(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "shared build parts:" in out
    line = next(ln for ln in out.splitlines() if "qemu/src-7.2+dfsg-7+deb12u16 " in ln)
    assert re.search(r"1\.0 MiB  QEMU source tree  unused$", line)
    new = next(ln for ln in out.splitlines() if "qemu/src-7.2+dfsg-7+deb12u17 " in ln)
    assert new.endswith("QEMU source tree")
    assert re.search(r"^  debs/pool: 2 \.debs, 0\.0 MiB$", out, re.M)
    assert re.search(r"^  debs/x: 1 unpacked packages, 0\.0 MiB$", out, re.M)


def test_prune_dry_run_shows_the_shared_parts_it_would_remove(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "--prune", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("src-7.2+dfsg-7+deb12u16", "src-7.2+dfsg-7+deb12u17"):
        line = next(ln for ln in out.splitlines() if f"qemu/{name} " in ln)
        assert line.endswith("(remove)")
    assert re.search(r"^  debs/pool: 2 \.debs, 0\.0 MiB; 1 \(remove\), 0\.0 MiB$", out, re.M)
    assert "would remove 1 outputs, 0.0 MiB, and 4 shared parts, 3.0 MiB (dry run)" in out
    assert all(p.exists() for p in layout.values())


def test_prune_removes_the_shared_parts_the_outputs_left_do_not_need(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "--prune", "1"]) == 0
    out = capsys.readouterr().out
    gone = {"qemu_old", "src_new", "src_old", "data_new", "data_new_x"}
    assert {k for k, p in layout.items() if not p.exists()} == gone
    assert "removed 1 outputs" in out
    assert (
        "removed qemu/src-7.2+dfsg-7+deb12u16 (QEMU source tree, 1.0 MiB): nothing kept needs it"
        in out
    )
    # the lock file of the unpacked package removed (a lock is removed with it no more)
    assert "removed 4 shared parts, 3.0 MiB; 1 lock files of unpacked packages no longer" in out


def test_prune_says_a_build_holds_what_it_keeps(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with cache.take_lock(layout["src_old"].parent / ".lock", "building"):
        assert main(["cache", "--prune", "1"]) == 0
    out = capsys.readouterr().out
    assert layout["src_old"].is_dir() and layout["src_new"].is_dir()
    assert "kept what its lock guards: process " in out
    assert "removed 2 shared parts, 0.0 MiB; 2 held by a build, kept" in out


def test_prune_says_it_kept_what_a_build_took_after_the_survey(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shared.remove

    def remove(*args: Any) -> shared.SharedRemoval:
        shared.mark_used(layout["src_old"])  # a build takes it before the prune's lock
        return real(*args)

    monkeypatch.setattr(shared, "remove", remove)
    assert main(["cache", "--prune", "1"]) == 0
    out = capsys.readouterr().out
    assert layout["src_old"].is_dir() and not layout["src_new"].exists()
    assert "; 1 a build used since the survey, kept" in out, out


def test_the_eviction_after_a_build_removes_what_only_the_evicted_needed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new QEMU evicting the last output of the old version left its trees for ever."""
    monkeypatch.setattr(cache, "_current_outputs", lambda recipe, group: set())
    monkeypatch.setattr(shared, "current_qemu_slugs", lambda: slugs(NEWEST))
    monkeypatch.setattr(shared, "apt_candidates", candidates(("qemu-system-data", NEWEST)))
    old = qemu_output(root, 1, NEW, 50)
    old_parts = [tree(root, "src-7.2+dfsg-7+deb12u17"), deb(root, "qemu-system-data", NEW, "all")]
    current = [tree(root, "src-7.2+dfsg-7+deb12u18"), deb(root, "qemu-system-data", NEWEST, "all")]

    def build(out: Path) -> None:
        manifest = {"source": {"kind": "debian", "version": NEWEST}, "firmware": {}, **X86}
        (out / "manifest.json").write_text(json.dumps(manifest))

    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "1")
    cache.cached_build("qemu", fake_cache.digest(2), build)
    assert not old.exists() and not any(p.exists() for p in old_parts)
    assert all(p.exists() for p in current)


def test_a_qemu_build_evicts_after_its_lock_so_the_old_trees_go(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eviction ran inside the QEMU build's lock, which kept the old trees (held)."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "1")
    monkeypatch.delenv("IRQLAB_QEMU_SOURCE", raising=False)
    versions = {**FIRMWARE, "qemu-system-data": NEWEST}
    monkeypatch.setattr(qemu, "_apt_versions", lambda names: {n: versions[n] for n in names})
    monkeypatch.setattr(cache, "_current_outputs", lambda recipe, group: set())
    monkeypatch.setattr(shared, "apt_candidates", none)
    monkeypatch.setattr(qemu, "ensure_runtime_once", lambda *_a: None)

    def build(inputs: object, out: Path, *_a: object) -> None:
        manifest = {"source": {"kind": "debian", "version": NEWEST}, "firmware": versions}
        (out / "manifest.json").write_text(json.dumps({**manifest, **X86}))
        (out / "VERSION").write_text("7.2.22\n")

    monkeypatch.setattr(qemu, "_build", build)
    old = qemu_output(root, 1, NEW, 50)
    old_tree = tree(root, "build-7.2+dfsg-7+deb12u17")
    current = tree(root, "src-7.2+dfsg-7+deb12u18")
    qemu.ensure_qemu(log=lambda _m: None)
    assert not old.exists() and not old_tree.exists() and current.is_dir()


# --- apt answering that it has none of them ---------------------------------------------

# apt-cache show --no-all-versions as apt 2.6 (Debian 12) answers: the known names'
# stanzas, an unknown one beside them skipped without a word, and none known:
# "E: No packages found", exit status 100.  $APT_BROKEN: apt failing otherwise.
FAKE_APT_CACHE = """#!/bin/sh
if [ -n "$APT_BROKEN" ]; then
    echo "E: The package cache file is corrupted" >&2; exit 100
fi
shift 2  # show --no-all-versions
found=
for name; do
    case "$name" in
    libc6) found=1; printf 'Package: libc6\\nVersion: 2.36-9+deb12u14\\nArchitecture: amd64\\n\\n';;
    esac
done
[ -n "$found" ] || { echo "E: No packages found" >&2; exit 100; }
"""


@pytest.fixture
def fake_apt(
    root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """apt-cache on $PATH is :data:`FAKE_APT_CACHE`, with package lists of its own."""
    here = tmp_path_factory.mktemp("apt")
    (here / "bin").mkdir()
    tool = here / "bin" / "apt-cache"
    tool.write_text(FAKE_APT_CACHE)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{here / 'bin'}:{os.environ['PATH']}")
    lists = here / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("x")
    monkeypatch.setattr(debs, "APT_LISTS", lists)
    monkeypatch.setattr(debs, "APT_STATE_FILES", (lists,))
    return lists


def test_debs_of_packages_apt_no_longer_has_go(root: Path, fake_apt: Path) -> None:
    """After a point release every old kernel ABI's package is one apt does not know:
    apt-cache failed with "E: No packages found", which counted as apt silent, and every
    .deb stayed, in exactly the case the prune was made for."""
    gone = [
        deb(root, "linux-image-6.1.0-99-amd64", "6.1.99-1"),
        deb(root, "linux-headers-6.1.0-99-amd64", "6.1.99-1", unpacked=True),
    ]
    found = shared.survey(root, [], qemu_slugs=set)
    assert unused(found) == set(gone) and not found.unknown, found.unknown
    # beside a package apt knows (it skipped the unknown one silently): the same
    older, current = deb(root, "libc6", "0.0-1"), deb(root, "libc6", "2.36-9+deb12u14")
    for memo in (root / "debs").glob("apt-show-*"):  # asked again, all at once
        memo.unlink()
    found = shared.survey(root, [], qemu_slugs=set)
    assert unused(found) == {*gone, older} and not found.unknown, found.unknown
    assert current not in unused(found)


def test_apt_failing_otherwise_or_without_lists_keeps_every_deb(
    root: Path, fake_apt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = deb(root, "linux-image-6.1.0-99-amd64", "6.1.99-1")
    monkeypatch.setenv("APT_BROKEN", "1")
    found = shared.survey(root, [], qemu_slugs=set)
    assert not found.unused and "The package cache file is corrupted" in found.unknown[0]
    monkeypatch.delenv("APT_BROKEN")
    for f in fake_apt.iterdir():  # no lists: apt finds nothing it has not installed
        f.unlink()
    found = shared.survey(root, [], qemu_slugs=set)
    assert not found.unused and old.exists()
    assert found.unknown == [
        "every .deb and unpacked package stays: apt's candidates are not known (AptError: "
        f"apt has no package lists in {fake_apt} (apt-get update))"
    ]


def test_the_real_apt_cache_answers_an_unknown_name_as_none() -> None:
    """apt-cache's own words for a name it has no package for (what debs._show reads)."""
    import shutil

    if shutil.which("apt-cache") is None:
        pytest.fail("apt-cache is missing (package apt): the shared cache asks it")
    assert debs._show(["irqlab-no-such-package-anywhere"]) == {}


# --- a part a build uses stays ------------------------------------------------------------


def test_a_part_used_within_the_hour_stays_though_nothing_kept_needs_it(root: Path) -> None:
    """A build unpacks its .debs and copies from the unpacked packages after their locks
    were let go; after an apt-get update they are no candidate any more."""
    used = [
        aged(deb(root, "libc6", "2.36-9+deb12u12"), time.time() - 60),
        aged(deb(root, "libc6", "2.36-9+deb12u12", unpacked=True), time.time() - 60),
        aged(tree(root, "src-7.2+dfsg-7+deb12u16"), time.time() - 60),
    ]
    old = [deb(root, "libc6", "2.36-9+deb12u11"), tree(root, "build-7.2+dfsg-7+deb12u16")]
    found = shared.survey(root, [], qemu_slugs=set, candidates=none)
    assert unused(found) == set(old)
    assert all(p.used for p in found.parts if p.path in used)


def test_a_part_a_build_took_after_the_survey_stays(root: Path) -> None:
    """The survey runs before the prune takes a part's lock: a QEMU output finished in
    between (its trees), a build that took a .deb or an unpacked package meanwhile."""
    parts = [
        tree(root, "src-7.2+dfsg-7+deb12u16"),
        deb(root, "libc6", "2.36-9+deb12u12"),
        deb(root, "libc6", "2.36-9+deb12u12", unpacked=True),
    ]
    old = deb(root, "libc6", "2.36-9+deb12u11")
    found = shared.survey(root, [], qemu_slugs=set, candidates=none)
    assert unused(found) == {*parts, old}
    shared.mark_used(*parts)
    done = shared.remove(found.unused, root)
    assert [p.path for p in done.removed] == [old] and not done.errors and not done.held
    assert {p.path for p in done.used} == set(parts) and all(p.exists() for p in parts)


def test_builds_mark_the_parts_they_take_used(
    root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download its .debs (there already too), the unpacking its tree (unpacked
    already too), the QEMU build its source and build trees as it ends (failed too)."""
    from irqlab.build.steps import StepLog

    pkg = debs.Package("libc6", "2.36-9+deb12u12", "amd64")
    pooled = deb(root, pkg.name, pkg.version)
    unpacked = deb(root, pkg.name, pkg.version, unpacked=True)
    logs = tmp_path_factory.mktemp("logs")
    with StepLog(logs / "build.log", lambda _m: None) as steps:
        assert debs.download([pkg], steps, root / "debs" / "pool") == {pkg.name: pooled}
        assert debs.extracted(pooled, steps) == unpacked
    assert shared.used_lately(pooled) and shared.used_lately(unpacked)

    source = qemu.QemuSource("debian", OLD)
    trees = [tree(root, f"src-{source.slug}"), tree(root, f"build-{source.slug}")]

    def fails(*_a: object) -> None:
        raise RuntimeError("compile failed")

    monkeypatch.setattr(qemu, "_build_in", fails)
    inputs = type("Inputs", (), {"source": source, "arch": qemu.X86_64})()
    with pytest.raises(RuntimeError):
        qemu._build(inputs, root / "out", steps, lambda _m: None)  # type: ignore[arg-type]
    assert all(shared.used_lately(t) for t in trees)
