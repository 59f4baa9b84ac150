"""A failed compile says its first compiler errors, naming the checkout's files.

QEMU's said only ``ninja exited 1 (log: .../qemu.log)``, the errors in the log naming
the cache's grafted copy (``../src-7.2+dfsg-7+deb12u18/hw/misc/irqlab.c:713:5``); the
module's said make's last lines, its errors naming a scratch copy gone with the failed
build.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.build import kmod, qemu
from irqlab.build.steps import BuildError, StepLog, compiler_errors
from irqlab.paths import repo_root

SRC = "../src-7.2+dfsg-7+deb12u18"
NINJA_LOG = f"""\
[1/3] Compiling C object libcommon.fa.p/hw_misc_edu.c.o
[2/3] Compiling C object libcommon.fa.p/hw_misc_irqlab.c.o
FAILED: libcommon.fa.p/hw_misc_irqlab.c.o
cc -m64 -Ilibcommon.fa.p -MD -MQ libcommon.fa.p/hw_misc_irqlab.c.o -c {SRC}/hw/misc/irqlab.c
{SRC}/hw/misc/irqlab.c: In function 'irqlab_mmio_read':
{SRC}/hw/misc/irqlab.c:713:5: error: duplicate case value
  713 |     case IRQLAB_REG_ID:
      |     ^~~~
{SRC}/hw/misc/irqlab.c:700:5: note: previously used here
  700 |     case IRQLAB_REG_ID:
      |     ^~~~
In file included from {SRC}/hw/misc/irqlab.c:20:
{SRC}/include/hw/misc/irqlab-regs.h:58:30: error: 'BIT' undeclared here (not in a function)
   58 | #define IRQLAB_FEAT_MASK  BIT(5)
      |                           ^~~
ninja: build stopped: subcommand failed.
"""


def _fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> None:
    """*name* on $PATH: a Python *script*."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text(f"#!{sys.executable}\n{script}")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_a_failed_qemu_compile_says_the_devices_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "ninja.log"
    log.write_text(NINJA_LOG)
    script = f"import sys\nsys.stdout.write(open({str(log)!r}).read())\nsys.exit(1)\n"
    _fake_tool(tmp_path, monkeypatch, "ninja", script)
    with StepLog(tmp_path / "qemu.log", lambda _m: None) as steps, pytest.raises(BuildError) as e:
        qemu._ninja(steps, tmp_path / "build", lambda _m: None)
    assert str(e.value) == (
        "build step 'compile' failed: ninja exited 1\n"
        "qemu-device/irqlab.c:713:5: error: duplicate case value\n"
        "  713 |     case IRQLAB_REG_ID:\n"
        "      |     ^~~~\n"
        "qemu-device/irqlab-regs.h:58:30: error: 'BIT' undeclared here (not in a function)\n"
        "   58 | #define IRQLAB_FEAT_MASK  BIT(5)\n"
        f"      |                           ^~~ (log: {tmp_path / 'qemu.log'})"
    )


def test_the_grafted_paths_are_where_graft_puts_the_device(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("graft", repo_root() / "qemu-device/graft.py")
    assert spec and spec.loader
    graft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graft)
    tree = tmp_path / "qemu"
    (tree / "hw" / "misc").mkdir(parents=True)
    (tree / "hw" / "misc" / "Kconfig").write_text("config EDU\n    bool\n")
    (tree / "hw" / "misc" / "meson.build").write_text("softmmu_ss.add(files('edu.c'))\n")
    graft.graft(tree)
    for tree_path, checkout in qemu.GRAFTED.items():
        assert (tree / tree_path).read_bytes() == (repo_root() / checkout).read_bytes()


def test_only_the_first_errors_are_said() -> None:
    many = "".join(f"a.c:{n}:1: error: e{n}\n  {n} | x\n    | ^\n" for n in range(1, 9))
    assert compiler_errors(many) == "\n".join(
        line for n in (1, 2, 3) for line in (f"a.c:{n}:1: error: e{n}", f"  {n} | x", "    | ^")
    )
    assert compiler_errors("make: *** [Makefile:2] Error 2\nld: cannot find -lfoo\n") == ""


def test_a_failed_module_build_says_its_errors_as_the_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make's output ends in its own lines; the first error named a scratch copy."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    c = tmp_path / "src" / "irqlab-core.c"
    c.parent.mkdir()
    c.write_text("int x\n")
    monkeypatch.setattr(kmod, "source_files", lambda: {"guest-kmod/irqlab-core.c": c})
    monkeypatch.setattr(kmod, "ensure_module_build_tools", lambda _log=None: None)
    script = """\
import sys
m = next(a for a in sys.argv if a.startswith("M=")).removeprefix("M=")
print(f"  CC [M]  {m}/irqlab-core.o")
for n in range(10, 60):
    print(f"{m}/irqlab-core.c:{n}:5: error: expected ';' before 'int'")
    print(f"   {n} | int x")
print("make[2]: *** [scripts/Makefile.build:250: irqlab-core.o] Error 1")
for n in range(12):
    print(f"make[1]: *** noise {n}")
sys.exit(2)
"""
    _fake_tool(tmp_path, monkeypatch, "make", script)
    k = SimpleNamespace(
        version="6.1.0-1-amd64", package_version="6.1.1-1", arch=SimpleNamespace(foreign=False)
    )
    k.headers_build_dir = tmp_path / "headers"
    k.root = tmp_path / "kernel-root"
    with pytest.raises(BuildError) as e:
        kmod.ensure_kmod(lambda _m: None, kernel=k)  # type: ignore[arg-type]
    assert str(e.value).startswith(
        "build step 'make modules' failed: make exited 2\n"
        "guest-kmod/irqlab-core.c:10:5: error: expected ';' before 'int'\n"
        "   10 | int x\n"
        "guest-kmod/irqlab-core.c:11:5: error: expected ';' before 'int'\n"
    )
