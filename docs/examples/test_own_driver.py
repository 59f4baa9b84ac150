"""An example test of your own PCI driver in an irqlab guest (README: "Your own
project's CI"): copy it to tests/ of your repository, beside the workflow
own-project-ci.yml, and set MODULE and DRIVER to your module's file and its driver's
name.

It uses irqlab's pytest plugin only (installed with irqlab, it registers itself: no
conftest.py needed): the ``irqlab`` marker configures the test's own guest, and the
``irqlab_fresh_guest`` fixture starts it (a cold boot for the first test of a
configuration, which saves a snapshot; its later tests restore it).
"""

import pytest

# The workflow builds your module at the repository's root (make -C "$(irqlab kdir)"
# M="$PWD" modules). The marker's paths are relative to this test file's directory,
# not to where pytest runs: from tests/ the root's module is "../mydrv.ko".
MODULE = "../mydrv.ko"
DRIVER = "mydrv"  # the .name of your struct pci_driver


# load_irqlab=False: irqlab's own driver is not loaded, so yours gets the device.
@pytest.mark.irqlab(modules=[MODULE], load_irqlab=False)
def test_my_driver_binds_the_irqlab_device(irqlab_fresh_guest):
    g = irqlab_fresh_guest
    addr = g.pci_address()  # irqlab's device, found by its vendor and device id
    link = g.run(f"readlink /sys/bus/pci/devices/{addr}/driver").out.strip()
    bound = link.rsplit("/", 1)[-1] or "no driver"
    assert bound == DRIVER, f"{addr} is bound to {bound}:\n" + g.sh("dmesg")[-2000:]
