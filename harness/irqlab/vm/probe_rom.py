"""A 64 KiB firmware image (for ``-bios``) that proves an accelerator runs real guest code.

The CPU starts at the reset vector in real mode, prints :data:`STAGE_REAL`
on COM1, copies identity page tables to RAM, switches through protected mode
with paging into 64-bit long mode, prints :data:`LONG_MODE_MARKER` from
64-bit code and halts.  Only a working accelerator gets to the second
marker; nested paravirtual KVM (PVM) here, for instance, runs the real-mode
part and then hangs on the switch to long mode, as a Linux kernel would.

The machine code is hand-assembled below (encodings checked with GNU as
and objdump); no assembler is needed at run time.
"""

from __future__ import annotations

import struct

from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "BASE",
    "COM1",
    "LONG_MODE_MARKER",
    "SIZE",
    "STAGE_REAL",
    "build",
]

SIZE = 0x10000  # QEMU wants -bios images in 64 KiB multiples; ours is mapped at 0xF0000
BASE = 0xF0000  # physical address of offset 0 (legacy BIOS alias, CS=0xF000)
COM1 = 0x3F8
STAGE_REAL = b"R"
LONG_MODE_MARKER = b"IRQLAB-PROBE-LONG-MODE-OK\n"

_LM_CODE = 0x0100  # 64-bit code
_GDT = 0x0180
_GDTR = 0x0198
_MSG = 0x01A0
_PAGE_TABLES = 0x1000  # three 4 KiB tables in the image, copied to RAM at the same offset
_RAM_TABLES = 0x1000  # PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000 (physical)
_CODE64_SEL = 0x08
_DATA_SEL = 0x10


def _u16(v: int) -> bytes:
    return struct.pack("<H", v)


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _real_mode() -> bytes:
    return b"".join(
        [
            b"\xfa",  # cli
            b"\x31\xc0",  # xor ax, ax
            b"\x8e\xc0",  # mov es, ax
            b"\x8c\xc8",  # mov ax, cs
            b"\x8e\xd8",  # mov ds, ax
            b"\xba" + _u16(COM1),  # mov dx, COM1
            b"\xb0" + STAGE_REAL,  # mov al, 'R'
            b"\xee",  # out dx, al
            b"\xbe" + _u16(_PAGE_TABLES),  # mov si, tables (in ROM, DS=F000)
            b"\xbf" + _u16(_RAM_TABLES),  # mov di, tables (in RAM, ES=0)
            b"\xb9" + _u16(0x3000),  # mov cx, 3 pages
            b"\xfc",  # cld
            b"\xf3\xa4",  # rep movsb
            b"\x66\x0f\x01\x16" + _u16(_GDTR),  # lgdtl [GDTR]
            b"\x0f\x20\xe0",  # mov eax, cr4
            b"\x66\x83\xc8\x20",  # or eax, CR4.PAE
            b"\x0f\x22\xe0",  # mov cr4, eax
            b"\x66\xb8" + _u32(_RAM_TABLES),  # mov eax, PML4
            b"\x0f\x22\xd8",  # mov cr3, eax
            b"\x66\xb9" + _u32(0xC0000080),  # mov ecx, MSR_EFER
            b"\x0f\x32",  # rdmsr
            b"\x66\x0d" + _u32(0x100),  # or eax, EFER.LME
            b"\x0f\x30",  # wrmsr
            b"\x0f\x20\xc0",  # mov eax, cr0
            b"\x66\x0d" + _u32(0x80000001),  # or eax, CR0.PG | CR0.PE
            b"\x0f\x22\xc0",  # mov cr0, eax
            b"\x66\xea" + _u32(BASE + _LM_CODE) + _u16(_CODE64_SEL),  # jmp far 0x08:long_mode
        ]
    )


def _long_mode() -> bytes:
    head = b"".join(
        [
            b"\x66\xb8" + _u16(_DATA_SEL),  # mov ax, 0x10
            b"\x8e\xd8",  # mov ds, eax
            b"\x66\xba" + _u16(COM1),  # mov dx, COM1
        ]
    )
    lea_len = 7  # 48 8d 35 rel32: lea rsi, [rip + rel32]
    rel = _MSG - (_LM_CODE + len(head) + lea_len)
    return b"".join(
        [
            head,
            b"\x48\x8d\x35" + struct.pack("<i", rel),
            b"\xac",  # 1: lodsb
            b"\x84\xc0",  # test al, al
            b"\x74\x03",  # jz 2f
            b"\xee",  # out dx, al
            b"\xeb\xf8",  # jmp 1b
            b"\xf4",  # 2: hlt
            b"\xeb\xfd",  # jmp 2b
        ]
    )


def _gdt() -> bytes:
    null = 0
    code64 = 0x00209A0000000000  # present, DPL0, exec/read, L=1
    data = 0x0000920000000000  # present, DPL0, read/write
    return struct.pack("<3Q", null, code64, data)


def _page_tables() -> bytes:
    pml4 = struct.pack("<Q", (_RAM_TABLES + 0x1000) | 0x3).ljust(0x1000, b"\0")
    pdpt = struct.pack("<Q", (_RAM_TABLES + 0x2000) | 0x3).ljust(0x1000, b"\0")
    pd = struct.pack("<Q", 0x0 | 0x83).ljust(0x1000, b"\0")  # 2 MiB page at 0, present, RW
    return pml4 + pdpt + pd


def _place(image: bytearray, offset: int, data: bytes, limit: int) -> None:
    if offset + len(data) > limit:
        raise AssertionError(f"probe ROM layout overflow at {offset:#x}")
    image[offset : offset + len(data)] = data


def build() -> bytes:
    """The firmware image, :data:`SIZE` bytes."""
    image = bytearray(SIZE)
    _place(image, 0, _real_mode(), _LM_CODE)
    _place(image, _LM_CODE, _long_mode(), _GDT)
    gdt = _gdt()
    _place(image, _GDT, gdt, _GDTR)
    _place(image, _GDTR, _u16(len(gdt) - 1) + _u32(BASE + _GDT), _MSG)
    _place(image, _MSG, LONG_MODE_MARKER + b"\0", _PAGE_TABLES)
    _place(image, _PAGE_TABLES, _page_tables(), 0xFFF0)
    _place(image, 0xFFF0, b"\xea" + _u16(0) + _u16(BASE >> 4), SIZE)  # jmp far F000:0000
    return bytes(image)
