// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * irqlab: UIO mode (module parameter uio=1), the user-space-driver pattern of
 * seed 001.  The kernel's part is only "disable at the device, acknowledge,
 * wake userspace": the handler clears IRQ_ENABLE and the latched status and
 * calls uio_event_notify().  The process maps BAR0 through /dev/uioN (map 0),
 * handles the device's event queue itself and re-enables the interrupt by
 * writing IRQ_ENABLE through the mapping.  Writing to /dev/uioN is not
 * supported (no irqcontrol): re-enabling is the device's business.
 *
 * Neither /dev/irqlabN nor the gpio chip exist in this mode.
 *
 * MSI-X is never used here: its table lives in BAR0 (IRQLAB_MSIX_TABLE_OFFSET,
 * in the same page as the registers), and a process that could rewrite an
 * enabled vector's address and data could make the device write anywhere in
 * guest memory.  irq_mode=auto takes MSI or INTx (a device in msix mode
 * signals through INTA while MSI-X is disabled); irq_mode=msix is refused.
 */

#include <linux/bits.h>
#include <linux/interrupt.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/uio_driver.h>

#include "irqlab-drv.h"

static irqreturn_t irqlab_uio_irq(int irq, void *data)
{
	struct irqlab_dev *idev = data;
	u32 pending, gpio;

	spin_lock(&idev->evq_lock);
	pending = irqlab_rd(idev, IRQLAB_REG_IRQ_PENDING);
	if (!pending || pending == U32_MAX || idev->hw_stopped) {
		if (idev->irq_mode == IRQLAB_IRQ_MODE_INTX)
			idev->irqs_none++;
		else
			idev->irqs_spurious++;
		spin_unlock(&idev->evq_lock);
		return idev->irq_mode == IRQLAB_IRQ_MODE_INTX ? IRQ_NONE : IRQ_HANDLED;
	}
	/* Disable at the device, then acknowledge what is latched. */
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, 0);
	if (pending & BIT(IRQLAB_SRC_GPIO)) {
		gpio = irqlab_rd(idev, IRQLAB_REG_GPIO_STATUS);
		irqlab_wr(idev, IRQLAB_REG_GPIO_STATUS, gpio);
	}
	irqlab_wr(idev, IRQLAB_REG_IRQ_STATUS, pending & ~BIT(IRQLAB_SRC_GPIO));
	idev->irqs++;
	spin_unlock(&idev->evq_lock);

	uio_event_notify(idev->uio);
	return IRQ_HANDLED;
}

/* Replaces the interrupt handlers and the device nodes in probe. */
int irqlab_uio_setup(struct irqlab_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	struct device *dev = &pdev->dev;
	struct uio_info *info;
	unsigned long flags;
	unsigned int i;
	int ret;

	ret = irqlab_alloc_vectors(idev, PCI_IRQ_MSI | PCI_IRQ_INTX, &flags);
	if (ret)
		return ret;

	info = devm_kzalloc(dev, sizeof(*info), GFP_KERNEL);
	if (!info)
		return -ENOMEM;
	info->name = devm_kasprintf(dev, GFP_KERNEL, "irqlab%d", idev->index);
	if (!info->name)
		return -ENOMEM;
	info->version = "1";
	info->mem[0].name = "bar0";
	info->mem[0].addr = pci_resource_start(pdev, 0);
	info->mem[0].size = IRQLAB_BAR0_SIZE;
	info->mem[0].memtype = UIO_MEM_PHYS;
	/* Our handlers below call uio_event_notify(), one per vector. */
	info->irq = UIO_IRQ_CUSTOM;
	info->priv = idev;
	idev->uio = info;

	/* Registered before the IRQs, so it goes after they are freed. */
	ret = devm_uio_register_device(dev, info);
	if (ret)
		return dev_err_probe(dev, ret, "cannot register the uio device\n");

	for (i = 0; i < idev->nvecs; i++) {
		ret = devm_request_irq(dev, pci_irq_vector(pdev, i), irqlab_uio_irq,
				       flags, info->name, idev);
		if (ret)
			return dev_err_probe(dev, ret, "cannot request vector %u\n", i);
	}
	return 0;
}
