"""Content-addressed build cache: an output directory named by the hash of its inputs.

A recipe computes an :class:`InputHash` over everything that affects its output
(source files, versions, flags), then calls :func:`cached_build`.  If
``<cache>/<name>-<hash>/`` exists and is complete, it is returned at once;
otherwise the recipe builds into a temporary directory which is renamed into
place only on success, so an interrupted build never looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from irqlab.paths import cache_dir

__all__ = [
    "CacheEntry",
    "InputHash",
    "cached_build",
    "dir_size",
    "entries",
    "is_complete",
    "output_dir",
    "prune_plan",
    "remove_entry",
]

_COMPLETE = ".complete"


class InputHash:
    """Accumulates build inputs; ``hexdigest()`` names the output."""

    def __init__(self, recipe_version: str) -> None:
        self._h = hashlib.sha256()
        self.add_str("recipe", recipe_version)

    def add_str(self, label: str, value: str) -> None:
        data = value.encode()
        self._h.update(f"{label}:{len(data)}:".encode())
        self._h.update(data)

    def add_file(self, path: Path, label: str | None = None) -> None:
        self.add_str("file", label if label is not None else path.name)
        self._h.update(hashlib.sha256(path.read_bytes()).digest())

    def add_tree(self, root: Path, files: Iterable[Path] | None = None) -> None:
        """Hash every regular file below *root* (or the given ones), by relative path."""
        paths = sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file()))
        for p in paths:
            if "__pycache__" in p.parts:
                continue
            self.add_file(p, label=str(p.relative_to(root)))

    def hexdigest(self, length: int = 16) -> str:
        return self._h.hexdigest()[:length]


def touch(path: Path) -> None:
    """Mark an output as just used (``irqlab cache --prune`` keeps the most recently used)."""
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)


def output_dir(name: str, digest: str) -> Path:
    return cache_dir() / f"{name}-{digest}"


def is_complete(path: Path) -> bool:
    return (path / _COMPLETE).is_file()


def cached_build(
    name: str, digest: str, build: Callable[[Path], None], *, force: bool = False
) -> Path:
    """Return ``<cache>/<name>-<digest>``, running ``build(tmpdir)`` first if it is missing.

    ``build`` must fill the directory it is given; on success the directory is
    renamed into place and marked complete.  On failure it is removed and the
    exception propagates.  Concurrent callers (two test runs, two terminals)
    serialise on a lock file, so one builds and the other then finds the result.
    """
    final = output_dir(name, digest)
    if is_complete(final) and not force:
        touch(final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(final.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final) and not force:
            return final
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / _COMPLETE).write_text(digest + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    return final


# --- housekeeping --------------------------------------------------------------------

_ENTRY = re.compile(r"^(?P<name>[a-z][a-z0-9-]*?)-(?P<digest>[0-9a-f]{16})(?P<tmp>\.tmp)?$")


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the recipe: qemu, kernel, kmod, image, ...
    digest: str
    path: Path
    complete: bool
    mtime: float


def entries(root: Path | None = None) -> list[CacheEntry]:
    """The outputs in the cache (not the shared source trees, ccache or package pool)."""
    base = root if root is not None else cache_dir()
    found = []
    for p in sorted(base.iterdir()) if base.is_dir() else []:
        m = _ENTRY.match(p.name)
        if m and p.is_dir():
            found.append(
                CacheEntry(
                    m["name"], m["digest"], p, is_complete(p) and not m["tmp"], p.stat().st_mtime
                )
            )
    return found


def dir_size(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() or f.is_symlink())


def prune_plan(found: list[CacheEntry], keep: int) -> list[CacheEntry]:
    """What to remove: incomplete leftovers, and all but the newest *keep* outputs per recipe."""
    doomed = [e for e in found if not e.complete]
    by_name: dict[str, list[CacheEntry]] = {}
    for e in found:
        if e.complete:
            by_name.setdefault(e.name, []).append(e)
    for group in by_name.values():
        group.sort(key=lambda e: e.mtime, reverse=True)
        doomed += group[keep:]
    return doomed


def remove_entry(entry: CacheEntry) -> bool:
    """Remove one output unless a build holds its lock right now; True if removed."""
    lock_path = entry.path.with_name(f"{entry.name}-{entry.digest}.lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(entry.path, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
    return True
