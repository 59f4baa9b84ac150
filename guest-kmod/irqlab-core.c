// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * irqlab: driver for the irqlab PCI interrupt test device (QEMU "irqlab").
 *
 * The hard IRQ handler acknowledges the device's interrupt status, fetches
 * every queued device event into a staging buffer and then, depending on the
 * "wakeup" parameter, hands the staged events to the open files and wakes
 * their readers right there, in the IRQ thread or in a work item
 * (irqlab_deliver() in irqlab-cdev.c).
 */

#include <linux/bitfield.h>
#include <linux/bits.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/timekeeping.h>

#include "irqlab-drv.h"

/* Fetch at most this many device-queue passes per handler run, then re-arm. */
#define IRQLAB_MAX_PASSES	2
/*
 * Events one hard IRQ run fetches at most (each costs ~6 register accesses,
 * trapped and slow in a VM).  Beyond it the sources are masked at the device
 * and a work item drains the queue in batches of this size, so a storm
 * cannot keep the CPU in hard IRQ context.
 */
#define IRQLAB_IRQ_BUDGET	256
/* Staging buffer between the hard IRQ handler and the wakeup stage. */
#define IRQLAB_STAGE_RECORDS	roundup_pow_of_two(IRQLAB_MAX_EVQ_DEPTH)
/* irq_mode parameter value next to the IRQLAB_IRQ_MODE_* ones. */
#define IRQLAB_IRQ_MODE_AUTO	(IRQLAB_IRQ_MODE_MSIX + 1)

static_assert(sizeof(struct irqlab_event) == IRQLAB_EVENT_SIZE);
static_assert(IRQLAB_NUM_SOURCES <= 32);

/* A module parameter that takes one of a few names. */
struct irqlab_choice {
	unsigned int val;
	const char * const *names;
	unsigned int n;
};

static int irqlab_choice_set(const char *val, const struct kernel_param *kp)
{
	struct irqlab_choice *c = kp->arg;
	int i = __sysfs_match_string(c->names, c->n, val);

	if (i < 0)
		return i;
	c->val = i;
	return 0;
}

static int irqlab_choice_get(char *buf, const struct kernel_param *kp)
{
	const struct irqlab_choice *c = kp->arg;

	return scnprintf(buf, PAGE_SIZE, "%s\n", c->names[c->val]);
}

static const struct kernel_param_ops irqlab_choice_ops = {
	.set = irqlab_choice_set,
	.get = irqlab_choice_get,
};

/*
 * Module parameter @name, one of irqlab_<name>_names[] (indexed by value),
 * @def at first; its value is irqlab_<name>.val.
 */
#define IRQLAB_CHOICE_PARAM(name, def)					\
	static struct irqlab_choice irqlab_##name = {			\
		.val = (def),						\
		.names = irqlab_##name##_names,				\
		.n = ARRAY_SIZE(irqlab_##name##_names),			\
	};								\
	module_param_cb(name, &irqlab_choice_ops, &irqlab_##name, 0444)

static const char * const irqlab_wakeup_names[] = {
	[IRQLAB_WAKEUP_HARDIRQ] = "hardirq",
	[IRQLAB_WAKEUP_THREAD] = "thread",
	[IRQLAB_WAKEUP_WORKQUEUE] = "workqueue",
};

IRQLAB_CHOICE_PARAM(wakeup, IRQLAB_WAKEUP_HARDIRQ);
MODULE_PARM_DESC(wakeup,
		 "where readers are woken: hardirq (default), thread (threaded IRQ) or workqueue");

static const char * const irqlab_irq_mode_names[] = {
	[IRQLAB_IRQ_MODE_INTX] = "intx",
	[IRQLAB_IRQ_MODE_MSI] = "msi",
	[IRQLAB_IRQ_MODE_MSIX] = "msix",
	[IRQLAB_IRQ_MODE_AUTO] = "auto",
};

static const unsigned int irqlab_irq_types[] = {
	[IRQLAB_IRQ_MODE_INTX] = PCI_IRQ_INTX,
	[IRQLAB_IRQ_MODE_MSI] = PCI_IRQ_MSI,
	[IRQLAB_IRQ_MODE_MSIX] = PCI_IRQ_MSIX,
	[IRQLAB_IRQ_MODE_AUTO] = PCI_IRQ_ALL_TYPES,
};

IRQLAB_CHOICE_PARAM(irq_mode, IRQLAB_IRQ_MODE_AUTO);
MODULE_PARM_DESC(irq_mode,
		 "interrupt type: auto (default: MSI-X, else MSI, else INTx), intx, msi or msix");

static unsigned int gpio_edges;
module_param(gpio_edges, uint, 0444);
MODULE_PARM_DESC(gpio_edges,
		 "GPIO lines (bit mask) to arm for rising and falling edge events at probe (default 0)");

static int key_line = -1;
module_param(key_line, int, 0444);
MODULE_PARM_DESC(key_line,
		 "GPIO line debounced as a key: press/release records on /dev/irqlabN (default -1: none)");

static unsigned int key_debounce_ms = 15;
module_param(key_debounce_ms, uint, 0444);
MODULE_PARM_DESC(key_debounce_ms, "debounce period of the key line in ms (default 15)");

static bool uio;
module_param(uio, bool, 0444);
MODULE_PARM_DESC(uio,
		 "UIO mode: the interrupt handler only disables, acknowledges and wakes /dev/uioN (default off)");

static const char * const irqlab_src_names[IRQLAB_NUM_SOURCES] = {
	[IRQLAB_SRC_GPIO] = "gpio",
	[IRQLAB_SRC_FIFO] = "fifo",
	[IRQLAB_SRC_BURST] = "burst",
};

static DEFINE_IDA(irqlab_ida);

/* 64-bit value split in two registers; reading _LO latches _HI. */
static u64 irqlab_rd64(struct irqlab_dev *idev, unsigned int lo, unsigned int hi)
{
	u32 l = irqlab_rd(idev, lo);

	return ((u64)irqlab_rd(idev, hi) << 32) | l;
}

static void irqlab_release(struct kref *ref)
{
	struct irqlab_dev *idev = container_of(ref, struct irqlab_dev, ref);

	kvfree(idev->stage_buf);
	kfree(idev);
}

void irqlab_put(struct irqlab_dev *idev)
{
	kref_put(&idev->ref, irqlab_release);
}

static void irqlab_put_action(void *data)
{
	irqlab_put(data);
}

/*
 * The index names the nodes and their minors: it is free again once they
 * are deleted on unbind, even while files opened before stay open.
 */
static void irqlab_index_free(void *data)
{
	struct irqlab_dev *idev = data;

	ida_free(&irqlab_ida, idev->index);
}

/* --- hard IRQ side ------------------------------------------------------ */

/* Called with evq_lock held. */
void irqlab_stage(struct irqlab_dev *idev, struct irqlab_event *ev)
{
	ev->lost = idev->stage_lost_pending;
	if (kfifo_put(&idev->stage, *ev)) {
		idev->stage_lost_pending = 0;
		return;
	}
	idev->stage_lost++;
	if (idev->stage_lost_pending < U32_MAX)
		idev->stage_lost_pending++;
}

/*
 * Fetch up to @budget events from the device queue into the staging buffer;
 * returns how many.  Events raised after the caller cleared the status set
 * it again; a caller whose budget ran out drains the rest later (deferred).
 * A device that is gone reads all-ones (VALID set): that ends the fetch, or
 * @defer_work would stage garbage forever.  An event of a source the driver
 * does not know is popped and dropped.  Called with evq_lock.
 */
static u32 irqlab_fetch_events(struct irqlab_dev *idev, u64 isr_ns, u32 budget)
{
	struct irqlab_event ev = { .isr_ns = isr_ns };
	u32 fetched = 0;
	u32 info;

	ev.isr_dev_ns = irqlab_rd64(idev, IRQLAB_REG_TIME_LO, IRQLAB_REG_TIME_HI);
	for (; fetched < budget; fetched++) {
		info = irqlab_rd(idev, IRQLAB_REG_EVQ_HEAD_INFO);
		if (info == U32_MAX || !(info & IRQLAB_EVINFO_VALID))
			break;
		ev.seq = irqlab_rd(idev, IRQLAB_REG_EVQ_HEAD_SEQ);
		ev.value = irqlab_rd(idev, IRQLAB_REG_EVQ_HEAD_VALUE);
		ev.raise_ns = irqlab_rd64(idev, IRQLAB_REG_EVQ_HEAD_TS_LO,
					  IRQLAB_REG_EVQ_HEAD_TS_HI);
		irqlab_wr(idev, IRQLAB_REG_EVQ_POP, 0);

		ev.source = FIELD_GET(IRQLAB_EVINFO_SRC_MASK, info);
		if (ev.source >= IRQLAB_NUM_SOURCES)
			continue;
		ev.line = FIELD_GET(IRQLAB_EVINFO_LINE_MASK, info);
		ev.kind = FIELD_GET(IRQLAB_EVINFO_KIND_MASK, info);
		ev.flags = 0;
		if (info & IRQLAB_EVINFO_DROPPED) {
			ev.flags |= IRQLAB_EVF_DEV_DROPPED;
			idev->dev_dropped++;
		}
		idev->events++;
		if (ev.source == IRQLAB_SRC_GPIO)
			irqlab_gpio_event(idev, &ev);
		irqlab_stage(idev, &ev);
	}
	return fetched;
}

/*
 * Clear the latched status of @pending sources; true when a GPIO level line
 * was newly held (the GPIO work must run to release it).  Called with
 * evq_lock.
 */
static bool irqlab_ack_sources(struct irqlab_dev *idev, u32 pending)
{
	bool held = false;

	if (pending & BIT(IRQLAB_SRC_GPIO)) {
		/*
		 * IRQ_STATUS.GPIO is derived from the latched line status.
		 * The line interrupts of gpiolib are fed from the events in
		 * the queue (irqlab_gpio_event()), not from these bits.
		 */
		held = irqlab_gpio_ack(idev, irqlab_rd(idev, IRQLAB_REG_GPIO_STATUS));
		pending &= ~BIT(IRQLAB_SRC_GPIO);
	}
	if (pending)
		irqlab_wr(idev, IRQLAB_REG_IRQ_STATUS, pending);
	return held;
}

/*
 * Sources still pending after the last pass: toggle their enable bits so the
 * device sees a fresh 0->1 pending edge and signals again (MSI/MSI-X are
 * edge messages; with INTx this is harmless).  Called with evq_lock.
 */
static void irqlab_rearm(struct irqlab_dev *idev, u32 pending)
{
	u32 enable = idev->irq_sources & ~idev->deferred;

	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, enable & ~pending);
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, enable);
	idev->rearms++;
}

/* Pending sources of @vec; all-ones means the device is gone. */
static u32 irqlab_pending(struct irqlab_vec *vec)
{
	u32 pending = irqlab_rd(vec->idev, IRQLAB_REG_IRQ_PENDING);

	return pending == U32_MAX ? 0 : pending & vec->sources;
}

/*
 * The budget ran out: mask @sources at the device until the work item has
 * drained the queue.  Called with evq_lock.
 */
static void irqlab_defer(struct irqlab_dev *idev, u32 sources)
{
	idev->deferred |= sources;
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, idev->irq_sources & ~idev->deferred);
}

static irqreturn_t irqlab_hardirq(int irq, void *data)
{
	struct irqlab_vec *vec = data;
	struct irqlab_dev *idev = vec->idev;
	u64 isr_ns = ktime_get_ns();
	u32 budget = IRQLAB_IRQ_BUDGET;
	bool staged, gpio = false;
	bool defer = false;
	unsigned long flags;
	unsigned int pass;
	bool ours = false;
	u32 pending;

	spin_lock_irqsave(&idev->evq_lock, flags);
	if (!idev->hw_stopped) {
		/*
		 * Clear, then fetch, then look again: a source that became
		 * pending meanwhile (MSI: without a new 0->1 edge of the
		 * pending summary) is handled in the next pass.
		 */
		pending = irqlab_pending(vec);
		for (pass = 0; pending && pass < IRQLAB_MAX_PASSES && budget; pass++) {
			ours = true;
			if (irqlab_ack_sources(idev, pending))
				gpio = true;
			budget -= irqlab_fetch_events(idev, isr_ns, budget);
			pending = irqlab_pending(vec);
		}
		if (ours && !budget) {
			/* The queue may hold more, with the status cleared. */
			irqlab_defer(idev, vec->sources);
			defer = true;
		} else if (pending) {
			irqlab_rearm(idev, pending);
		}
		if (!kfifo_is_empty(&idev->gpio_evq))
			gpio = true;
	}
	if (ours)
		idev->irqs++;
	else if (idev->irq_mode == IRQLAB_IRQ_MODE_INTX)
		idev->irqs_none++;
	else
		idev->irqs_spurious++;
	staged = !kfifo_is_empty(&idev->stage);
	spin_unlock_irqrestore(&idev->evq_lock, flags);

	if (gpio)
		queue_work(system_highpri_wq, &idev->gpio_work);
	if (defer)
		queue_work(system_wq, &idev->defer_work);

	/* MSI and MSI-X vectors are ours alone: never report them unhandled. */
	if (!ours && idev->irq_mode == IRQLAB_IRQ_MODE_INTX)
		return IRQ_NONE;
	if (!staged)
		return IRQ_HANDLED;

	switch (idev->wakeup) {
	case IRQLAB_WAKEUP_THREAD:
		return IRQ_WAKE_THREAD;
	case IRQLAB_WAKEUP_WORKQUEUE:
		queue_work(system_highpri_wq, &idev->work);
		return IRQ_HANDLED;
	default:
		irqlab_deliver(idev);
		return IRQ_HANDLED;
	}
}

static irqreturn_t irqlab_thread_fn(int irq, void *data)
{
	struct irqlab_vec *vec = data;

	irqlab_deliver(vec->idev);
	return IRQ_HANDLED;
}

static void irqlab_work_fn(struct work_struct *work)
{
	irqlab_deliver(container_of(work, struct irqlab_dev, work));
}

/*
 * Drain what the hard IRQ handler left (its budget ran out), a batch at a
 * time with a chance to reschedule in between, then unmask the deferred
 * sources: what is pending by then signals afresh.
 */
static void irqlab_defer_work_fn(struct work_struct *work)
{
	struct irqlab_dev *idev = container_of(work, struct irqlab_dev, defer_work);
	unsigned long flags;
	bool more, gpio;
	u32 status;

	do {
		gpio = false;
		spin_lock_irqsave(&idev->evq_lock, flags);
		if (idev->hw_stopped) {
			spin_unlock_irqrestore(&idev->evq_lock, flags);
			return;
		}
		status = irqlab_rd(idev, IRQLAB_REG_IRQ_STATUS);
		if (status != U32_MAX && (status & idev->deferred) &&
		    irqlab_ack_sources(idev, status & idev->deferred))
			gpio = true;
		more = irqlab_fetch_events(idev, ktime_get_ns(),
					   IRQLAB_IRQ_BUDGET) == IRQLAB_IRQ_BUDGET;
		if (!more) {
			idev->deferred = 0;
			irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, idev->irq_sources);
		}
		if (!kfifo_is_empty(&idev->gpio_evq))
			gpio = true;
		spin_unlock_irqrestore(&idev->evq_lock, flags);

		irqlab_deliver(idev);
		if (gpio)
			queue_work(system_highpri_wq, &idev->gpio_work);
		cond_resched();
	} while (more);
}

/* --- process context register access ----------------------------------- */

/*
 * A device that reads all ones is gone (surprise removal) before unbind
 * told the driver: its ACK_INVALID and latency readings are no answer.
 */
int irqlab_hw_ack(struct irqlab_dev *idev, u32 seq, u64 *latency_ns)
{
	u32 invalid, after;
	u64 lat;
	int ret = -ENODEV;

	mutex_lock(&idev->hw_lock);
	if (idev->dead)
		goto out;
	invalid = irqlab_rd(idev, IRQLAB_REG_ACK_INVALID);
	if (invalid == U32_MAX)
		goto out;
	irqlab_wr(idev, IRQLAB_REG_ACK, seq);
	after = irqlab_rd(idev, IRQLAB_REG_ACK_INVALID);
	if (after == U32_MAX)
		goto out;
	if (after != invalid) {
		idev->acks_invalid++;
		ret = -ENOENT;
		goto out;
	}
	if (latency_ns) {
		lat = irqlab_rd64(idev, IRQLAB_REG_ACK_LAT_LO,
				  IRQLAB_REG_ACK_LAT_HI);
		if (lat == U64_MAX)
			goto out;
		*latency_ns = lat;
	}
	idev->acks++;
	ret = 0;
out:
	mutex_unlock(&idev->hw_lock);
	return ret;
}

/* Device-wide counters of struct irqlab_stats. */
void irqlab_hw_stats(struct irqlab_dev *idev, struct irqlab_stats *st)
{
	unsigned long flags;

	spin_lock_irqsave(&idev->evq_lock, flags);
	st->irqs = idev->irqs;
	st->irqs_none = idev->irqs_none;
	st->irqs_spurious = idev->irqs_spurious;
	st->rearms = idev->rearms;
	st->events = idev->events;
	st->dev_dropped = idev->dev_dropped;
	st->stage_lost = idev->stage_lost;
	st->gpio_lost = idev->gpio_lost;
	spin_unlock_irqrestore(&idev->evq_lock, flags);

	spin_lock_irqsave(&idev->lock, flags);
	st->deliveries = idev->deliveries;
	spin_unlock_irqrestore(&idev->lock, flags);

	mutex_lock(&idev->hw_lock);
	st->acks = idev->acks;
	st->acks_invalid = idev->acks_invalid;
	mutex_unlock(&idev->hw_lock);
}

/* --- probe -------------------------------------------------------------- */

/* Map BAR0 (managed); pcim_iomap_regions() is deprecated from 6.11. */
static void __iomem *irqlab_map_bar0(struct pci_dev *pdev)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	return pcim_iomap_region(pdev, 0, KBUILD_MODNAME);
#else
	int ret = pcim_iomap_regions(pdev, BIT(0), KBUILD_MODNAME);

	return ret ? IOMEM_ERR_PTR(ret) : pcim_iomap_table(pdev)[0];
#endif
}

static struct irqlab_dev *irqlab_alloc(struct pci_dev *pdev, void __iomem *regs)
{
	struct irqlab_dev *idev;
	int ret;

	idev = kzalloc(sizeof(*idev), GFP_KERNEL);
	if (!idev)
		return ERR_PTR(-ENOMEM);

	idev->stage_buf = kvcalloc(IRQLAB_STAGE_RECORDS, sizeof(*idev->stage_buf),
				   GFP_KERNEL);
	if (!idev->stage_buf) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = kfifo_init(&idev->stage, idev->stage_buf,
			 IRQLAB_STAGE_RECORDS * sizeof(*idev->stage_buf));
	if (ret)
		goto err_stage;

	kref_init(&idev->ref);
	idev->pdev = pdev;
	idev->regs = regs;
	spin_lock_init(&idev->evq_lock);
	spin_lock_init(&idev->lock);
	mutex_init(&idev->hw_lock);
	INIT_LIST_HEAD(&idev->files);
	INIT_LIST_HEAD(&idev->counters);
	INIT_WORK(&idev->work, irqlab_work_fn);
	INIT_WORK(&idev->defer_work, irqlab_defer_work_fn);
	idev->wakeup = irqlab_wakeup.val;
	return idev;

err_stage:
	kvfree(idev->stage_buf);
err_free:
	kfree(idev);
	return ERR_PTR(ret);
}

/* No source signals and no GPIO line detects anything. */
static void irqlab_hw_disarm(struct irqlab_dev *idev)
{
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, 0);
	irqlab_wr(idev, IRQLAB_REG_GPIO_IRQ_EN, 0);
	irqlab_wr(idev, IRQLAB_REG_GPIO_RISING, 0);
	irqlab_wr(idev, IRQLAB_REG_GPIO_FALLING, 0);
	irqlab_wr(idev, IRQLAB_REG_GPIO_LEVEL_HIGH, 0);
	irqlab_wr(idev, IRQLAB_REG_GPIO_LEVEL_LOW, 0);
}

/* Check the identity, read the geometry and silence the device. */
static int irqlab_hw_init(struct irqlab_dev *idev)
{
	struct device *dev = &idev->pdev->dev;
	u32 n;

	idev->id = irqlab_rd(idev, IRQLAB_REG_ID);
	if ((idev->id & ~GENMASK(7, 0)) != (IRQLAB_ID_VALUE & ~GENMASK(7, 0)))
		return dev_err_probe(dev, -ENODEV, "unsupported device id %#x\n",
				     idev->id);

	idev->features = irqlab_rd(idev, IRQLAB_REG_FEATURES);
	idev->gpio_lines = min_t(u32, irqlab_rd(idev, IRQLAB_REG_GPIO_NLINES),
				 IRQLAB_MAX_GPIO_LINES);
	idev->fifo_depth = irqlab_rd(idev, IRQLAB_REG_FIFO_DEPTH);
	idev->evq_depth = clamp_t(u32, irqlab_rd(idev, IRQLAB_REG_EVQ_DEPTH), 1,
				  IRQLAB_MAX_EVQ_DEPTH);
	idev->gpio_edges = idev->gpio_lines ?
			   gpio_edges & GENMASK(idev->gpio_lines - 1, 0) : 0;
	if (idev->gpio_edges != gpio_edges)
		dev_warn(dev, "gpio_edges %#x beyond the %u lines ignored\n",
			 gpio_edges & ~idev->gpio_edges, idev->gpio_lines);
	if (key_line < -1 || key_line >= (int)idev->gpio_lines)
		return dev_err_probe(dev, -EINVAL, "key_line %d: the device has %u lines\n",
				     key_line, idev->gpio_lines);

	irqlab_hw_disarm(idev);
	irqlab_wr(idev, IRQLAB_REG_GPIO_STATUS, U32_MAX);
	irqlab_wr(idev, IRQLAB_REG_IRQ_STATUS, IRQLAB_SRC_ALL);

	/* Events raised before the driver bound would skew every latency. */
	for (n = 0; n < idev->evq_depth; n++) {
		if (!(irqlab_rd(idev, IRQLAB_REG_EVQ_HEAD_INFO) & IRQLAB_EVINFO_VALID))
			break;
		irqlab_wr(idev, IRQLAB_REG_EVQ_POP, 0);
	}
	if (n)
		dev_info(dev, "discarded %u stale events\n", n);
	return 0;
}

static void irqlab_cancel_work(void *data)
{
	struct irqlab_dev *idev = data;

	cancel_work_sync(&idev->work);
}

/*
 * Allocate the vectors (managed), of the types in @allowed (PCI_IRQ_*) that
 * the irq_mode parameter asks for, and decide which sources each serves;
 * *irqflags gets the request_irq() flags they need (INTx is shared).
 */
int irqlab_alloc_vectors(struct irqlab_dev *idev, unsigned int allowed,
			 unsigned long *irqflags)
{
	struct pci_dev *pdev = idev->pdev;
	struct device *dev = &pdev->dev;
	u32 dev_mode = FIELD_GET(IRQLAB_FEAT_IRQ_MODE_MASK, idev->features);
	unsigned int types = irqlab_irq_types[irqlab_irq_mode.val] & allowed;
	unsigned int i;
	int nvec;

	if (!types)
		return dev_err_probe(dev, -EINVAL, "irq_mode=%s is not possible here\n",
				     irqlab_irq_mode_names[irqlab_irq_mode.val]);

	/*
	 * The kernel prefers MSI-X, then MSI, then INTx.  The device offers
	 * the capability of its irq-mode only and signals through INTA while
	 * that is not enabled, so irq_mode=intx works on any device.
	 * Managed: pcim_enable_device() makes the PCI core free the vectors.
	 */
	nvec = pci_alloc_irq_vectors(pdev, 1, IRQLAB_NUM_SOURCES, types);
	if (nvec < 0)
		return dev_err_probe(dev, nvec, "no interrupt of type %s\n",
				     irqlab_irq_mode_names[irqlab_irq_mode.val]);
	idev->nvecs = nvec;
	if (pdev->msix_enabled)
		idev->irq_mode = IRQLAB_IRQ_MODE_MSIX;
	else if (pdev->msi_enabled)
		idev->irq_mode = IRQLAB_IRQ_MODE_MSI;
	else
		idev->irq_mode = IRQLAB_IRQ_MODE_INTX;
	*irqflags = idev->irq_mode == IRQLAB_IRQ_MODE_INTX ? IRQF_SHARED : 0;
	if (idev->irq_mode != dev_mode)
		dev_info(dev, "using %s, device irq-mode %u\n",
			 irqlab_irq_mode_names[idev->irq_mode], dev_mode);

	if (idev->irq_mode == IRQLAB_IRQ_MODE_MSIX) {
		/* The device signals source N on vector N. */
		for (i = 0; i < nvec; i++)
			idev->vec[i].sources = BIT(i);
		idev->irq_sources = GENMASK(nvec - 1, 0);
		if (nvec < IRQLAB_NUM_SOURCES)
			dev_warn(dev, "only %d MSI-X vectors: sources %#x stay disabled\n",
				 nvec, IRQLAB_SRC_ALL & ~idev->irq_sources);
	} else {
		idev->nvecs = 1;
		idev->vec[0].sources = IRQLAB_SRC_ALL;
		idev->irq_sources = IRQLAB_SRC_ALL;
	}
	return 0;
}

static int irqlab_setup_irqs(struct irqlab_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	struct device *dev = &pdev->dev;
	irq_handler_t thread_fn = NULL;
	unsigned long irqflags;
	const char *name;
	unsigned int i;
	int ret;

	ret = irqlab_alloc_vectors(idev, PCI_IRQ_ALL_TYPES, &irqflags);
	if (ret)
		return ret;

	/* Registered before the IRQs, so it runs after they are freed. */
	ret = devm_add_action_or_reset(dev, irqlab_cancel_work, idev);
	if (ret)
		return ret;

	if (idev->wakeup == IRQLAB_WAKEUP_THREAD)
		thread_fn = irqlab_thread_fn;

	for (i = 0; i < idev->nvecs; i++) {
		idev->vec[i].idev = idev;
		name = devm_kasprintf(dev, GFP_KERNEL, "irqlab%d-%s", idev->index,
				      idev->irq_mode == IRQLAB_IRQ_MODE_MSIX ?
				      irqlab_src_names[i] : "all");
		if (!name)
			return -ENOMEM;
		ret = devm_request_threaded_irq(dev, pci_irq_vector(pdev, i),
						irqlab_hardirq, thread_fn, irqflags,
						name, &idev->vec[i]);
		if (ret)
			return dev_err_probe(dev, ret, "cannot request %s\n", name);
	}
	return 0;
}

static void irqlab_hw_start(struct irqlab_dev *idev)
{
	unsigned long flags;

	spin_lock_irqsave(&idev->evq_lock, flags);
	if (!idev->uio)
		irqlab_gpio_hw_start(idev);
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, idev->irq_sources);
	spin_unlock_irqrestore(&idev->evq_lock, flags);
}

static void irqlab_hw_stop(void *data)
{
	struct irqlab_dev *idev = data;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&idev->evq_lock, flags);
	idev->hw_stopped = true;
	irqlab_wr(idev, IRQLAB_REG_IRQ_ENABLE, 0);
	irqlab_gpio_hw_stop(idev);
	spin_unlock_irqrestore(&idev->evq_lock, flags);
	/*
	 * A handler may still run (an MSI in flight, another device on a
	 * shared INTx line) until the IRQs are freed, but from now on it sees
	 * hw_stopped and queues nothing.  Wait for those that started before,
	 * and the work they queued, before the gpio chip, the BAR and the
	 * structure go away.
	 */
	for (i = 0; i < idev->nvecs; i++)
		synchronize_irq(pci_irq_vector(idev->pdev, i));
	cancel_work_sync(&idev->defer_work);
	irqlab_gpio_stop(idev);
}

/*
 * Everything is undone by devres, in reverse order, on unbind and on every
 * probe error: stop the device, kill and delete the nodes, remove the gpio
 * chip, free the IRQs, flush the work item, free the vectors, unmap BAR0,
 * drop the device reference, disable the PCI function.
 */
static int irqlab_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct irqlab_dev *idev;
	void __iomem *regs;
	int ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot enable device\n");
	if (pci_resource_len(pdev, 0) < IRQLAB_BAR0_SIZE)
		return dev_err_probe(dev, -ENODEV, "BAR0 too small\n");
	regs = irqlab_map_bar0(pdev);
	if (IS_ERR(regs))
		return dev_err_probe(dev, PTR_ERR(regs), "cannot map BAR0\n");
	/* MSI messages are memory writes: they need bus mastering. */
	pci_set_master(pdev);

	idev = irqlab_alloc(pdev, regs);
	if (IS_ERR(idev))
		return PTR_ERR(idev);
	ret = devm_add_action_or_reset(dev, irqlab_put_action, idev);
	if (ret)
		return ret;
	pci_set_drvdata(pdev, idev);

	ret = ida_alloc_max(&irqlab_ida, IRQLAB_MAX_DEVICES - 1, GFP_KERNEL);
	if (ret < 0)
		return ret;
	idev->index = ret;
	ret = devm_add_action_or_reset(dev, irqlab_index_free, idev);
	if (ret)
		return ret;

	ret = irqlab_hw_init(idev);
	if (ret)
		return ret;
	irqlab_gpio_init(idev, idev->gpio_edges, key_line, key_debounce_ms);
	if (uio) {
		ret = irqlab_uio_setup(idev);
		if (ret)
			return ret;
		goto start;
	}
	ret = irqlab_setup_irqs(idev);
	if (ret)
		return ret;
	ret = irqlab_gpio_add(idev);
	if (ret)
		return ret;

start:
	irqlab_hw_start(idev);
	/*
	 * The nodes last: userspace never opens a half-probed device, and no
	 * probe error can unmap BAR0 under an open file.  The stop is
	 * registered after them, so that unbind stops the device (and waits
	 * for its handlers) before it kills them, as it did.
	 */
	if (!uio) {
		ret = irqlab_nodes_add(idev);
		if (ret) {
			irqlab_hw_stop(idev);
			return ret;
		}
	}
	ret = devm_add_action_or_reset(dev, irqlab_hw_stop, idev);
	if (ret)
		return ret;

	dev_info(dev, "irqlab%d: id %#x, %s x%u, %s, %u gpio lines, evq depth %u\n",
		 idev->index, idev->id, irqlab_irq_mode_names[idev->irq_mode],
		 idev->nvecs, uio ? "uio" : irqlab_wakeup_names[idev->wakeup],
		 idev->gpio_lines, idev->evq_depth);
	return 0;
}

static const struct pci_device_id irqlab_ids[] = {
	{ PCI_DEVICE(IRQLAB_PCI_VENDOR_ID, IRQLAB_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, irqlab_ids);

static struct pci_driver irqlab_pci_driver = {
	.name = KBUILD_MODNAME,
	.id_table = irqlab_ids,
	.probe = irqlab_probe,
};

static int __init irqlab_init(void)
{
	int ret;

	ret = irqlab_cdev_init();
	if (ret)
		return ret;
	ret = pci_register_driver(&irqlab_pci_driver);
	if (ret)
		irqlab_cdev_exit();
	return ret;
}
module_init(irqlab_init);

static void __exit irqlab_exit(void)
{
	pci_unregister_driver(&irqlab_pci_driver);
	irqlab_cdev_exit();
	ida_destroy(&irqlab_ida);
}
module_exit(irqlab_exit);

MODULE_DESCRIPTION("irqlab PCI interrupt test device driver");
MODULE_LICENSE("GPL");
