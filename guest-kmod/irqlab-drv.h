/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * irqlab: driver-internal definitions shared by irqlab-core.c (PCI, interrupt
 * handling) and irqlab-cdev.c (device nodes and open files).
 */
#ifndef IRQLAB_DRV_H
#define IRQLAB_DRV_H

#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/kfifo.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/workqueue.h>

#include <linux/irqlab.h>	/* uapi: include/uapi/linux/irqlab.h */
#include "irqlab-regs.h"	/* register map: qemu-device/irqlab-regs.h */

#define IRQLAB_MAX_DEVICES	64
#define IRQLAB_MINORS_PER_DEV	2	/* irqlabN, irqlabN-count */

struct pci_dev;
struct irqlab_dev;

/* One requested interrupt vector. */
struct irqlab_vec {
	struct irqlab_dev *idev;
	u32 sources;		/* IRQ_PENDING bits this vector handles */
};

/*
 * struct irqlab_dev - one bound device
 *
 * Lifetime: @ref starts at one for the PCI binding (dropped by a devres
 * action after the interrupts are freed) and each of the two node devices
 * holds one more, dropped by its release callback.  An open file pins its
 * node device through the cdev (cdev_device_add() makes the device the
 * cdev's parent), so this structure outlives every open file, while the
 * PCI resources (BAR mapping, vectors) go away on unbind.  @dead tells file
 * operations that the hardware is gone.
 *
 * Locking:
 * @evq_lock: producer side, taken by the hard IRQ handlers: device event
 *	queue, @stage producer index, producer counters, @hw_stopped.
 * @lock: consumer side: @stage consumer index, the lists of open files and
 *	everything in them, @dead, @deliveries.
 * @hw_lock: process-context register access (ACK), @dead, ACK counters.
 * @dead is written with both @hw_lock and @lock held.  @evq_lock and @lock
 * are never nested.
 */
struct irqlab_dev {
	struct kref ref;
	struct pci_dev *pdev;	/* valid while bound only */
	void __iomem *regs;	/* valid while !dead only */
	int index;

	/* Fixed at probe. */
	u32 id;
	u32 features;
	u32 gpio_lines;
	u32 evq_depth;
	u32 fifo_depth;
	u32 irq_mode;		/* IRQLAB_IRQ_MODE_* in use */
	u32 irq_sources;	/* bits the driver sets in IRQ_ENABLE */
	u32 gpio_edges;		/* lines with both edges enabled at probe */
	unsigned int nvecs;
	unsigned int wakeup;	/* IRQLAB_WAKEUP_* */
	struct irqlab_vec vec[IRQLAB_NUM_SOURCES];

	/* Producer side (hard IRQ). */
	spinlock_t evq_lock;
	bool hw_stopped;
	DECLARE_KFIFO_PTR(stage, struct irqlab_event);
	struct irqlab_event *stage_buf;
	u32 stage_lost_pending;
	u64 irqs;
	u64 irqs_none;
	u64 irqs_spurious;
	u64 rearms;
	u64 events;
	u64 dev_dropped;
	u64 stage_lost;

	struct work_struct work;	/* wakeup=workqueue */

	/* Consumer side (wakeup stage, open files). */
	spinlock_t lock;
	bool dead;
	struct list_head files;		/* struct irqlab_file */
	struct list_head counters;	/* struct irqlab_counter */
	u64 deliveries;

	struct mutex hw_lock;		/* see Locking above */
	u64 acks;
	u64 acks_invalid;

	struct device ev_dev;
	struct cdev ev_cdev;
	struct device cnt_dev;
	struct cdev cnt_cdev;

	/*
	 * Later: a gpio_chip with a gpiolib irqchip (GPIO issue) hangs here and
	 * is fed from the GPIO_STATUS bits in the hard IRQ handler; a UIO mode
	 * replaces irqlab_setup_irqs() and irqlab_nodes_add() in probe.
	 */
};

/* irqlab-core.c */
void irqlab_put(struct irqlab_dev *idev);
int irqlab_hw_ack(struct irqlab_dev *idev, u32 seq, u64 *latency_ns);
void irqlab_hw_stats(struct irqlab_dev *idev, struct irqlab_stats *st);

/* irqlab-cdev.c */
int irqlab_cdev_init(void);
void irqlab_cdev_exit(void);
int irqlab_nodes_add(struct irqlab_dev *idev);
void irqlab_deliver(struct irqlab_dev *idev);

#endif /* IRQLAB_DRV_H */
