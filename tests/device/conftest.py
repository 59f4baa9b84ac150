"""Device-level fixtures: the real built QEMU, ``-accel qtest``, q35, one irqlab device, no guest.

Every test here is marked ``device``.  The QEMU build comes from the
``irqlab_qemu`` fixture of the irqlab pytest plugin: a failed build fails the
tests (with the build log's path), it never skips them.
"""

from __future__ import annotations

import pytest
from devrig import Rig, RigFactory, device_arg

from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import QtestIrqlab
from irqlab.vm.qmp.injector import Injector


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/device/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.device)


@pytest.fixture
def rig_factory(irqlab_qtest_factory: QtestMachineFactory) -> RigFactory:
    def make(**props: object) -> Rig:
        m = irqlab_qtest_factory(device_arg(**props))
        dev = QtestIrqlab.attach(m.qtest)
        return Rig(m, m.qtest, dev, Injector(m, "irq0"))

    return make


@pytest.fixture
def rig(rig_factory: RigFactory) -> Rig:
    """Default device (msix mode, 32 lines), BAR0 mapped, MSI-X not enabled (INTx route)."""
    return rig_factory()
