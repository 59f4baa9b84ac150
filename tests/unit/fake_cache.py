"""Fake build-cache outputs for the cache's unit tests: directories laid out like the
recipes' (manifest.json, kernel.json, an ELF module, image.json), with a chosen last use."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

EM_X86_64, EM_AARCH64 = 62, 183
BASE_PACKAGES = ("busybox-static", "dropbear-bin", "libc6", "python3.11-minimal")


def digest(n: int) -> str:
    return f"{n:016x}"


def output(
    root: Path,
    name: str,
    n: int,
    files: Mapping[str, bytes | str] | None = None,
    *,
    used: float | None = None,
    complete: bool = True,
) -> Path:
    """``<root>/<name>-<digest(n)>/`` with *files*, marked complete, last used at *used*."""
    d = root / f"{name}-{digest(n)}{'' if complete else '.tmp'}"
    d.mkdir(parents=True)
    for rel, data in (files or {}).items():
        f = d / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            f.write_bytes(data)
        else:
            f.write_text(data)
    if complete:
        (d / ".complete").write_text(digest(n) + "\n")
    if used is not None:
        os.utime(d, (used, used))
    return d


def elf(machine: int) -> bytes:
    """The start of a 64-bit little-endian ELF relocatable file for *machine*."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHI", 1, machine, 1) + bytes(40)


def qemu(root: Path, n: int, target: str, used: float) -> Path:
    manifest = {"configure": [f"--target-list={target}-softmmu", "--enable-tcg"]}
    return output(
        root,
        "qemu",
        n,
        {"manifest.json": json.dumps(manifest), f"bin/qemu-system-{target}": "", "VERSION": "7.2"},
        used=used,
    )


def kernel(root: Path, n: int, abi: str, used: float) -> Path:
    return output(root, "kernel", n, {"kernel.json": json.dumps({"abi": abi})}, used=used)


def kmod(root: Path, n: int, machine: int, used: float) -> Path:
    return output(root, "kmod", n, {"irqlab.ko": elf(machine) + b"rest"}, used=used)


def image(
    root: Path,
    n: int,
    used: float,
    *,
    abi: str = "6.1.0-57-amd64",
    extra: Sequence[str] | None = ("gpiod",),
    packages: Sequence[str] | None = None,
    module: str | None = "irqlab",
    recorded: bool = True,
    kernel_modules: Sequence[str] = (),
) -> Path:
    """An image whose packages are the base ones plus *extra*; *recorded*: image.json
    records its variant (images from before that only have the packages)."""
    names = packages if packages is not None else (*BASE_PACKAGES, *(extra or ()))
    meta: dict[str, object] = {
        "initramfs": "initramfs.cpio",
        "kernel_version": abi,
        "kmod": module,
        "packages": {p: "1.0" for p in names},
    }
    if recorded:
        meta["variant"] = {
            "extra_packages": list(extra or ()),
            "compression": "none",
            "stdlib_sources": True,
        }
        if kernel_modules:
            meta["variant"]["kernel_modules"] = list(kernel_modules)  # type: ignore[index]
    return output(
        root, "image", n, {"image.json": json.dumps(meta), "initramfs.cpio": "x"}, used=used
    )
