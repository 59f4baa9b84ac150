"""Pinned downloads: fetch a URL once, keep it only if its sha256 is the pinned one.

The one download helper of the build recipes (the upstream QEMU tarball, the
Buildroot release).
"""

from __future__ import annotations

import contextlib
import hashlib
import urllib.request
from collections.abc import Callable
from pathlib import Path

from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["ChecksumMismatch", "DownloadFailed", "download", "sha256_of", "verify_sha256"]


class ChecksumMismatch(IrqlabError, ValueError):
    """A downloaded file is not the pinned one."""


class DownloadFailed(IrqlabError, OSError):
    """A download did not complete (no internet, the server's error); nothing of it is
    left behind."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumMismatch` unless *path* has the sha256 *expected*."""
    got = sha256_of(path)
    if got != expected.lower():
        raise ChecksumMismatch(f"{path.name}: sha256 {got} does not match pinned {expected}")


def download(url: str, dest: Path, sha256: str, *, say: Callable[[str], None]) -> Path:
    """Fetch *url* to *dest* unless a file with the right sha256 is there; verify it
    (a mismatching download is removed).  Progress goes to *say*."""
    if dest.is_file() and sha256_of(dest) == sha256.lower():
        return dest
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say(f"downloading {url}")
    try:
        _fetch(url, part, say)
    except OSError as e:  # urllib's URLError too
        part.unlink(missing_ok=True)
        for d in made:  # deepest first; what this call made, if empty
            with contextlib.suppress(OSError):
                d.rmdir()
        why = getattr(e, "reason", None) or e.strerror or e
        raise DownloadFailed(f"cannot download {url} (it needs the internet): {why}") from None
    try:
        verify_sha256(part, sha256)
    except ChecksumMismatch as e:
        part.unlink()
        raise ChecksumMismatch(f"{url}: {e}; file removed") from None
    part.rename(dest)
    return dest


def _fetch(url: str, part: Path, say: Callable[[str], None]) -> None:
    """*url*'s content into the file *part*, its progress to *say* every quarter."""
    with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as f:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        next_report = 0.0
        for block in iter(lambda: resp.read(1 << 16), b""):
            f.write(block)
            done += len(block)
            if total and done / total >= next_report:
                say(f"  {done * 100 // total:3d}% of {total} bytes")
                next_report += 0.25
