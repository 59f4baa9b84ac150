"""The kernel-module recipe: what it hashes, what it copies, what fails it."""

from __future__ import annotations

from pathlib import Path

from irqlab.build import kmod


def test_sources_include_register_map_and_exclude_build_products(tmp_path: Path) -> None:
    files = kmod.source_files()
    assert "qemu-device/irqlab-regs.h" in files
    assert "guest-kmod/Kbuild" in files
    assert "guest-kmod/include/uapi/linux/irqlab.h" in files
    assert not [r for r in files if r.endswith((".o", ".ko", ".mod.c", ".cmd"))]


def test_digest_follows_sources_and_kernel(tmp_path: Path) -> None:
    a = tmp_path / "a.c"
    a.write_text("int x;\n")
    base = kmod.input_digest("6.1.0-1-amd64", {"guest-kmod/a.c": a})
    assert base == kmod.input_digest("6.1.0-1-amd64", {"guest-kmod/a.c": a})
    assert base != kmod.input_digest("6.1.0-2-amd64", {"guest-kmod/a.c": a})
    a.write_text("int y;\n")
    assert base != kmod.input_digest("6.1.0-1-amd64", {"guest-kmod/a.c": a})


def test_warnings_are_found_in_kbuild_output() -> None:
    out = (
        "  CC [M]  /x/irqlab-core.o\n"
        "/x/irqlab-core.c:10:5: warning: unused variable 'v' [-Wunused-variable]\n"
        "WARNING: modpost: missing MODULE_LICENSE() in /x/irqlab.o\n"
        "  LD [M]  /x/irqlab.ko\n"
    )
    assert kmod.warnings_in(out) == out.splitlines()[1:3]
    assert kmod.warnings_in("  CC [M]  a.o\n  LD [M]  a.ko\n") == []
