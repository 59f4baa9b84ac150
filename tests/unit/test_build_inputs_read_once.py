"""A cached output is built from the very bytes its key hashed.

Each recipe hashed its source files, then (after waiting for the build lock) built
from the checkout's files as they were then: an edit made meanwhile was built and
stored under the key of the text it replaced, and served until a forced rebuild.
Each test edits a source where the build waits for its lock (between the hash and
the build) and checks that what was stored is the text the key names.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.build import cache, debs, image, kmod, qemu, responder
from irqlab.build.initramfs import Stage
from irqlab.build.steps import StepLog
from irqlab.paths import repo_root

FIRMWARE = {"ipxe-qemu": "1.0-1", "qemu-system-data": "1:7.2+dfsg-7", "seabios": "1.16.2-1"}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))


def _edited_while_waiting(edit: Callable[[], None]) -> Callable[..., Path]:
    """:func:`cache.cached_build` that sees *edit* made while it waited for its lock."""
    real = cache.cached_build

    def cached_build(*a: Any, **kw: Any) -> Path:
        edit()
        return real(*a, **kw)

    return cached_build


def _append(path: Path, text: str) -> Callable[[], None]:
    return lambda: path.write_text(path.read_text() + text)


def test_qemu_grafts_the_device_files_its_key_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`irqlab build-qemu` waiting for the lock while irqlab.c was edited (and reverted):
    the edited device was built and stored under the original files' key."""
    device = tmp_path / "qemu-device"
    shutil.copytree(repo_root() / "qemu-device", device)
    original = (device / "irqlab.c").read_text()
    monkeypatch.delenv("IRQLAB_QEMU_SOURCE", raising=False)
    monkeypatch.setattr(qemu, "device_dir", lambda: device)
    monkeypatch.setattr(qemu, "_apt_versions", lambda names: {n: FIRMWARE[n] for n in names})

    @contextmanager
    def lock() -> Iterator[None]:
        (device / "irqlab.c").write_text(original + "#error edited while waiting\n")
        yield

    monkeypatch.setattr(qemu, "_lock", lock)
    src = qemu.source_dir(qemu.QemuSource("debian", FIRMWARE["qemu-system-data"]))
    (src / "hw" / "misc").mkdir(parents=True)
    (src / "configure").write_text("")
    (src / "VERSION").write_text("7.2.22\n")
    (src / "hw" / "misc" / "Kconfig").write_text("config EDU\n    bool\n")
    (src / "hw" / "misc" / "meson.build").write_text("softmmu_ss.add(files('edu.c'))\n")

    def ninja(_steps: StepLog, build: Path, _log: object, arch: qemu.Arch) -> None:
        build.mkdir(parents=True, exist_ok=True)  # the "binary": the grafted device
        shutil.copyfile(src / "hw" / "misc" / "irqlab.c", build / arch.qemu_binary)

    monkeypatch.setattr(debs, "ensure_apt_packages", lambda *_a, **_k: None)
    monkeypatch.setattr(qemu, "_configure", lambda *_a: None)
    monkeypatch.setattr(qemu, "_ninja", ninja)
    monkeypatch.setattr(qemu, "_firmware", lambda *_a: None)
    monkeypatch.setattr(qemu, "runtime_packages", lambda _b: [])

    key = qemu.input_digest(
        qemu.QemuSource("debian", FIRMWARE["qemu-system-data"]), device, FIRMWARE
    )
    install = qemu.ensure_qemu(log=lambda _m: None)
    assert install.binary == cache.output_dir("qemu", key) / "bin" / qemu.TARGET
    assert install.binary.read_text() == original


def test_kmod_builds_the_sources_its_key_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = tmp_path / "src" / "a.c"
    c.parent.mkdir()
    c.write_text("int x;\n")
    monkeypatch.setattr(kmod, "source_files", lambda: {"guest-kmod/a.c": c})
    monkeypatch.setattr(kmod, "ensure_module_build_tools", lambda _log=None: None)
    monkeypatch.setattr(kmod, "cached_build", _edited_while_waiting(_append(c, "!")))

    def make(_self: StepLog, _step: str, argv: list[str], **_kw: object) -> str:
        moddir = Path(next(a for a in argv if a.startswith("M=")).removeprefix("M="))
        shutil.copyfile(moddir / "a.c", moddir / kmod.MODULE)  # the "module": its source
        return ""

    monkeypatch.setattr(StepLog, "run", make)
    k = SimpleNamespace(
        version="6.1.0-1-amd64", package_version="6.1.1-1", arch=SimpleNamespace(foreign=False)
    )
    k.headers_build_dir = tmp_path / "headers"
    k.root = tmp_path / "kernel-root"
    key = kmod.input_digest(k, {"guest-kmod/a.c": c})  # type: ignore[arg-type]
    ko = kmod.ensure_kmod(lambda _m: None, kernel=k)  # type: ignore[arg-type]
    assert ko == cache.output_dir("kmod", key) / kmod.MODULE
    assert ko.read_text() == "int x;\n"


def test_the_responder_compiles_the_sources_its_key_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "checkout"
    for rel in responder.source_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"/* {rel} */\n")
    monkeypatch.setattr(responder, "repo_root", lambda: root)
    monkeypatch.setattr(debs, "ensure_host_packages", lambda *_a, **_k: None)
    monkeypatch.setattr(responder, "compiler", lambda: "cc")
    monkeypatch.setattr(responder, "compiler_version", lambda _cc: "cc 1.0")
    edit = _append(root / responder.SOURCE, "int edited;\n")
    monkeypatch.setattr(responder, "cached_build", _edited_while_waiting(edit))
    copy = "import shutil, sys; shutil.copyfile(sys.argv[2], sys.argv[1])"

    def compile_argv(_cc: str, src: Path, out: Path) -> list[str]:  # the source as "binary"
        return [sys.executable, "-c", copy, str(out), str(src / responder.SOURCE)]

    monkeypatch.setattr(responder, "compile_argv", compile_argv)
    key = responder.input_digest("cc")
    binary = responder.ensure_responder(lambda _m: None)
    assert binary == cache.output_dir("responder", key) / responder.BINARY
    assert binary.read_text() == f"/* {responder.SOURCE} */\n"


def test_the_image_stages_the_agent_its_key_hashed(tmp_path: Path) -> None:
    agent = tmp_path / "irqlab_agent"
    (agent / "sub").mkdir(parents=True)
    (agent / "__init__.py").write_text("x = 1\n")
    (agent / "sub" / "m.py").write_text("y = 1\n")
    (agent / "sub" / "m.py").chmod(0o755)
    inp = SimpleNamespace(agent_dir=agent, kmod=None)
    read = image._Inputs.read(inp)  # type: ignore[arg-type]
    (agent / "__init__.py").write_text("x = 2\n")  # edited after the digest's reading
    stage = Stage(tmp_path / "rootfs")
    dst = image._stage_agent(stage, inp, read)  # type: ignore[arg-type]
    assert stage.path(f"{dst}/__init__.py").read_text() == "x = 1\n"
    assert stage.path(f"{dst}/sub/m.py").stat().st_mode & 0o777 == 0o755


def test_the_image_stages_the_module_its_key_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key hashed irqlab.ko, the build copied the file again: a module rebuilt while
    the image build waited for its lock was stored under the old module's key."""
    agent = tmp_path / "irqlab_agent"
    agent.mkdir()
    (agent / "__init__.py").write_text("")
    ko = tmp_path / "irqlab.ko"
    ko.write_bytes(b"\0depends=uio\0old module")
    modules_dir = tmp_path / "lib" / "modules" / "6.1.0-1-amd64"
    modules_dir.mkdir(parents=True)
    (modules_dir / "modules.dep").write_text("kernel/drivers/uio/uio.ko:\n")
    (modules_dir / "kernel" / "drivers" / "uio").mkdir(parents=True)
    (modules_dir / "kernel" / "drivers" / "uio" / "uio.ko").write_bytes(b"uio")
    k = SimpleNamespace(version="6.1.0-1-amd64", modules_dir=modules_dir, kmod=tmp_path / "kmod")
    inp = SimpleNamespace(agent_dir=agent, kmod=ko, kernel=k, boot_modules=(), shipped_modules=())
    monkeypatch.setattr(image, "run_depmod", lambda *_a: None)
    read = image._Inputs.read(inp)  # type: ignore[arg-type]
    ko.write_bytes(b"\0depends=\0new module")  # rebuilt after the digest's reading
    stage = Stage(tmp_path / "rootfs")
    _boot, names, name = image._modules(stage, inp, read, StepLog(tmp_path / "log"))  # type: ignore[arg-type]
    staged = stage.path("usr/lib/modules/6.1.0-1-amd64/extra/irqlab.ko").read_bytes()
    assert staged == b"\0depends=uio\0old module"
    assert (name, names) == ("irqlab", ["irqlab", "uio"])  # its depends=, as read


def test_sources_hash_as_the_files_do(tmp_path: Path) -> None:
    """Read once or hashed from disk, the same key (the cache's outputs keep theirs)."""
    f = tmp_path / "a.c"
    f.write_bytes(b"int a;\n")
    by_file = cache.InputHash("r")
    by_file.add_file(f, label="x/a.c")
    read = cache.InputHash("r")
    cache.Sources.read({"a.c": f}).add_to(read, "x/")
    assert read.hexdigest() == by_file.hexdigest()
