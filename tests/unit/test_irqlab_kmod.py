"""Bring your own module, without a VM: IRQLAB_KMOD is checked before anything boots,
and the guest's new configuration fields are validated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from irqlab.build.arch import AARCH64, X86_64, Arch
from irqlab.vm.guest import (
    Guest,
    GuestConfig,
    PrerequisiteMissing,
    check_module_arch,
    find_kmod,
    ko_module_name,
)


def _fake_ko(path: Path, name: str, machine: int = X86_64.elf_machine) -> Path:
    """An ELF header (64-bit little endian, e_machine *machine*) and a .modinfo."""
    head = b"\x7fELF\x02\x01" + b"\0" * 12 + machine.to_bytes(2, "little")
    path.write_bytes(head.ljust(64, b"\0") + b"license=GPL\0name=" + name.encode() + b"\0")
    return path


def test_module_name_from_modinfo(tmp_path: Path) -> None:
    assert ko_module_name(_fake_ko(tmp_path / "a.ko", "mydrv").read_bytes()) == "mydrv"
    assert ko_module_name(b"no modinfo here") is None


def test_irqlab_kmod_of_another_module_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_KMOD", str(_fake_ko(tmp_path / "mydrv.ko", "mydrv")))
    t0 = time.monotonic()
    with pytest.raises(PrerequisiteMissing, match=r"module 'mydrv', not a build of the irqlab"):
        find_kmod()
    assert time.monotonic() - t0 < 1.0
    monkeypatch.setenv("IRQLAB_KMOD", str(_fake_ko(tmp_path / "irqlab.ko", "irqlab")))
    assert find_kmod() == tmp_path / "irqlab.ko"


def test_irqlab_kmod_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRQLAB_KMOD", str(tmp_path / "nope.ko"))
    with pytest.raises(PrerequisiteMissing, match="does not exist"):
        find_kmod()


def test_module_of_another_architecture_is_refused_with_the_way_to_build_it(
    tmp_path: Path,
) -> None:
    arm = _fake_ko(tmp_path / "mydrv.ko", "mydrv", AARCH64.elf_machine)
    check_module_arch(arm, AARCH64, "extra module")
    with pytest.raises(PrerequisiteMissing) as e:
        check_module_arch(arm, X86_64, "extra module")
    assert "is built for aarch64, but the guest is x86_64" in str(e.value)
    assert "make $(irqlab kdir --arch x86_64 --make-args) M=$PWD modules" in str(e.value)
    odd = _fake_ko(tmp_path / "odd.ko", "odd", 0x2B)  # EM_SPARCV9
    with pytest.raises(PrerequisiteMissing, match="built for ELF machine 43"):
        check_module_arch(odd, AARCH64, "extra module")
    (tmp_path / "text.ko").write_text("not a module")
    with pytest.raises(PrerequisiteMissing, match="is not a kernel module: not an ELF file"):
        check_module_arch(tmp_path / "text.ko", X86_64, "extra module")


def test_irqlab_kmod_of_another_architecture_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ko = _fake_ko(tmp_path / "irqlab.ko", "irqlab", AARCH64.elf_machine)
    monkeypatch.setenv("IRQLAB_KMOD", str(ko))
    with pytest.raises(PrerequisiteMissing, match=r"\$IRQLAB_KMOD .* is built for aarch64"):
        find_kmod()
    assert find_kmod(AARCH64) == ko


@pytest.mark.parametrize(("arch", "other"), [(X86_64, AARCH64), (AARCH64, X86_64)])
def test_extra_module_of_another_architecture_fails_before_any_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: Arch, other: Arch
) -> None:
    monkeypatch.delenv("IRQLAB_KMOD", raising=False)
    ko = _fake_ko(tmp_path / "mydrv.ko", "mydrv", other.elf_machine)
    guest = Guest(GuestConfig(arch=arch.name, extra_modules=[ko]))
    t0 = time.monotonic()
    with pytest.raises(PrerequisiteMissing, match=f"built for {other.name}, but the guest is"):
        guest.find_prerequisites()
    assert time.monotonic() - t0 < 1.0


def test_the_module_recipe_builds_for_the_asked_architecture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without $IRQLAB_KMOD, find_kmod(arch) builds against that architecture's kernel
    (the recipes themselves are faked: the boundary here is which kernel they get)."""
    from irqlab.build import kernel, kmod

    monkeypatch.delenv("IRQLAB_KMOD", raising=False)
    asked: list[object] = []
    monkeypatch.setattr(kernel, "ensure_kernel", lambda *a, arch=None, **k: f"kernel-{arch.name}")
    monkeypatch.setattr(
        kmod, "ensure_kmod", lambda *a, kernel=None, **k: asked.append(kernel) or "/x.ko"
    )
    assert find_kmod(AARCH64) == Path("/x.ko")
    assert find_kmod() == Path("/x.ko")
    assert asked == ["kernel-aarch64", None]  # x86_64: the recipe's default kernel


def test_a_missing_module_is_not_found_not_a_non_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PrerequisiteMissing) as e:
        check_module_arch(Path("mydrv.ko"), X86_64, "extra module")
    assert str(e.value) == f"extra module not found: {tmp_path / 'mydrv.ko'}"
