"""The accelerator probe against the real built QEMU."""

from __future__ import annotations

import pytest

from irqlab.build.qemu import QemuInstall
from irqlab.vm import accel

pytestmark = pytest.mark.device


def test_probe_rom_boots_to_long_mode_under_tcg(irqlab_qemu: QemuInstall) -> None:
    """The probe guest itself is sound, so a failed KVM probe is KVM's doing."""
    r = accel.run_probe_guest(irqlab_qemu.binary, "tcg", datadir=irqlab_qemu.datadir)
    assert r.ok, r.reason


def test_choice_is_kvm_only_where_kvm_runs_the_guest(
    irqlab_qemu: QemuInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(accel.ENV_VAR, raising=False)
    accel.clear_cache()
    # 2 s: a working KVM reaches long mode in milliseconds; a broken one hangs (nested PVM)
    choice = accel.choose(irqlab_qemu.binary, datadir=irqlab_qemu.datadir, timeout=2)
    print(f"accelerator here: {choice.accel} ({choice.reason})")
    assert choice.reason.startswith(f"{choice.accel}: ")
    if choice.accel == "kvm":
        assert choice.probed and "long-mode probe guest" in choice.reason
    elif choice.probed:  # /dev/kvm opens, but the guest did not get to long mode
        assert "KVM probe failed" in choice.reason
        direct = accel.run_probe_guest(
            irqlab_qemu.binary, "kvm", datadir=irqlab_qemu.datadir, timeout=2
        )
        assert not direct.ok, direct.reason
    else:
        assert "/dev/kvm" in choice.reason
