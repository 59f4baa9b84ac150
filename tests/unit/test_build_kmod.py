"""The kernel-module recipe: what it hashes, what it copies, what fails it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_dpkg import FakeDpkg  # same directory (rootdir-relative import)

from irqlab.build import debs, kmod


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


# ---- what building a module runs (a restored cache brings no make or gcc) -------------


def test_host_packages_are_installed_as_root_and_named_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    host = FakeDpkg(monkeypatch, {"libelf1"}, uid=1000)
    with pytest.raises(debs.AptError) as e:
        kmod.ensure_module_build_tools()
    assert str(e.value) == (
        "building a kernel module needs gcc make, not installed: apt-get install gcc make (as root)"
    )
    assert host.apt == []
    host = FakeDpkg(monkeypatch, {"libelf1"}, uid=0)
    kmod.ensure_module_build_tools()
    kmod.ensure_module_build_tools()  # there now: apt is asked once
    assert host.apt == [["gcc", "make"]]
    assert (tmp_path / "logs" / "build" / "building-a-kernel-module.log").is_file()


def test_kdir_makes_sure_make_and_gcc_are_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make -C $(irqlab kdir) M=$PWD` in a fresh container with a restored cache: make
    and gcc came only with QEMU's build dependencies, and kdir printed the headers' path
    for a make that was not there."""
    from irqlab.build import arch
    from irqlab.cli.main import main

    def kernel(arch: arch.Arch) -> SimpleNamespace:
        return SimpleNamespace(headers_build_dir=Path("/h"), arch=arch)

    monkeypatch.setattr("irqlab.build.kernel.ensure_kernel", kernel)
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    monkeypatch.delenv("IRQLAB_IMAGE", raising=False)
    FakeDpkg(monkeypatch, set(), uid=1000)
    assert main(["kdir"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "irqlab: building a kernel module needs gcc make libelf1, not installed: "
        "apt-get install gcc make libelf1 (as root)\n"
    )
    host = FakeDpkg(monkeypatch, set(), uid=0)
    assert main(["kdir"]) == 0
    assert capsys.readouterr().out == "/h\n"
    assert host.apt == [list(kmod.MODULE_BUILD_PACKAGES)]


def test_the_responder_gets_its_compiler_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`irqlab build-image` with a restored cache: the responder's gcc (its version names
    the cached binary) was not there ("gcc is not installed")."""
    from irqlab.build import responder

    host = FakeDpkg(monkeypatch, set(), uid=0)
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))

    class Stop(Exception):
        pass

    def compiler() -> str:
        assert host.apt == [list(responder.BUILD_PACKAGES)]
        raise Stop

    monkeypatch.setattr(responder, "compiler", compiler)
    with pytest.raises(Stop):
        responder.ensure_responder()
