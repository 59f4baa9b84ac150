"""Answers of host commands about host files, remembered while those files stay the same.

Every guest start asks the host the same few questions before QEMU runs: which of the
responder's build packages dpkg has installed and libc6-dev's version (``dpkg-query``,
~10 ms each: it reads dpkg's whole database), gcc's version (``gcc --version``), the
shared libraries QEMU's binary lacks (``ldd``).  Each answer depends on files whose
identity (device, inode, size, modification time) changes whenever the answer can:
dpkg replaces its status file on every install or removal (and journals one under
way in its ``updates/``), a gcc or QEMU update
replaces the binary, ``ldconfig`` the loader's cache.

:func:`remembered` keeps an answer in the cache (``host-facts/``) under the identity
of those files and gives it back, a ``stat`` per file, while they are unchanged; a
changed or missing file asks the command again.  A cache copied to another machine or
container holds other identities (device, inode): it asks there too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from irqlab.errors import IrqlabError, hide_frame
from irqlab.paths import cache_dir

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["DIR", "DPKG_DATABASE", "LOADER_CACHE", "identity", "remembered"]

DIR = "host-facts"
# dpkg's installed set: the status file (replaced on every change) and the journal of
# an install under way (entries in updates/ until dpkg folds them into the status)
DPKG_DATABASE = (Path("/var/lib/dpkg/status"), Path("/var/lib/dpkg/updates"))
LOADER_CACHE = Path("/etc/ld.so.cache")
VERSION = 1  # of what is stored: a change asks every question again
KEPT_PER_QUESTION = 16  # answers to one question with different arguments
# A temporary file this old is a writer's that died or failed (a full disk) before its
# rename: writing one takes well under a second.
STALE_TMP_S = 60.0

_T = TypeVar("_T")


def identity(path: Path) -> list[object] | None:
    """*path*'s identity (resolved path, device, inode, size, mtime in ns), None if it
    cannot be read."""
    try:
        real = path.resolve()
        st = real.stat()
    except (OSError, RuntimeError):
        return None
    return [str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def remembered(
    question: str,
    about: Sequence[Path],
    ask: Callable[[], _T],
    args: Sequence[str] = (),
    *,
    keep: Callable[[_T], bool] = lambda _answer: True,
) -> _T:
    """*ask*'s answer (a JSON value) to *question* with *args*, remembered while the
    files *about* keep their identity (:func:`identity`) if *keep* says so of it (an
    answer that makes the caller change the host, such as packages missing, is asked
    again: the change shows in those files only when it is made for real).  Asked every
    time when one of the files cannot be read or the cache cannot be written."""
    ids = [identity(p) for p in about]
    if any(i is None for i in ids):
        return ask()
    try:
        folder = cache_dir() / DIR
    except (OSError, IrqlabError):  # no writable cache: asked as before
        return ask()
    stem = f"{question}-{_digest([VERSION, question, list(args)])}"
    memo = folder / f"{stem}-{_digest(ids)}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = json.loads(memo.read_text())
        if stored["about"] == ids and stored["args"] == list(args):
            return stored["answer"]  # type: ignore[no-any-return]
    answer = ask()
    if keep(answer):
        with contextlib.suppress(OSError, TypeError, ValueError):
            _store(folder, memo, {"about": ids, "args": list(args), "answer": answer})
        with contextlib.suppress(OSError):
            _forget(folder, question, stem, memo)
    return answer


def _store(folder: Path, memo: Path, record: object) -> None:
    """*record* as *memo*, written to a temporary file of its own (another thread or
    process storing the same answer has another) and renamed; the temporary file is
    removed when the write fails (a full disk)."""
    data = json.dumps(record)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{memo.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(name, memo)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _forget(folder: Path, question: str, stem: str, memo: Path) -> None:
    """Remove the answers to *stem* about files since changed, the oldest answers to
    *question* beyond :data:`KEPT_PER_QUESTION` (other arguments: a test's binaries), and
    temporary files older than :data:`STALE_TMP_S` (a writer killed before its rename)."""
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
    for old in folder.glob(f"{stem}-*.json"):
        if old != memo:
            with contextlib.suppress(OSError):
                old.unlink()
    others = [p for p in folder.glob(f"{question}-*.json") if p != memo]
    if len(others) >= KEPT_PER_QUESTION:
        with contextlib.suppress(OSError):
            others.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in others[: len(others) - KEPT_PER_QUESTION + 1]:
            with contextlib.suppress(OSError):
                old.unlink()
