// SPDX-License-Identifier: GPL-2.0
/*
 * Another project's PCI driver, as the test of docs/examples/test_own_driver.py
 * (tests/e2e/test_example_driver.py): it binds irqlab's device (vendor and device
 * id of qemu-device/irqlab-regs.h), built at the project's root against the
 * guest kernel (make -C $(irqlab kdir) M=$PWD) as own-project-ci.yml builds it.
 */
#include <linux/module.h>
#include <linux/pci.h>

static int mydrv_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int ret = pcim_enable_device(pdev);

	if (ret)
		return ret;
	dev_info(&pdev->dev, "mydrv: probed %04x:%04x\n", pdev->vendor, pdev->device);
	return 0;
}

static void mydrv_remove(struct pci_dev *pdev)
{
	dev_info(&pdev->dev, "mydrv: removed\n");
}

static const struct pci_device_id mydrv_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11ec) },
	{ }
};
MODULE_DEVICE_TABLE(pci, mydrv_ids);

static struct pci_driver mydrv_driver = {
	.name = "mydrv",
	.id_table = mydrv_ids,
	.probe = mydrv_probe,
	.remove = mydrv_remove,
};
module_pci_driver(mydrv_driver);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("irqlab e2e test: another project's driver of irqlab's device");
