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


def _kernel(abi: str = "6.1.0-1-amd64", version: str = "6.1.1-2") -> SimpleNamespace:
    return SimpleNamespace(version=abi, package_version=version)


def test_digest_follows_sources_and_kernel(tmp_path: Path) -> None:
    a = tmp_path / "a.c"
    a.write_text("int x;\n")
    k = _kernel()
    base = kmod.input_digest(k, {"guest-kmod/a.c": a})  # type: ignore[arg-type]
    assert base == kmod.input_digest(k, {"guest-kmod/a.c": a})  # type: ignore[arg-type]
    other_abi = _kernel("6.1.0-2-amd64")
    assert base != kmod.input_digest(other_abi, {"guest-kmod/a.c": a})  # type: ignore[arg-type]
    a.write_text("int y;\n")
    assert base != kmod.input_digest(k, {"guest-kmod/a.c": a})  # type: ignore[arg-type]


def test_digest_follows_the_headers_upload(tmp_path: Path) -> None:
    """A Debian upload that keeps the ABI name (-2 -> -3) brings other headers: a new
    module (the key had the ABI name only)."""
    a = tmp_path / "a.c"
    a.write_text("int x;\n")
    files = {"guest-kmod/a.c": a}
    base = kmod.input_digest(_kernel(), files)  # type: ignore[arg-type]
    assert base != kmod.input_digest(_kernel(version="6.1.1-3"), files)  # type: ignore[arg-type]


def test_the_key_does_not_need_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached module is found where no compiler is installed (a CI shard restoring
    the cache, `irqlab cache --keys`): its key was "not installed" there, one no build
    makes."""
    k = _kernel()
    with_cc = kmod.current_digest(k)  # type: ignore[arg-type]
    monkeypatch.setattr(kmod.shutil, "which", lambda _name: None)
    assert kmod.current_digest(k) == with_cc  # type: ignore[arg-type]


def test_only_build_inputs_are_hashed_and_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A README (or any file the build does not read) is no input: editing it kept
    rebuilding the module, and so the image and every snapshot."""
    root = tmp_path / "checkout"
    for rel in (
        "qemu-device/irqlab-regs.h",
        "guest-kmod/Kbuild",
        "guest-kmod/Makefile",
        "guest-kmod/a.c",
        "guest-kmod/a.h",
        "guest-kmod/include/uapi/linux/irqlab.h",
        "guest-kmod/README.md",
        "guest-kmod/notes.txt",
        "guest-kmod/a.o",
        "guest-kmod/.a.o.cmd",
        "guest-kmod/responder/respond.c",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    monkeypatch.setattr(kmod, "repo_root", lambda: root)
    assert sorted(kmod.source_files()) == [
        "guest-kmod/Kbuild",
        "guest-kmod/Makefile",
        "guest-kmod/a.c",
        "guest-kmod/a.h",
        "guest-kmod/include/uapi/linux/irqlab.h",
        "qemu-device/irqlab-regs.h",
    ]
    k = _kernel()
    before = kmod.input_digest(k, kmod.source_files())  # type: ignore[arg-type]
    (root / "guest-kmod" / "README.md").write_text("edited\n")
    assert kmod.input_digest(k, kmod.source_files()) == before  # type: ignore[arg-type]


def test_the_scratch_path_is_mapped_out_of_the_module() -> None:
    """The .ko embedded the digest-named scratch path (debug info, __FILE__)."""
    assert (
        kmod.kcflags(Path("/c/kmod-ab.tmp/src")) == "KCFLAGS=-ffile-prefix-map=/c/kmod-ab.tmp/src=."
    )
    assert kmod.kcflags(Path("/c/s"), Path("/c/kernel-1/root")) == (
        "KCFLAGS=-ffile-prefix-map=/c/s=. -ffile-prefix-map=/c/kernel-1/root/=/"
    )


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


def test_two_builds_in_other_scratch_dirs_make_the_same_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built into two private caches (scratch dirs of other names), against the shared
    kernel output's headers (read only): the same .ko bytes, no scratch path in them.
    Without the prefix map the two differed and each named its kmod-<digest>.tmp/src."""

    from irqlab.build import kernel
    from irqlab.build.arch import X86_64

    # the shared kernel output (built once: Debian's packages, extracted); make and gcc
    # are installed by the module build where missing.  No apt lists: its error fails.
    k = kernel.ensure_kernel(arch=X86_64)
    built = []
    for name in ("one", "second-cache"):
        monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / name))
        monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
        built.append(kmod.ensure_kmod(lambda _m: None, kernel=k).read_bytes())
    assert built[0] == built[1]
    assert b".tmp/src" not in built[0]
    assert str(tmp_path).encode() not in built[0]
    assert str(k.root).encode() not in built[0]  # the headers as /usr/src/linux-headers-*


def test_test_modules_key_the_headers_upload_and_the_compiler(tmp_path: Path) -> None:
    """tests/e2e/kmods/: keyed by the ABI name alone (no package version, no gcc), like
    the driver was."""
    import importlib.util

    from irqlab.build.cache import Sources
    from irqlab.paths import repo_root

    init = repo_root() / "tests" / "e2e" / "kmods" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_irqlab_test_kmods", init)
    assert spec is not None and spec.loader is not None
    kmods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kmods)
    (tmp_path / "m.c").write_text("int x;\n")
    src = Sources.read({"m.c": tmp_path / "m.c"})
    k = kmod.kernel_inputs(_kernel())  # type: ignore[arg-type]
    base = kmods.kmod_digest(k, "gcc 12.2.0-14", src)
    assert base == kmods.kmod_digest(k, "gcc 12.2.0-14", src)
    assert base != kmods.kmod_digest(
        kmod.kernel_inputs(_kernel(version="6.1.1-3")), "gcc 12.2.0-14", src
    )  # type: ignore[arg-type]
    assert base != kmods.kmod_digest(k, "gcc 12.2.0-15", src)
