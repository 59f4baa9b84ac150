"""Markers add up: a module's ``pytestmark`` and the test's own marker configure the
test's guest together (only the closest marker was read: this test got 1 vCPU)."""

from __future__ import annotations

import pytest

from irqlab.vm.guest import Guest

pytestmark = pytest.mark.irqlab(smp=2, module={"wakeup": "thread", "key_debounce_ms": 20})


@pytest.mark.irqlab(module={"wakeup": "workqueue"})
def test_the_modules_and_the_tests_markers_both_reach_the_guest(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    params = f"/sys/module/{g.module_name()}/parameters"
    assert g.sh("nproc").strip() == "2"  # the module's smp=
    # module= merged key by key: the test's wakeup, the module's key_debounce_ms
    assert g.sh(f"cat {params}/wakeup {params}/key_debounce_ms").split() == ["workqueue", "20"]
