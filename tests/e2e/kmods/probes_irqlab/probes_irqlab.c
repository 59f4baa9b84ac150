// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a PCI driver of the irqlab device, as a developer's own driver
 * of it starts out: its probe says so on the kernel log, and nothing more.
 * The ids come from the register header (irqlab-regs.h, copied in by the
 * test modules' build).
 */

#include <linux/module.h>
#include <linux/pci.h>

#include "irqlab-regs.h"

static const struct pci_device_id probes_irqlab_ids[] = {
	{ PCI_DEVICE(IRQLAB_PCI_VENDOR_ID, IRQLAB_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, probes_irqlab_ids);

static int probes_irqlab_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	dev_info(&pdev->dev, "probes_irqlab: probed\n");
	return 0;
}

static struct pci_driver probes_irqlab_driver = {
	.name = "probes_irqlab",
	.id_table = probes_irqlab_ids,
	.probe = probes_irqlab_probe,
};
module_pci_driver(probes_irqlab_driver);

MODULE_DESCRIPTION("irqlab test module: a PCI driver of the irqlab device");
MODULE_LICENSE("GPL");
