"""A reproducible cpio "newc" writer (the initramfs format).

Everything is owned by root, timestamps are fixed, entries come in a stable
order with each directory before its contents, and special files (device
nodes) can be added without mknod privileges.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TRAILER",
    "Entry",
    "tree_entries",
    "write_newc",
]

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member; *path* is relative to the archive root (no leading '/')."""

    path: str
    mode: int  # st_mode: type bits + permissions
    data: bytes = b""  # file contents or symlink target (if source is None)
    source: Path | None = None  # read file contents from here instead
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node

    @staticmethod
    def directory(path: str, perm: int = 0o755) -> Entry:
        return Entry(path, stat.S_IFDIR | perm)

    @staticmethod
    def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
        return Entry(path, stat.S_IFREG | perm, data)

    @staticmethod
    def symlink(path: str, target: str) -> Entry:
        return Entry(path, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def tree_entries(root: Path) -> Iterator[Entry]:
    """The contents of *root* (not root itself), parents first, names sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        names = sorted(dirnames + filenames)
        for name in names:
            p = base / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                yield Entry.symlink(rel, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                yield Entry.directory(rel, perm)
            elif stat.S_ISREG(st.st_mode):
                yield Entry(rel, stat.S_IFREG | perm, source=p)
            else:
                raise ValueError(f"{p}: unsupported file type in an initramfs tree")
        # symlinks to directories are listed by os.walk in dirnames but not descended into


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _header(ino: int, e: Entry, size: int, nlink: int, mtime: int, namesize: int) -> bytes:
    fields = (
        ino,
        e.mode,
        0,  # uid
        0,  # gid
        nlink,
        mtime,
        size,
        0,  # devmajor
        0,  # devminor
        e.rdev[0],
        e.rdev[1],
        namesize,
        0,  # check
    )
    return b"070701" + b"".join(f"{v:08x}".encode() for v in fields)


def write_newc(entries: Iterable[Entry], out: BinaryIO, mtime: int = 0) -> int:
    """Write *entries* and the trailer; returns the number of bytes written."""
    written = 0

    def emit(ino: int, e: Entry, body: bytes, nlink: int) -> None:
        nonlocal written
        name = e.path.encode() + b"\0"
        hdr = _header(ino, e, len(body), nlink, mtime, len(name))
        chunk = hdr + name + b"\0" * _pad4(len(hdr) + len(name))
        chunk += body + b"\0" * _pad4(len(body))
        out.write(chunk)
        written += len(chunk)

    seen: set[str] = set()
    ino = 1
    for e in entries:
        path = e.path.strip("/")
        if not path or path in seen:
            raise ValueError(f"cpio: empty or duplicate path {e.path!r}")
        seen.add(path)
        e = Entry(path, e.mode, e.data, e.source, e.rdev)
        body = e.source.read_bytes() if e.source is not None else e.data
        if not (stat.S_ISREG(e.mode) or stat.S_ISLNK(e.mode)):
            body = b""
        emit(ino, e, body, 2 if stat.S_ISDIR(e.mode) else 1)
        ino += 1
    emit(0, Entry(TRAILER, 0), b"", 1)
    return written
