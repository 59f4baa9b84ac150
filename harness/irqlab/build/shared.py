"""The cache's shared build parts, and which of them nothing kept needs any more.

Besides the outputs (``<name>-<hash>/``: :mod:`irqlab.build.cache`), builds leave parts
that outputs of many input hashes share, keyed by a version, not by a hash:

- ``qemu/src-<version>/``: a QEMU source tree (Debian's source package of that version,
  or a pinned upstream release: ``src-upstream-<release>``), grafted in place;
  ``qemu/build-<version>[-<arch>]/``: its build trees (≈ 0.5 GB with the source);
  ``qemu/dl/qemu-<release>.tar.xz``: an upstream release's tarball;
- ``debs/pool/<name>_<version>_<arch>.deb``: the Debian packages downloaded;
- ``debs/x/<name>_<version>_<arch>/``: one such package unpacked (the image's packages,
  QEMU's firmware).

Each Debian point release (a new QEMU, kernel, libc, ...) made new ones and left the
old ones for ever.  A part is *used*, and stays, when

- a QEMU part's version is the source of a kept QEMU output (its ``manifest.json``),
  apt's candidate (what the next build takes: :func:`irqlab.build.qemu.debian_source_version`),
  or an upstream release this checkout pins;
- a package's name and version are recorded by a kept output (a QEMU output's firmware,
  a kernel's or an image's packages, a checkpatch output made from it), or are apt's
  candidate for its name and architecture.

A part a build used lately stays too, whatever else says: one modified or marked used
within the last :data:`USED_LATELY_S` (an hour).
A build holds a part's lock only while it makes it, not while it reads it (the kernel
unpacks its .debs from the pool, the image copies from the unpacked packages, after
their locks were let go), and what it takes need not be apt's candidate by then (an
``apt-get update`` meanwhile, a cache shared with a checkout of another release).  So a
build marks each part used (:func:`mark_used`: its mtime) as it takes it, under the
part's lock: :func:`irqlab.build.debs.download` its .debs,
:func:`irqlab.build.debs.extracted` an unpacked package, the QEMU build its source and
build trees as it ends; and :func:`remove` looks again once it holds that lock (the
survey came before it: a QEMU output finished in between keeps its trees).  A build's
use of a part is over within minutes of taking it, well within the hour.

What cannot be known counts as used: a kept output whose record cannot be read, or apt
not answering (apt-cache missing or failing, no package lists), keeps every part of
that kind (:attr:`Survey.unknown` says why); a package apt answers it has none of (an
old kernel ABI's name after a point release) is offered in no version.  Only
entries directly in those directories, of those names, are parts; a symbolic link or a
file of another name is left alone.  :func:`remove` takes the lock the builds take (the
QEMU build's ``qemu/.lock``, the download's ``debs/pool/.lock``, an unpacked package's
own), never waiting: a build holding it keeps what it guards.  ``irqlab cache --prune``
removes the unused parts, and so does the eviction after a build that removed an output
(:func:`prune_unused`; a QEMU build evicts once it let its lock go).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irqlab.build import cache
from irqlab.build.arch import ARCHES, host_deb_arch
from irqlab.build.cache import CacheEntry
from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "DEBS_DIR",
    "QEMU_DIR",
    "USED_LATELY_S",
    "DebId",
    "Part",
    "SharedRemoval",
    "Survey",
    "Uses",
    "apt_candidates",
    "current_qemu_slugs",
    "mark_used",
    "orphan_locks",
    "prune_unused",
    "remove",
    "remove_stale_locks",
    "survey",
    "used_lately",
    "uses_of",
]

QEMU_DIR = "qemu"
DEBS_DIR = "debs"
_TREE = re.compile(r"^(src|build)-.+$")
# what a lookup that cannot be done raises (no apt lists, no apt-cache)
_LOOKUP_ERRORS = (IrqlabError, OSError, ValueError, KeyError)
# a part modified or marked used (mark_used) this recently stays (seconds)
USED_LATELY_S = 3600.0


def mark_used(*paths: Path) -> None:
    """Mark the shared parts *paths* used now (their mtime): a build does it when it
    takes them, under their lock, and :func:`survey` and :func:`remove` keep them for
    :data:`USED_LATELY_S`.  Best effort (a part another user owns keeps its time)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)


def used_lately(path: Path, now: float | None = None) -> bool:
    """Whether the part *path* was modified or marked used within :data:`USED_LATELY_S`
    of *now* (default: now); a part not there is not."""
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - mtime < USED_LATELY_S


@dataclass(frozen=True)
class DebId:
    """A Debian package version as the pool names its file (``apt-get download``'s
    ``<name>_<version, : as %3a>_<arch>.deb``)."""

    name: str
    version: str
    arch: str

    @classmethod
    def parse(cls, stem: str) -> DebId | None:
        """*stem* (a pool file's name without ``.deb``, an unpacked directory's name)
        read back, or None when it is no such name."""
        words = stem.split("_")
        if len(words) != 3 or not all(words):
            return None
        return cls(words[0], words[1].replace("%3a", ":"), words[2])

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class Part:
    """One shared part: its path, what it is for people, its size and whether it is
    used (see the module's rules); *lock* is the lock a build holds while it makes or
    reads it."""

    path: Path
    what: str
    size: int
    used: bool
    lock: Path
    locker: str  # what a holder of *lock* is doing, for the message when one is

    def relative(self, root: Path) -> str:
        return str(self.path.relative_to(root))


@dataclass
class Uses:
    """What the kept outputs need of the shared parts."""

    qemu_slugs: set[str] = field(default_factory=set)  # QemuSource.slug of each
    debs: set[tuple[str, str]] = field(default_factory=set)  # (name, version)
    checkpatch: set[str] = field(default_factory=set)  # digests of checkpatch outputs
    unknown_trees: list[str] = field(default_factory=list)  # why all QEMU parts stay
    unknown_debs: list[str] = field(default_factory=list)  # why all packages stay


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _versions(record: object) -> list[tuple[str, str]] | None:
    """A ``{name: version}`` record as pairs, None when it is not one."""
    if not isinstance(record, dict):
        return None
    return [(str(n), str(v)) for n, v in record.items()]


def uses_of(kept: Iterable[CacheEntry]) -> Uses:
    """What the complete outputs *kept* need: the QEMU source versions of the QEMU
    outputs, the package versions the QEMU (firmware), kernel and image outputs record,
    the checkpatch outputs."""
    from irqlab.build.qemu import QemuSource

    found = Uses()
    for e in kept:
        if not e.complete:
            continue
        if e.name == "qemu":
            meta = _json(e.path / "manifest.json") or {}
            source = meta.get("source")
            if isinstance(source, dict) and source.get("kind") and source.get("version"):
                found.qemu_slugs.add(QemuSource(str(source["kind"]), str(source["version"])).slug)
            else:
                found.unknown_trees.append(f"{e.path / 'manifest.json'} names no source")
            packages = _versions(meta.get("firmware"))
        elif e.name == "kernel":
            packages = _versions((_json(e.path / "kernel.json") or {}).get("packages"))
        elif e.name == "image":
            packages = _versions((_json(e.path / "image.json") or {}).get("packages"))
        else:
            if e.name == "checkpatch":
                found.checkpatch.add(e.digest)
            continue
        if packages is None:
            found.unknown_debs.append(f"{e.path} records no package versions")
        else:
            found.debs.update(packages)
    return found


def current_qemu_slugs() -> set[str]:
    """The QEMU source versions the next build may take (:attr:`QemuSource.slug`): apt's
    candidate, and the upstream releases this checkout pins (one variable selects them);
    raises when apt does not answer (its last answer in the cache is no answer here: the
    candidate may have changed since)."""
    from irqlab.build import debs, qemu

    slugs = {qemu.upstream_source(v).slug for v in qemu.UPSTREAM_RELEASES}
    with debs.apt_answers_only():
        slugs.add(qemu.QemuSource("debian", qemu.debian_source_version()).slug)
    return slugs


def apt_candidates(ids: Sequence[DebId]) -> set[DebId]:
    """Those of *ids* that are apt's candidate for their name and architecture (a
    foreign architecture's asked as ``name:arch``); a name apt has no package for (an
    old kernel ABI's after a point release) is offered in no version.  Raises when apt
    does not answer: apt-cache missing or failing, or no package lists to answer from
    (then it finds nothing it has not installed: no answer either)."""
    from irqlab.build import debs

    lists = debs.apt_lists_dir()
    if not any(lists.glob("*_Packages*")):
        raise debs.AptError(f"apt has no package lists in {lists} (apt-get update)")
    host = host_deb_arch()
    query = {d: d.name if d.arch in ("all", host) else f"{d.name}:{d.arch}" for d in ids}
    with debs.apt_answers_only():  # not its last answer: the candidates may have changed
        got = debs.apt_show(sorted(set(query.values())))
    return {d for d, q in query.items() if q in got and got[q].version == d.version}


def _size(path: Path, sizes: dict[Path, int] | None) -> int:
    """*path*'s bytes (memoized in *sizes*); 0 without *sizes* (not measured)."""
    if sizes is None:
        return 0
    if path not in sizes:
        try:
            sizes[path] = cache.dir_size(path) if path.is_dir() else path.lstat().st_size
        except OSError:
            sizes[path] = 0
    return sizes[path]


def _inside(path: Path, root: Path) -> bool:
    """Whether *path* is an entry of the cache *root* itself, not reached through a
    symbolic link (its own, or one of a directory between it and *root*)."""
    try:
        real = path.parent.resolve() / path.name
        return not path.is_symlink() and real.is_relative_to(root.resolve())
    except OSError:
        return False


def _entries(d: Path, root: Path) -> list[Path]:
    """The entries directly in *d* that are in the cache *root* itself (:func:`_inside`:
    no symbolic link to elsewhere), by name."""
    try:
        return sorted(p for p in d.iterdir() if _inside(p, root))
    except OSError:
        return []


@dataclass
class Survey:
    """The shared parts found, and why some counted as used for lack of knowledge."""

    parts: list[Part]
    unknown: list[str]

    @property
    def unused(self) -> list[Part]:
        return [p for p in self.parts if not p.used]


def _qemu_parts(
    root: Path,
    found: Uses,
    slugs: Callable[[], set[str]],
    sizes: dict[Path, int] | None,
    unknown: list[str],
) -> list[Part]:
    from irqlab.build import qemu

    work = root / QEMU_DIR
    trees = [p for p in _entries(work, root) if p.is_dir() and _TREE.match(p.name)]
    tarballs = [
        p for p in _entries(work / "dl", root) if p.is_file() and qemu.TARBALL.match(p.name)
    ]
    if not trees and not tarballs:
        return []
    keep_all = list(found.unknown_trees)
    wanted = set(found.qemu_slugs)
    try:
        wanted |= slugs()
    except _LOOKUP_ERRORS as e:
        keep_all.append(f"apt's QEMU source version is not known ({type(e).__name__}: {e})")
    if keep_all:
        unknown += [f"every QEMU source and build tree stays: {why}" for why in keep_all]
    names = {f"src-{s}" for s in wanted} | {f"build-{s}" for s in wanted}
    names |= {f"build-{s}-{a}" for s in wanted for a in ARCHES}
    lock, locker = qemu.build_lock(work), qemu.BUILD_LOCK_WHAT
    parts = []
    now = time.time()
    for p in trees:
        what = "QEMU source tree" if p.name.startswith("src-") else "QEMU build tree"
        used = bool(keep_all) or p.name in names or used_lately(p, now)
        parts.append(Part(p, what, _size(p, sizes), used, lock, locker))
    for p in tarballs:
        m = qemu.TARBALL.match(p.name)
        assert m is not None
        slug = qemu.QemuSource("upstream", m[1]).slug
        used = bool(keep_all) or slug in wanted or used_lately(p, now)
        parts.append(Part(p, "QEMU release tarball", _size(p, sizes), used, lock, locker))
    return parts


def _package_of(p: Path) -> tuple[DebId | None, str]:
    """The package a pool file or unpacked directory holds, and its stem (an interrupted
    unpacking's or removal's leftover named as the directory it was for)."""
    from irqlab.build import debs

    stem = p.name.removesuffix(".deb") if p.is_file() else p.name
    for suffix in (debs.UNPACK_TMP, cache.TRASH):
        stem = stem.removesuffix(suffix)
    return DebId.parse(stem), stem


def _deb_parts(
    root: Path,
    found: Uses,
    candidates: Callable[[Sequence[DebId]], set[DebId]],
    sizes: dict[Path, int] | None,
    unknown: list[str],
) -> list[Part]:
    from irqlab.build import debs
    from irqlab.build.kmod import checkpatch_digest_of

    pool, unpacked = root / DEBS_DIR / "pool", root / DEBS_DIR / "x"
    files = [p for p in _entries(pool, root) if p.is_file() and p.name.endswith(".deb")]
    dirs = [p for p in _entries(unpacked, root) if p.is_dir()]
    known: list[tuple[Path, DebId, str, bool]] = []  # path, package, stem, leftover
    for p in [*files, *dirs]:
        deb, stem = _package_of(p)
        if deb is not None:
            leftover = p.is_dir() and p.name != stem
            known.append((p, deb, stem, leftover))
    if not known:
        return []
    keep_all = list(found.unknown_debs)

    def needed(d: DebId) -> bool:
        return (d.name, d.version) in found.debs or checkpatch_digest_of(d.spec) in found.checkpatch

    now = time.time()
    ask = sorted(
        {
            d
            for p, d, _, leftover in known
            if not leftover and not needed(d) and not used_lately(p, now)
        },
        key=str,
    )
    current: set[DebId] = set()
    if ask and not keep_all:
        try:
            current = candidates(ask)
        except _LOOKUP_ERRORS as e:
            keep_all.append(f"apt's candidates are not known ({type(e).__name__}: {e})")
    if keep_all:
        unknown += [f"every .deb and unpacked package stays: {why}" for why in keep_all]
    parts = []
    for p, d, stem, leftover in known:
        used = bool(keep_all) or (not leftover and (needed(d) or d in current))
        used = used or used_lately(p, now)
        if p.parent == pool:  # irqlab.build.debs.download's lock
            what, lock = f".deb {d.name} {d.version} {d.arch}", debs.pool_lock(pool)
            locker = debs.POOL_LOCK_WHAT
        else:  # irqlab.build.debs.extracted's
            what = f"unpacked {d.name} {d.version} {d.arch}" + (" (leftover)" * leftover)
            lock = cache.lock_file(unpacked / stem)
            locker = debs.unpack_lock_what(f"{stem}.deb")
        parts.append(Part(p, what, _size(p, sizes), used, lock, locker))
    return parts


def survey(
    root: Path,
    kept: Sequence[CacheEntry],
    *,
    qemu_slugs: Callable[[], set[str]] | None = None,
    candidates: Callable[[Sequence[DebId]], set[DebId]] | None = None,
    sizes: dict[Path, int] | None = None,
    measure: bool = True,
) -> Survey:
    """The shared parts in the cache *root*, each used or not when the outputs *kept*
    are what stays; what the next build takes is asked of *qemu_slugs* (default
    :func:`current_qemu_slugs`) and *candidates* (default :func:`apt_candidates`), only
    about parts no kept output needs.  *sizes* memoizes the sizes (path -> bytes); not
    *measure*: every size is 0 (a QEMU tree's take a while to add up)."""
    memo = (sizes if sizes is not None else {}) if measure else None
    found = uses_of(kept)
    unknown: list[str] = []
    parts = _qemu_parts(root, found, qemu_slugs or current_qemu_slugs, memo, unknown)
    parts += _deb_parts(root, found, candidates or apt_candidates, memo, unknown)
    return Survey(parts, unknown)


@dataclass
class SharedRemoval:
    """What :func:`remove` did: the parts removed, those a build held (with who held
    them), those a build used since the survey (:func:`used_lately`, looked at under
    their lock), and the OS's refusals (one line each, naming the path)."""

    removed: list[Part] = field(default_factory=list)
    held: list[tuple[Part, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    used: list[Part] = field(default_factory=list)


def _remove_one(part: Part, root: Path) -> None:
    if not _inside(part.path, root):
        raise cache.RemoveError(f"not removing {part.path}: it is not below {root}")
    if part.path.is_dir():
        cache.remove_dir(part.path)
    else:
        cache.remove_file(part.path)


def remove(parts: Iterable[Part], root: Path) -> SharedRemoval:
    """Remove *parts* (parts of the cache *root*), each under its lock taken without
    waiting: the parts whose lock a build holds stay (``held``, with the holder), and
    so do those a build marked used lately (``used``: looked at again under the lock,
    the survey may be older than a build's use)."""
    done = SharedRemoval()
    by_lock: dict[Path, list[Part]] = {}
    for p in parts:
        by_lock.setdefault(p.lock, []).append(p)
    for lock, group in by_lock.items():
        try:
            held = cache.take_lock(lock, group[0].locker, wait=False)
        except cache.LockHeld as e:
            done.held += [(p, str(e)) for p in group]
            continue
        except cache.LockError as e:
            done.errors += [f"cannot remove {p.path}: {e}" for p in group]
            continue
        with held:
            for p in group:
                if _inside(p.path, root) and used_lately(p.path):
                    done.used.append(p)
                    continue
                try:
                    _remove_one(p, root)
                except cache.RemoveError as e:
                    done.errors.append(str(e))
                    continue
                done.removed.append(p)
    return done


def orphan_locks(root: Path) -> list[Path]:
    """The lock files of unpacked packages no longer there, held or not (as
    :func:`irqlab.build.cache.orphan_locks` the outputs')."""
    unpacked = root / DEBS_DIR / "x"
    return [
        lock
        for lock in sorted(unpacked.glob("*.lock"))
        if _inside(lock, root) and not _unpacked_of(lock).exists()
    ]


def _unpacked_of(lock: Path) -> Path:
    return lock.with_name(lock.name.removesuffix(".lock"))


def remove_stale_locks(root: Path) -> list[Path]:
    """Remove the lock files of unpacked packages no longer there (as
    :func:`irqlab.build.cache.remove_stale_locks` does the outputs'); returns them."""
    return [p for p in orphan_locks(root) if cache.remove_stale_lock(p, _unpacked_of(p))]


def prune_unused(root: Path) -> list[Part]:
    """Best effort, never waiting: remove the parts that neither a complete output in the
    cache *root* nor apt's candidates need; returns what was removed.  Those a build
    holds, or the OS refuses, stay, unsaid.  The eviction after a build that removed an
    output runs it (:func:`irqlab.build.cache.evict_after`)."""
    found = survey(root, [e for e in cache.entries(root) if e.complete], measure=False)
    removed = remove(found.unused, root).removed
    remove_stale_locks(root)
    return removed
