"""A cold boot that takes long says so as it waits, and one with more vCPUs than the
host has cores for them under TCG says why it is slow: ``irqlab run --smp 64`` on two
cores was silent for 180 s, then "did not print 'IRQLAB-READY' within boot_timeout"."""

from __future__ import annotations

import pytest

from irqlab import notice
from irqlab.vm import guest as guest_module
from irqlab.vm.guest import Guest, GuestConfig, GuestTimeout
from irqlab.vm.loadscale import usable_cores


def test_a_slow_boot_says_it_is_still_booting_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = usable_cores()
    smp = 4 * cores
    monkeypatch.setattr(guest_module, "BOOT_PROGRESS_S", 0.3)
    g = Guest(GuestConfig(name="many-vcpus", smp=smp, snapshot=False, boot_timeout=2.0))
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        with pytest.raises(GuestTimeout) as info:
            g.start()
    finally:
        notice.set_sink(old)
        g.close()
    note = f"({smp} vCPUs under TCG on {cores} usable host core"
    progress = [line for line in said if "many-vcpus: still booting after" in line]
    assert progress, said
    assert "(boot_timeout=2 s)" in progress[0], progress
    if g.accel is not None and g.accel.accel == "tcg":
        assert note in str(info.value) and note in progress[0], (str(info.value), progress)
    else:  # KVM: a vCPU is no host thread of TCG's
        assert note not in str(info.value), str(info.value)
