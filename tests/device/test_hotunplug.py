"""Hot-unplug: ``device_del`` of the device behind a PCIe root port completes.

QEMU emits ``DEVICE_DELETED`` only once the last reference to the device is gone; a
memory subregion left in BAR0 by realize holds one.  Under qtest nobody answers the
hot-plug controller's unplug request, so, as QEMU's own device-plugin-test does, a
system reset completes the pending unplug.
"""

from __future__ import annotations

import pytest

from irqlab.contract.regs import QOM
from irqlab.testing.plugin import QtestMachineFactory

pytestmark = pytest.mark.device

ROOT_PORT = "pcie-root-port,id=rp0,bus=pcie.0,chassis=1"


@pytest.mark.parametrize("irq_mode", ["msix", "msi", "intx"])
def test_device_del_behind_root_port_completes(
    irqlab_qtest_factory: QtestMachineFactory, irq_mode: str
) -> None:
    m = irqlab_qtest_factory(
        "",
        extra_args=[
            "-device",
            ROOT_PORT,
            "-device",
            f"irqlab,id=irq0,bus=rp0,{QOM.PROP_IRQ_MODE}={irq_mode}",
        ],
    )
    assert m.qmp("qom-get", path="/machine/peripheral/irq0", property=QOM.PROP_GPIO_LINES) == 32
    m.qmp("device_del", id="irq0")
    m.qmp("system_reset")
    ev = m.wait_event("DEVICE_DELETED", timeout=10, match={"device": "irq0"})
    assert ev["data"]["path"] == "/machine/peripheral/irq0"
    # The device is gone from the QOM tree and QEMU runs on.
    names = {p["name"] for p in m.qmp("qom-list", path="/machine/peripheral")}
    assert "irq0" not in names
    assert m.qmp("query-status")["status"] == "running"
