"""Assembling an initramfs from extracted Debian packages: a merged-/usr staging tree,
files picked from packages, the shared libraries the ELF files need (DT_NEEDED
closure), busybox's applet links, and the newc archive (optionally compressed)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from irqlab import cancel
from irqlab.build import elf
from irqlab.build.cpio import Entry, write_newc
from irqlab.paths import PRIVATE_FILE_MODE

__all__ = [
    "COMPRESSORS",
    "LIBDIR",
    "SKELETON_DIRS",
    "Stage",
    "add_libraries",
    "busybox_links",
    "copy_package_all",
    "copy_pick",
    "lib_dirs",
    "library_index",
    "merged_path",
    "resolve_in_tree",
    "write_archive",
]

MTIME = 1_700_000_000  # fixed timestamp of every initramfs entry (reproducible output)
LIBDIR = "usr/lib/x86_64-linux-gnu"
LIB_SEARCH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64")


def lib_dirs(triplet: str) -> tuple[str, tuple[str, ...]]:
    """(the image's library dir, where packages keep libraries) for a multiarch *triplet*."""
    if triplet == "x86_64-linux-gnu":
        return LIBDIR, LIB_SEARCH
    return f"usr/lib/{triplet}", (f"lib/{triplet}", f"usr/lib/{triplet}")


MERGED_TOP = ("bin", "sbin", "lib", "lib64")
SKELETON_DIRS = (
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib64",
    "etc",
    "proc",
    "sys",
    "dev",
    "run",
    "mnt",
    "var",
)

# Never copied from extra packages.
DOC_DIRS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
)

COMPRESSORS: dict[str, tuple[tuple[str, ...], str]] = {
    "zstd": (("zstd", "-q", "-9", "-T0", "-c"), ".zst"),
    "gzip": (("gzip", "-9", "-n", "-c"), ".gz"),
    "lz4": (("lz4", "-q", "-l", "-9", "-c"), ".lz4"),  # -l: the legacy frame the kernel reads
    "none": ((), ""),
}
# Uncompressed boots fastest under TCG: unpacking is on the critical path
# (request_module() and /init wait for it) and zstd's decompression there cost
# +0.3-0.4 s; lz4 boots as fast as none; gzip is slowest.
DEFAULT_COMPRESSION = "none"


def merged_path(rel: str) -> str:
    """Debian packages still ship /bin, /lib...; the image is merged-/usr."""
    parts = PurePosixPath(rel).parts
    if parts and parts[0] in MERGED_TOP:
        return str(PurePosixPath("usr", *parts))
    return str(PurePosixPath(*parts))


def _clamped(depth: int, target: str) -> str:
    """The relative symlink *target* of a link *depth* directories below the tree's root,
    without the ``..`` that would climb above the root: the kernel stays at ``/`` for
    those (Debian packages ship such links, lintian's symlink-has-too-many-up-segments),
    so the link means the same in the guest and stays in the tree on the host.  The
    ``..`` are counted by name (``a/..`` is where ``a`` is), as at :meth:`Stage.symlink`."""
    out: list[str] = []
    for part in PurePosixPath(target).parts:
        if part == "..":
            if depth == 0:
                continue  # ".." at the root is the root
            depth -= 1
        elif part != ".":
            depth += 1
        out.append(part)
    return "/".join(out) or "."


def resolve_in_tree(tree: Path, rel: str, limit: int = 40) -> Path:
    """Follow symlinks inside an extracted package tree, a component at a time, as the
    kernel would with *tree* as the root: an absolute link starts again at *tree*, and
    ``..`` at *tree* stays there (a relative link with too many ``..`` leads inside)."""
    todo = list(PurePosixPath(rel).parts)
    done: list[str] = []  # real directories below tree, none a symlink
    followed = 0
    while todo:
        part = todo.pop(0)
        if part in ("/", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        p = tree.joinpath(*done, part)
        if not p.is_symlink():
            done.append(part)
            continue
        followed += 1
        if followed > limit:
            raise ValueError(f"{tree}/{rel}: too many levels of symbolic links")
        target = PurePosixPath(os.readlink(p))
        if target.is_absolute():
            done = []
        todo[:0] = target.parts
    return tree.joinpath(*done)


class Stage:
    """The initramfs tree being assembled, merged-/usr (paths are relative to it).

    Nothing is made or written outside :attr:`root`: a relative symlink with more
    ``../`` than it is deep (a package's link, meant for ``/``, where the kernel stays at
    the root) is made without those that climb above it (:func:`_clamped`), and a write,
    directory or copy whose destination resolves outside it (through any symlink) is
    refused, a :class:`ValueError` naming it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / merged_path(rel.lstrip("/"))

    def contained(self, p: Path) -> Path:
        """*p*, once what it resolves to (its symlinks followed, as a write would) is
        checked to be in the stage."""
        root = self.root.resolve()
        real = p.resolve()
        if real != root and root not in real.parents:
            raise ValueError(f"{p} resolves to {real}, outside the image's tree {root}")
        return p

    def mkdir(self, rel: str, mode: int = 0o755) -> Path:
        p = self.contained(self.path(rel))
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        return p

    def write(self, rel: str, data: bytes | str, mode: int = 0o644) -> None:
        p = self.contained(self.path(rel))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(p, mode)

    def symlink(self, rel: str, target: str) -> None:
        p = self.path(rel)
        if not os.path.isabs(target):
            target = _clamped(len(p.parent.relative_to(self.root).parts), target)
        self.contained(p.parent).mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target)

    def copy_file(self, src: Path, rel: str) -> None:
        dst = self.contained(self.path(rel))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, stat.S_IMODE(src.stat().st_mode))


def copy_entry(tree: Path, rel: str, stage: Stage) -> None:
    src = tree / rel
    if src.is_symlink():
        target = os.readlink(src)
        if target.startswith("/"):
            raise ValueError(f"{src}: absolute symlink to {target} (handle it in the recipe)")
        stage.symlink(rel, target)
    elif src.is_dir():
        stage.mkdir(rel, stat.S_IMODE(src.stat().st_mode))
    else:
        stage.copy_file(src, rel)


def copy_pick(
    tree: Path, rel: str, stage: Stage, keep: Callable[[str], bool] = lambda _rel: True
) -> int:
    """Copy a file or directory of an extracted package; below a directory, only the
    paths (relative to *tree*) *keep* accepts (a refused directory is skipped whole)."""
    src = tree / rel
    if not src.exists() and not src.is_symlink():
        raise FileNotFoundError(f"{rel} not in {tree.name}")
    if not src.is_dir() or src.is_symlink():
        copy_entry(tree, rel, stage)
        return 1
    n = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            r = str(Path(dirpath, name).relative_to(tree))
            if not keep(r):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            if name in dirnames and Path(dirpath, name).is_symlink():
                dirnames.remove(name)
            copy_entry(tree, r, stage)
            n += 1
    return n


def copy_package_all(tree: Path, stage: Stage) -> int:
    """Every file of an extra package except documentation."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = Path(dirpath).relative_to(tree).as_posix()
        dirnames[:] = sorted(d for d in dirnames if f"{rel_dir}/{d}".lstrip("./") not in DOC_DIRS)
        for name in sorted(filenames):
            if name == ".complete" and rel_dir == ".":
                continue
            copy_entry(tree, str(Path(rel_dir, name)), stage)
            n += 1
    return n


def library_index(
    trees: Iterable[Path], search: Sequence[str] = LIB_SEARCH
) -> dict[str, tuple[Path, str]]:
    """Shared library file name -> (package tree, relative path), first package wins."""
    index: dict[str, tuple[Path, str]] = {}
    for tree in trees:
        for d in search:
            ld = tree / d
            if not ld.is_dir():
                continue
            for f in sorted(ld.iterdir()):
                if ".so" in f.name:
                    index.setdefault(f.name, (tree, f"{d}/{f.name}"))
    return index


def elf_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and elf.is_elf(p):
            out.append(p)
    return out


def add_libraries(
    stage: Stage, index: Mapping[str, tuple[Path, str]], libdir_rel: str = LIBDIR
) -> list[str]:
    """Copy every shared library the staged ELF files need (transitively) into
    *libdir_rel*; returns them.

    Raises :class:`ValueError` naming the binary and library when one is missing.
    """
    libdir = stage.path(libdir_rel)
    libdir.mkdir(parents=True, exist_ok=True)
    added: list[str] = []
    todo = elf_files(stage.root)
    done: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        info = elf.read_dyn_info(f)
        wanted = list(info.needed)
        if info.interp:
            interp = stage.path(info.interp)
            if not interp.exists():
                name = PurePosixPath(info.interp).name
                wanted.append(name)
                rel_interp = merged_path(info.interp.lstrip("/"))
                if PurePosixPath(rel_interp).parent != PurePosixPath(libdir_rel):
                    target = os.path.relpath(stage.root / libdir_rel / name, interp.parent)
                    stage.symlink(rel_interp, target)
        for so in wanted:
            dst = libdir / so
            if dst.exists():
                continue
            hit = index.get(so)
            if hit is None:
                raise ValueError(
                    f"{f.relative_to(stage.root)} needs {so}, which no package of the image ships"
                )
            tree, rel = hit
            src = resolve_in_tree(tree, rel)
            shutil.copyfile(src, stage.contained(dst))
            os.chmod(dst, 0o755)
            added.append(so)
            todo.append(dst)
    return sorted(added)


# The kernel runs CONFIG_MODPROBE_PATH (/sbin/modprobe) for every request_module()
# during boot (crypto self-tests ask for a few): with no such file that fails at
# once instead of costing a process each under TCG.  /init points
# /proc/sys/kernel/modprobe at the real one once booted.
_APPLET_MOVES = {"usr/sbin/modprobe": "usr/bin/modprobe"}


def busybox_links(listing: str) -> dict[str, str]:
    """``busybox --list-full`` -> {merged path: relative symlink target}."""
    links: dict[str, str] = {}
    for line in listing.split():
        rel = merged_path(line.strip().lstrip("/"))
        rel = _APPLET_MOVES.get(rel, rel)
        if "/" not in rel or rel == "usr/bin/busybox":
            continue
        target = os.path.relpath("usr/bin/busybox", PurePosixPath(rel).parent.as_posix())
        links[rel] = target
    return links


def _private_file(path: Path) -> BinaryIO:
    """*path* opened for writing, truncated, mode 0600: an image archive holds the
    guest's SSH host key (an existing file is made 0600 too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def write_archive(entries: Sequence[Entry], out_dir: Path, compression: str) -> tuple[Path, int]:
    """Write *entries* as ``initramfs.cpio[.suffix]`` in *out_dir*, compressed with one of
    :data:`COMPRESSORS`: (the file, the uncompressed archive's size).  Mode 0600: the
    archive holds the guest's SSH host key."""
    raw = out_dir / "initramfs.cpio"
    with _private_file(raw) as f:
        raw_size = write_newc(entries, f, mtime=MTIME)
    cmd, suffix = COMPRESSORS[compression]
    out = out_dir / f"initramfs.cpio{suffix}"
    if cmd:
        with raw.open("rb") as fin, _private_file(out) as fout:
            r = cancel.run(
                [*cmd, "-"],
                doing=f"compressing the initramfs ({cmd[0]})",
                stdin=fin,
                stdout=fout,
                stderr=subprocess.PIPE,
            )
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]}: {r.stderr.decode(errors='replace')}")
        raw.unlink()
    return out, raw_size
