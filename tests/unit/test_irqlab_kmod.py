"""Bring your own module, without a VM: IRQLAB_KMOD is checked before anything boots,
and the guest's new configuration fields are validated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from irqlab.vm.guest import PrerequisiteMissing, find_kmod, ko_module_name


def _fake_ko(path: Path, name: str) -> Path:
    path.write_bytes(b"\x7fELF" + b"\0" * 60 + b"license=GPL\0name=" + name.encode() + b"\0")
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
