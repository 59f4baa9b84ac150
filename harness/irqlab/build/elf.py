"""Just enough ELF to find what a binary needs at run time (DT_NEEDED, PT_INTERP), and
what a kernel module declares (its ``.modinfo`` section: parameters, dependencies).

Used to pick the shared libraries that go into the guest image and to prove,
at build time, that every binary there will find its libraries; and to check a
guest's module parameters against the module before anything boots.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from irqlab.errors import IrqlabError

__all__ = [
    "ELF_MAGIC",
    "DynInfo",
    "ElfError",
    "dyn_info",
    "elf_section",
    "is_elf",
    "modinfo",
    "module_parameters",
    "read_dyn_info",
]

ELF_MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_SONAME = 0, 1, 5, 14


class ElfError(IrqlabError, ValueError):
    pass


@dataclass(frozen=True)
class DynInfo:
    needed: tuple[str, ...]
    soname: str | None
    interp: str | None


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def elf_machine(data: bytes) -> int:
    """``e_machine`` of an ELF image (62: x86_64, 183: aarch64; see
    :attr:`irqlab.build.arch.Arch.elf_machine`); its first 20 bytes are enough."""
    if data[:4] != ELF_MAGIC or len(data) < 20:
        raise ElfError("not an ELF file")
    machine: int = struct.unpack_from("<H" if data[5] == 1 else ">H", data, 18)[0]
    return machine


def elf_section(data: bytes, name: str) -> bytes | None:
    """The contents of the section *name* of a 64-bit ELF image (either byte order), or
    None when it has no such section."""
    if data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if data[4] != 2:
        raise ElfError("only 64-bit ELF is supported")
    order = "<" if data[5] == 1 else ">"
    try:
        shoff = struct.unpack_from(order + "Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x3A)

        def section(i: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
            sh = struct.unpack_from(order + "IIQQQQ", data, shoff + i * shentsize)
            return sh[0], sh[4], sh[5]

        if shnum == 0 or shstrndx >= shnum:
            return None
        _, names_at, names_size = section(shstrndx)
        names = data[names_at : names_at + names_size]
        for i in range(shnum):
            at, offset, size = section(i)
            if names[at : names.find(b"\0", at)] == name.encode():
                return data[offset : offset + size]
    except struct.error as e:
        raise ElfError(f"truncated ELF image: {e}") from e
    return None


def modinfo(data: bytes) -> list[tuple[str, str]]:
    """A kernel module's ``.modinfo`` entries (``key=value``, in order), as ``modinfo``
    reads them; [] without that section."""
    section = elf_section(data, ".modinfo") or b""
    entries = (e.decode(errors="replace") for e in section.split(b"\0") if b"=" in e)
    return [(k, v) for k, _, v in (e.partition("=") for e in entries)]


def module_parameters(data: bytes) -> dict[str, str]:
    """The parameters a kernel module declares, {name: type} (``parmtype=``; "" for one
    with only a description, ``parm=``), the list ``modinfo -p`` shows."""
    params: dict[str, str] = {}
    for key, value in modinfo(data):
        if key in ("parm", "parmtype") and ":" in value:
            name, _, rest = value.partition(":")
            params.setdefault(name, "")
            if key == "parmtype":
                params[name] = rest
    return params


def module_vermagic(data: bytes) -> str | None:
    """The kernel release a module was built for: the first word of its ``.modinfo``
    ``vermagic=`` (``6.1.0-57-amd64 SMP preempt mod_unload modversions``), or None."""
    for key, value in modinfo(data):
        if key == "vermagic" and value.split():
            return value.split()[0]
    return None


def dyn_info(data: bytes) -> DynInfo:
    """DT_NEEDED, DT_SONAME and PT_INTERP of a 64-bit little-endian ELF image."""
    if data[:4] != ELF_MAGIC:
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF is supported")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dyn: tuple[int, int] | None = None
    interp: str | None = None
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, off
        )
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_DYNAMIC:
            dyn = (p_offset, p_filesz)
        elif p_type == _PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0")[0].decode()
    if dyn is None:
        return DynInfo((), None, interp)  # static
    entries: list[tuple[int, int]] = []
    strtab_vaddr: int | None = None
    d_off, d_size = dyn
    for pos in range(d_off, d_off + d_size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_STRTAB:
            strtab_vaddr = val
        entries.append((tag, val))
    if strtab_vaddr is None:
        raise ElfError("dynamic section without DT_STRTAB")
    strtab = _vaddr_to_offset(strtab_vaddr, loads)

    def string(at: int) -> str:
        end = data.index(b"\0", strtab + at)
        return data[strtab + at : end].decode()

    needed = tuple(string(v) for t, v in entries if t == _DT_NEEDED)
    soname = next((string(v) for t, v in entries if t == _DT_SONAME), None)
    return DynInfo(needed, soname, interp)


def _vaddr_to_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int:
    for seg_vaddr, seg_off, seg_size in loads:
        if seg_vaddr <= vaddr < seg_vaddr + seg_size:
            return vaddr - seg_vaddr + seg_off
    raise ElfError(f"address {vaddr:#x} is in no PT_LOAD segment")


def read_dyn_info(path: Path) -> DynInfo:
    try:
        return dyn_info(path.read_bytes())
    except (ElfError, struct.error, IndexError, ValueError) as e:
        raise ElfError(f"{path}: {e}") from e
