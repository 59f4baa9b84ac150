"""What a cache output was built for, read from its own files: architecture and variant.

Pruning (``irqlab cache --prune N`` and the eviction after each build, see
:mod:`irqlab.build.cache`) keeps the most recently used outputs of each *group*: one
recipe, one architecture, one variant.  An x86_64 QEMU and an aarch64 one, or the
default guest image and the one with ``rt-tests``, never compete for the same places.

Nothing here asks apt or builds: each recipe's output already says what it is.

- ``qemu-*``: ``manifest.json``'s ``--target-list`` (else the ``bin/qemu-system-*`` names);
- ``kernel-*``: ``kernel.json``'s ABI (``6.1.0-57-arm64``: arm64 is aarch64);
- ``image-*``: ``image.json``: the kernel's ABI, whether our module is in it, the
  initramfs's compression, and the Debian packages it ships (their names: an image with
  other extra packages ships others); images since the variant is recorded there also
  name their extra packages;
- ``buildroot-image-*``: ``image.json``'s ``arch``;
- ``snapshot-*``: the QEMU binary in ``meta.json``;
- anything else (``kmod``, ``responder``, a test's module): the ELF machine of the first
  ELF file in it (``irqlab.ko``: x86-64 or AArch64), else no architecture.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from irqlab.build.arch import ARCHES
from irqlab.build.elf import ELF_MAGIC, ElfError, elf_machine
from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "IMAGE_VARIANT_KEY",
    "RECIPES",
    "TEST_MODULE_PREFIX",
    "Kind",
    "damage",
    "describe",
    "image_variant_record",
    "is_recipe",
]

# the ready-state snapshot's output and its state file (irqlab.vm.snapshot's)
SNAPSHOT_RECIPE = "snapshot"
SNAPSHOT_STATE_FILE = "state.mig"
SNAPSHOT_META_FILE = "meta.json"  # its record: the size the save wrote ("bytes"), ...
# Every recipe's name: the <name> of its outputs, <cache>/<name>-<input hash>/
# (irqlab.build: qemu, kernel, kmod, responder, image, devicetree, buildroot;
# irqlab.vm.snapshot).  Only their outputs are listed, pruned and evicted: the cache
# directory may hold what irqlab never made (a user's project-0123456789abcdef/).
RECIPES = frozenset(
    {
        "qemu",
        "kernel",
        "kmod",
        "checkpatch",
        "responder",
        "image",
        "dtb",
        "buildroot-src",
        "buildroot-image",
        SNAPSHOT_RECIPE,
    }
)
# a test's own module (tests/e2e/kmods): test-kmod-<module name>
TEST_MODULE_PREFIX = "test-kmod-"

# image.json's record of the parameters that make a variant (written by ensure_image)
IMAGE_VARIANT_KEY = "variant"


@dataclass(frozen=True)
class Kind:
    """What an output is for: outputs of one recipe with equal ``arch`` and ``variant``
    form one group (the most recently used of a group are kept)."""

    arch: str = ""  # "x86_64", "aarch64"; "" when the output names none
    variant: str = ""  # within recipe and arch: "" is the one variant
    detail: str = ""  # the variant for people ("+gpiod"), shown by `irqlab cache`


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _arch_of_deb(deb_arch: str) -> str:
    return next((a.name for a in ARCHES.values() if a.deb_arch == deb_arch), deb_arch)


def _arch_of_abi(abi: str) -> str:
    """``6.1.0-57-arm64`` -> ``aarch64`` (Debian's kernel ABIs end in the architecture)."""
    return _arch_of_deb(abi.rsplit("-", 1)[-1]) if "-" in abi else ""


def _elf_arch(path: Path) -> str:
    """The architecture of the first ELF file directly in *path* (sorted by name)."""
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return ""
    for f in files:
        try:
            with f.open("rb") as fh:
                machine = elf_machine(fh.read(20))
        except (OSError, ElfError):
            continue
        return next((a.name for a in ARCHES.values() if a.elf_machine == machine), str(machine))
    return ""


def _qemu(path: Path) -> Kind:
    flags = _json(path / "manifest.json").get("configure", [])
    for flag in flags if isinstance(flags, list) else []:
        if str(flag).startswith("--target-list="):
            targets = str(flag).split("=", 1)[1].split(",")
            return Kind(",".join(t.removesuffix("-softmmu") for t in targets))
    binaries = sorted(p.name for p in (path / "bin").glob("qemu-system-*"))
    return Kind(",".join(b.removeprefix("qemu-system-") for b in binaries))


def _kernel(path: Path) -> Kind:
    return Kind(_arch_of_abi(str(_json(path / "kernel.json").get("abi", ""))))


def _image(path: Path) -> Kind:
    meta = _json(path / "image.json")
    if not meta:
        return Kind()
    arch = str(meta.get("arch") or _arch_of_abi(str(meta.get("kernel_version", ""))))
    initramfs = str(meta.get("initramfs", "initramfs.cpio"))
    compression = initramfs.removeprefix("initramfs.cpio").lstrip(".") or "none"
    recorded = meta.get(IMAGE_VARIANT_KEY)
    record = recorded if isinstance(recorded, dict) else {}
    stdlib = bool(record.get("stdlib_sources", True))
    packages = sorted(meta.get("packages") or {})
    # The package names tell the extra packages apart (their dependencies come along), the
    # same way in images from before the variant was recorded as in newer ones.
    names = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    module = meta.get("kmod") or ""
    key = f"module={module} compression={compression} stdlib={int(stdlib)} packages={names}"
    kernel_modules = [str(m) for m in record.get("kernel_modules") or ()]
    if kernel_modules:  # none: the key images had before they could ship more
        key += f" kernel_modules={','.join(kernel_modules)}"
    words = []
    if "extra_packages" in record:
        extra = [str(p) for p in record["extra_packages"]]
        words.append("+" + ",".join(extra) if extra else "no extra packages")
    else:
        words.append(f"{len(packages)} packages (extras not recorded)")
    if kernel_modules:
        words.append("kernel modules " + ",".join(kernel_modules))
    if not module:
        words.append("no module")
    if compression != "none":
        words.append(compression)
    if not stdlib:
        words.append("stdlib bytecode only")
    return Kind(arch, key, ", ".join(words))


def _buildroot_image(path: Path) -> Kind:
    return Kind(str(_json(path / "image.json").get("arch", "x86_64")))


_QEMU_BINARY = re.compile(r"qemu-system-([A-Za-z0-9_]+)$")


def _snapshot(path: Path) -> Kind:
    m = _QEMU_BINARY.search(str(_json(path / "meta.json").get("qemu", "")))
    return Kind(m[1] if m else "")


_READERS: dict[str, Callable[[Path], Kind]] = {
    "qemu": _qemu,
    "kernel": _kernel,
    "image": _image,
    "buildroot-image": _buildroot_image,
    SNAPSHOT_RECIPE: _snapshot,
}


def _size_damage(path: Path, want: int, who: str, *, exact: bool) -> str:
    """Why *path*'s size is not *want* (*exact*) or at least *want*, as *who* says, or ""."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"{path}: {e.strerror}"
    wrong = size != want if exact else size < want
    return f"{path} is {size} bytes, {who} {want}" if wrong else ""


def _image_damage(path: Path) -> str:
    meta = _json(path / "image.json")
    if not meta:
        return f"{path / 'image.json'} is missing or unreadable"
    want = meta.get("initramfs_size")
    initramfs = path / str(meta.get("initramfs", "initramfs.cpio"))
    if not isinstance(want, int):  # images from before it was recorded
        return ""
    return _size_damage(initramfs, want, "image.json says", exact=True)


_SHT_NOBITS = 8
_PT_LOAD = 1


def _table(f: BinaryIO, offset: int, entsize: int, count: int, least: int) -> bytes | None:
    """The ELF header table of *count* entries of *entsize* bytes at *offset* in *f*, or
    None when it is cut short or its entries are shorter than *least* bytes (its end
    then says enough); none at all is an empty one."""
    if count == 0:
        return b""
    f.seek(offset)
    table = f.read(entsize * count)
    return table if len(table) == entsize * count and entsize >= least else None


def _elf_extent(f: BinaryIO) -> int:
    """How long the 64-bit little-endian ELF file *f* must be by its own headers: the
    end of its program and section header tables, of every loadable segment
    (``PT_LOAD``: what a boot copies into memory) and of every section with contents
    in the file (a truncated vmlinux is shorter).  Reads the headers only.  (Not in
    :mod:`irqlab.build.elf`: that file is an input of every image.)"""
    head = f.read(64)
    if head[:4] != ELF_MAGIC or len(head) < 64 or head[4:6] != b"\x02\x01":
        raise ElfError("not a 64-bit little-endian ELF file")
    phoff: int
    shoff: int
    phoff, shoff = struct.unpack_from("<QQ", head, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 0x36)
    end: int = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    segments = _table(f, phoff, phentsize, phnum, 56)
    sections = _table(f, shoff, shentsize, shnum, 40)
    if segments is None or sections is None:
        return end
    for i in range(phnum):
        kind, offset, size = struct.unpack_from("<I4xQ16xQ", segments, i * phentsize)
        if kind == _PT_LOAD:
            end = max(end, offset + size)
    for i in range(shnum):
        kind, offset, size = struct.unpack_from("<4xI16xQQ", sections, i * shentsize)
        if kind != _SHT_NOBITS:
            end = max(end, offset + size)
    return end


def _kernel_damage(path: Path) -> str:
    vmlinux = path / "vmlinux"  # x86_64's (arm64 boots vmlinuz as it is: none)
    if not vmlinux.exists():
        return ""
    try:
        with vmlinux.open("rb") as f:
            want = _elf_extent(f)
    except (OSError, ElfError) as e:
        return f"{vmlinux}: {getattr(e, 'strerror', None) or e}"
    return _size_damage(vmlinux, want, "its ELF headers need at least", exact=False)


def _snapshot_damage(path: Path) -> str:
    state = path / SNAPSHOT_STATE_FILE
    try:
        mode = state.lstat().st_mode
    except FileNotFoundError:
        return f"{state} is missing"
    except OSError as e:
        return f"{state}: {e.strerror}"
    if not stat.S_ISREG(mode):  # a FIFO, a directory or a link (to /dev/zero) was "missing"
        return f"{state} is {_file_kind(mode)}, not the file the save wrote"
    want = _json(path / SNAPSHOT_META_FILE).get("bytes")
    if not isinstance(want, int) or isinstance(want, bool):  # no record: size unknown
        return ""
    return _size_damage(state, want, f"{SNAPSHOT_META_FILE} says the save wrote", exact=True)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((said for test, said in kinds if test(mode)), "not a regular file")


_DAMAGE: dict[str, Callable[[Path], str]] = {
    "kernel": _kernel_damage,
    "image": _image_damage,
    SNAPSHOT_RECIPE: _snapshot_damage,
}


def damage(recipe: str, path: Path) -> str:
    """What is wrong with the complete output *path* of *recipe* by its own records ("" if
    nothing is): a big file cut short or gone (a full disk, an interrupted copy), which
    would fail later and far from its cause (a guest's confusing boot error)."""
    check = _DAMAGE.get(recipe)
    return check(path) if check is not None else ""


def is_recipe(name: str) -> bool:
    """Whether *name* names one of irqlab's recipes (:data:`RECIPES`, a test's module)."""
    return name in RECIPES or (name.startswith(TEST_MODULE_PREFIX) and name != TEST_MODULE_PREFIX)


def describe(recipe: str, path: Path) -> Kind:
    """What the output *path* of *recipe* is for (an unreadable one: no arch, no variant)."""
    reader = _READERS.get(recipe)
    return reader(path) if reader is not None else Kind(_elf_arch(path))


def image_variant_record(
    extra_packages: tuple[str, ...],
    compression: str,
    stdlib_sources: bool,
    kernel_modules: tuple[str, ...] = (),
) -> dict[str, object]:
    """What ``image.json`` records of the variant an image was built as (the kernel's
    modules shipped beyond the standard ones only when there are any)."""
    record: dict[str, object] = {
        "extra_packages": list(extra_packages),
        "compression": compression,
        "stdlib_sources": stdlib_sources,
    }
    if kernel_modules:
        record["kernel_modules"] = list(kernel_modules)
    return record
