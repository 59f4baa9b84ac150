"""Content-addressed build cache: an output directory named by the hash of its inputs.

A recipe computes an :class:`InputHash` over everything that affects its output
(source files, versions, flags), then calls :func:`cached_build`.  If
``<cache>/<name>-<hash>/`` exists and is complete, it is returned at once;
otherwise the recipe builds into a temporary directory which is renamed into
place only on success, so an interrupted build never looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from irqlab.paths import cache_dir

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
