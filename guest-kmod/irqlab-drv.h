/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * irqlab: driver-internal definitions shared by irqlab-core.c (PCI, interrupt
 * handling) and irqlab-cdev.c (device nodes and open files).
 */
#ifndef IRQLAB_DRV_H
#define IRQLAB_DRV_H

#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/gpio/driver.h>
#include <linux/io.h>
#include <linux/kfifo.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/types.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include <linux/irqlab.h>	/* uapi: include/uapi/linux/irqlab.h */
#include "irqlab-regs.h"	/* register map: qemu-device/irqlab-regs.h */

#define IRQLAB_MAX_DEVICES	64
#define IRQLAB_MINORS_PER_DEV	2	/* irqlabN, irqlabN-count */
#define IRQLAB_GPIO_EVQ_LEN	512	/* GPIO events waiting for gpiolib */

/* Kernel API differences (the driver builds for 6.1 and newer). */
#ifndef PCI_IRQ_INTX
#define PCI_IRQ_INTX		PCI_IRQ_LEGACY	/* renamed in 6.8 */
#endif
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
#define timer_delete_sync	del_timer_sync	/* renamed in 6.2 */
#endif
#ifndef timer_container_of
#define timer_container_of	from_timer	/* renamed in 6.16 */
#endif

struct pci_dev;
struct uio_info;
struct irqlab_dev;

/* One GPIO event on its way from the hard IRQ handler to gpiolib. */
struct irqlab_gpio_ev {
	u8 line;
	u8 value;
};

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
 * @evq_lock: producer side, taken by the hard IRQ handlers and @defer_work:
 *	device event queue, @stage producer index, producer counters,
 *	@hw_stopped, @deferred.
 * @lock: consumer side: @stage consumer index, the lists of open files and
 *	everything in them, @dead, @deliveries.
 * @hw_lock: process-context register access (ACK, GET_CLOCK), @dead, ACK
 *	counters.
 * @dead is written with both @hw_lock and @lock held.  @evq_lock and @lock
 * are never nested; @hw_lock is taken outside either.
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
	/* Sources masked at the device until @defer_work drained the queue. */
	u32 deferred;
	struct work_struct defer_work;

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
	 * GPIO (irqlab-gpio.c).  @gpio_lock (raw: irq_chip callbacks run
	 * under the irq descriptor lock) guards the GPIO configuration
	 * registers and their shadows; it nests inside @evq_lock.
	 */
	struct gpio_chip gc;
	raw_spinlock_t gpio_lock;
	u32 gpio_rising;	/* shadows of the GPIO_* detect registers */
	u32 gpio_falling;
	u32 gpio_lvl_high;
	u32 gpio_lvl_low;
	u32 gpio_unmasked;	/* gpiolib lines unmasked (irq_unmask) */
	u32 gpio_level;		/* gpiolib lines with a level trigger type */
	u32 gpio_held;		/* level lines masked until gpiolib ran */
	u32 gpio_direct;	/* lines the driver handles itself */
	bool gpio_stopped;	/* device stopped: no GPIO register writes */
	DECLARE_KFIFO(gpio_evq, struct irqlab_gpio_ev, IRQLAB_GPIO_EVQ_LEN);
	struct work_struct gpio_work;
	u64 gpio_lost;		/* @gpio_evq full: events gpiolib never saw */
	/* get() inside the dispatch of one event returns that event's level */
	struct task_struct *replay_task;
	unsigned int replay_line;
	int replay_value;
	struct gpio_desc *key_desc;

	/* Debounced key (key_line parameter), state under @evq_lock. */
	int key_line;		/* -1: none */
	unsigned int key_debounce_ms;
	struct timer_list key_timer;
	int key_state;		/* last reported level */
	u64 key_raise_ns;	/* device time of the latest edge */

	/* UIO mode (uio parameter): the interrupt goes to userspace. */
	struct uio_info *uio;
};

static inline u32 irqlab_rd(struct irqlab_dev *idev, unsigned int reg)
{
	return ioread32(idev->regs + reg);
}

static inline void irqlab_wr(struct irqlab_dev *idev, unsigned int reg, u32 val)
{
	iowrite32(val, idev->regs + reg);
}

/* irqlab-core.c */
void irqlab_put(struct irqlab_dev *idev);
int irqlab_hw_ack(struct irqlab_dev *idev, u32 seq, u64 *latency_ns);
void irqlab_hw_stats(struct irqlab_dev *idev, struct irqlab_stats *st);
void irqlab_stage(struct irqlab_dev *idev, struct irqlab_event *ev);
int irqlab_alloc_vectors(struct irqlab_dev *idev, unsigned int allowed,
			 unsigned long *irqflags);

/* irqlab-gpio.c */
void irqlab_gpio_init(struct irqlab_dev *idev, u32 edges, int key_line,
		      unsigned int key_debounce_ms);
int irqlab_gpio_add(struct irqlab_dev *idev);
void irqlab_gpio_hw_start(struct irqlab_dev *idev);
void irqlab_gpio_hw_stop(struct irqlab_dev *idev);
bool irqlab_gpio_ack(struct irqlab_dev *idev, u32 status);
void irqlab_gpio_event(struct irqlab_dev *idev, const struct irqlab_event *ev);
void irqlab_gpio_stop(struct irqlab_dev *idev);

/* irqlab-uio.c */
int irqlab_uio_setup(struct irqlab_dev *idev);

/* irqlab-cdev.c */
int irqlab_cdev_init(void);
void irqlab_cdev_exit(void);
int irqlab_nodes_add(struct irqlab_dev *idev);
void irqlab_deliver(struct irqlab_dev *idev);

#endif /* IRQLAB_DRV_H */
