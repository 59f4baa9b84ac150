// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * irqlab: the GPIO lines as a gpio_chip with a gpiolib irqchip, and the
 * debounced key.
 *
 * Every GPIO detection of the device is an event in its event queue.  The
 * hard IRQ handler (irqlab-core.c) fetches those events for the event files
 * and hands each GPIO event here (irqlab_gpio_event()):
 *
 * - an event of a gpiolib line whose interrupt is unmasked goes into
 *   @gpio_evq; a work item then runs the line's nested (threaded) interrupt
 *   once per event (handle_nested_irq()), so a consumer such as the GPIO
 *   character device sees every edge, even when the device coalesced
 *   several of them into one PCI interrupt;
 * - an event of the key line re-arms the debounce timer; when it expires the
 *   level is read and a press or release record is delivered to the event
 *   files (seed 002).
 */

#include <linux/bits.h>
#include <linux/device.h>
#include <linux/gpio/consumer.h>
#include <linux/gpio/driver.h>
#include <linux/gpio/machine.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/irqdomain.h>
#include <linux/jiffies.h>
#include <linux/pci.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>

#include "irqlab-drv.h"

/*
 * Every GPIO register write: none once the device stopped
 * (irqlab_gpio_hw_stop()), whatever a consumer still asks of the irq_chip
 * until the gpio chip is removed.
 */
static void irqlab_gpio_wr(struct irqlab_dev *idev, unsigned int reg, u32 val)
{
	lockdep_assert_held(&idev->gpio_lock);
	if (!idev->gpio_stopped)
		irqlab_wr(idev, reg, val);
}

/* GPIO_IRQ_EN: unmasked gpiolib lines not held, and the driver's own lines. */
static void irqlab_gpio_sync_en(struct irqlab_dev *idev)
{
	irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_IRQ_EN,
		       (idev->gpio_unmasked & ~idev->gpio_held) | idev->gpio_direct);
}

static void irqlab_gpio_sync_types(struct irqlab_dev *idev)
{
	irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_RISING, idev->gpio_rising);
	irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_FALLING, idev->gpio_falling);
	irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_LEVEL_HIGH, idev->gpio_lvl_high);
	irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_LEVEL_LOW, idev->gpio_lvl_low);
}

/* --- gpio_chip: input lines --------------------------------------------- */

static int irqlab_gpio_get(struct gpio_chip *gc, unsigned int offset)
{
	struct irqlab_dev *idev = gpiochip_get_data(gc);

	/*
	 * A consumer reading the line from its handler of a recorded event
	 * (gpiolib's character device does so for both-edge requests) gets
	 * the level that event left, as it would on hardware where the
	 * handler runs before the next edge.
	 */
	if (READ_ONCE(idev->replay_task) == current && idev->replay_line == offset)
		return idev->replay_value;
	return !!(irqlab_rd(idev, IRQLAB_REG_GPIO_IN) & BIT(offset));
}

static int irqlab_gpio_get_direction(struct gpio_chip *gc, unsigned int offset)
{
	return GPIO_LINE_DIRECTION_IN;
}

static int irqlab_gpio_direction_input(struct gpio_chip *gc, unsigned int offset)
{
	return 0;
}

/* The host drives the lines: they are inputs only. */
static int irqlab_gpio_direction_output(struct gpio_chip *gc,
					unsigned int offset, int value)
{
	return -EINVAL;
}

/* --- irq_chip ----------------------------------------------------------- */

static void irqlab_gpio_irq_mask(struct irq_data *d)
{
	struct gpio_chip *gc = irq_data_get_irq_chip_data(d);
	struct irqlab_dev *idev = gpiochip_get_data(gc);
	irq_hw_number_t hwirq = irqd_to_hwirq(d);
	unsigned long flags;

	raw_spin_lock_irqsave(&idev->gpio_lock, flags);
	idev->gpio_unmasked &= ~BIT(hwirq);
	irqlab_gpio_sync_en(idev);
	raw_spin_unlock_irqrestore(&idev->gpio_lock, flags);
	gpiochip_disable_irq(gc, hwirq);
}

static void irqlab_gpio_irq_unmask(struct irq_data *d)
{
	struct gpio_chip *gc = irq_data_get_irq_chip_data(d);
	struct irqlab_dev *idev = gpiochip_get_data(gc);
	irq_hw_number_t hwirq = irqd_to_hwirq(d);
	unsigned long flags;

	gpiochip_enable_irq(gc, hwirq);
	raw_spin_lock_irqsave(&idev->gpio_lock, flags);
	idev->gpio_unmasked |= BIT(hwirq);
	irqlab_gpio_sync_en(idev);
	raw_spin_unlock_irqrestore(&idev->gpio_lock, flags);
}

/* Program the line's detect registers: edges, or a level condition. */
static int irqlab_gpio_irq_set_type(struct irq_data *d, unsigned int type)
{
	struct gpio_chip *gc = irq_data_get_irq_chip_data(d);
	struct irqlab_dev *idev = gpiochip_get_data(gc);
	u32 bit = BIT(irqd_to_hwirq(d));
	u32 rise = 0, fall = 0, high = 0, low = 0;
	unsigned long flags;

	if (idev->gpio_direct & bit)
		return -EBUSY;
	switch (type & IRQ_TYPE_SENSE_MASK) {
	case IRQ_TYPE_EDGE_RISING:
		rise = bit;
		break;
	case IRQ_TYPE_EDGE_FALLING:
		fall = bit;
		break;
	case IRQ_TYPE_EDGE_BOTH:
		rise = bit;
		fall = bit;
		break;
	case IRQ_TYPE_LEVEL_HIGH:
		high = bit;
		break;
	case IRQ_TYPE_LEVEL_LOW:
		low = bit;
		break;
	default:
		return -EINVAL;
	}

	raw_spin_lock_irqsave(&idev->gpio_lock, flags);
	idev->gpio_rising = (idev->gpio_rising & ~bit) | rise;
	idev->gpio_falling = (idev->gpio_falling & ~bit) | fall;
	idev->gpio_lvl_high = (idev->gpio_lvl_high & ~bit) | high;
	idev->gpio_lvl_low = (idev->gpio_lvl_low & ~bit) | low;
	idev->gpio_level = (idev->gpio_level & ~bit) | high | low;
	irqlab_gpio_sync_types(idev);
	raw_spin_unlock_irqrestore(&idev->gpio_lock, flags);
	return 0;
}

/*
 * The driver's own lines (gpio_edges, key_line) are refused here, when any
 * consumer requests the interrupt, with or without a trigger type: a
 * request without one never calls irq_set_type.
 */
static int irqlab_gpio_irq_reqres(struct irq_data *d)
{
	struct gpio_chip *gc = irq_data_get_irq_chip_data(d);
	struct irqlab_dev *idev = gpiochip_get_data(gc);

	if (idev->gpio_direct & BIT(irqd_to_hwirq(d)))
		return -EBUSY;
	return gpiochip_reqres_irq(gc, irqd_to_hwirq(d));
}

/* A freed line stops detecting: no events for lines nobody listens to. */
static void irqlab_gpio_irq_relres(struct irq_data *d)
{
	struct gpio_chip *gc = irq_data_get_irq_chip_data(d);
	struct irqlab_dev *idev = gpiochip_get_data(gc);
	u32 bit = BIT(irqd_to_hwirq(d));
	unsigned long flags;

	raw_spin_lock_irqsave(&idev->gpio_lock, flags);
	if (!(idev->gpio_direct & bit)) {
		idev->gpio_rising &= ~bit;
		idev->gpio_falling &= ~bit;
		idev->gpio_lvl_high &= ~bit;
		idev->gpio_lvl_low &= ~bit;
		idev->gpio_level &= ~bit;
		irqlab_gpio_sync_types(idev);
		/* A level latched while masked would interrupt the next user. */
		irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_STATUS, bit);
	}
	raw_spin_unlock_irqrestore(&idev->gpio_lock, flags);
	gpiochip_relres_irq(gc, irqd_to_hwirq(d));
}

/*
 * .irq_disable masks at once: the nested flow (handle_nested_irq()) never
 * masks a lazily disabled line itself, it only marks it pending, so a level
 * line disabled by its consumer (disable_irq_nosync() in its handler) would
 * go on interrupting.
 */
static const struct irq_chip irqlab_gpio_irqchip = {
	.name = "irqlab-gpio",
	.irq_mask = irqlab_gpio_irq_mask,
	.irq_unmask = irqlab_gpio_irq_unmask,
	.irq_disable = irqlab_gpio_irq_mask,
	.irq_set_type = irqlab_gpio_irq_set_type,
	.irq_request_resources = irqlab_gpio_irq_reqres,
	.irq_release_resources = irqlab_gpio_irq_relres,
	.flags = IRQCHIP_IMMUTABLE | IRQCHIP_SKIP_SET_WAKE,
};

/* --- from the hard IRQ handler ------------------------------------------ */

/*
 * Clear the latched GPIO status.  Level lines of gpiolib stay latched and
 * masked until their consumer ran (the work item releases them), or the
 * device would latch them again at once.  A masked level line stays latched
 * too, without interrupting (its GPIO_IRQ_EN bit is clear), until it is
 * unmasked: clearing it here would raise a new LEVEL event at once, on every
 * pass of this handler.  Returns true when it took a new
 * hold: the caller must then queue the work item, even with no event to
 * replay (the LEVEL event was dropped by a full device queue, or another
 * MSI-X vector fetched it before this one took the hold).  Called with
 * evq_lock held.
 */
bool irqlab_gpio_ack(struct irqlab_dev *idev, u32 status)
{
	u32 level, fresh;

	raw_spin_lock(&idev->gpio_lock);
	level = status & idev->gpio_level & idev->gpio_unmasked;
	fresh = level & ~idev->gpio_held;
	if (level) {
		idev->gpio_held |= level;
		irqlab_gpio_sync_en(idev);
	}
	if (status & ~idev->gpio_level)
		irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_STATUS, status & ~idev->gpio_level);
	raw_spin_unlock(&idev->gpio_lock);
	return fresh;
}

/* One GPIO event fetched from the device queue.  Called with evq_lock held. */
void irqlab_gpio_event(struct irqlab_dev *idev, const struct irqlab_event *ev)
{
	struct irqlab_gpio_ev gev = { .line = ev->line, .value = !!ev->value };

	if (ev->line >= idev->gpio_lines)
		return;
	if (ev->line == idev->key_line) {
		idev->key_raise_ns = ev->raise_ns;
		mod_timer(&idev->key_timer,
			  jiffies + msecs_to_jiffies(idev->key_debounce_ms));
		return;
	}
	if (!(READ_ONCE(idev->gpio_unmasked) & BIT(ev->line)))
		return;
	if (!kfifo_put(&idev->gpio_evq, gev))
		idev->gpio_lost++;
}

/* --- the work item: one nested interrupt per event ----------------------- */

static void irqlab_gpio_work_fn(struct work_struct *work)
{
	struct irqlab_dev *idev = container_of(work, struct irqlab_dev, gpio_work);
	struct irq_domain *domain = idev->gc.irq.domain;
	struct irqlab_gpio_ev gev;
	unsigned long flags;
	unsigned int irq;
	u32 held;

	while (kfifo_get(&idev->gpio_evq, &gev)) {
		irq = irq_find_mapping(domain, gev.line);
		if (!irq)
			continue;
		idev->replay_line = gev.line;
		idev->replay_value = gev.value;
		WRITE_ONCE(idev->replay_task, current);
		handle_nested_irq(irq);
		WRITE_ONCE(idev->replay_task, NULL);
	}

	/*
	 * Let held level lines latch (and interrupt) again.  A line its
	 * consumer masked or disabled meanwhile stays latched, as a masked
	 * level line does (irqlab_gpio_ack()): clearing it would raise a new
	 * LEVEL event at once.  Its unmask interrupts, and takes a new hold.
	 */
	raw_spin_lock_irqsave(&idev->gpio_lock, flags);
	held = idev->gpio_held;
	if (held) {
		idev->gpio_held = 0;
		if (held & idev->gpio_unmasked)
			irqlab_gpio_wr(idev, IRQLAB_REG_GPIO_STATUS,
				       held & idev->gpio_unmasked);
		irqlab_gpio_sync_en(idev);
	}
	raw_spin_unlock_irqrestore(&idev->gpio_lock, flags);
}

/* --- the debounced key --------------------------------------------------- */

static void irqlab_key_timer_fn(struct timer_list *t)
{
	struct irqlab_dev *idev = timer_container_of(idev, t, key_timer);
	struct irqlab_event ev = {
		.source = IRQLAB_SRC_KEY,
		.line = idev->key_line,
	};
	unsigned long flags;
	bool report = false;
	int level;

	spin_lock_irqsave(&idev->evq_lock, flags);
	if (!idev->hw_stopped) {
		level = !!(irqlab_rd(idev, IRQLAB_REG_GPIO_IN) & BIT(idev->key_line));
		/* Bounces that end at the level reported last are no event. */
		if (level != idev->key_state) {
			idev->key_state = level;
			ev.kind = level ? IRQLAB_KEY_PRESS : IRQLAB_KEY_RELEASE;
			ev.value = level;
			ev.raise_ns = idev->key_raise_ns;
			ev.isr_dev_ns = irqlab_rd(idev, IRQLAB_REG_TIME_LO);
			ev.isr_dev_ns |= (u64)irqlab_rd(idev, IRQLAB_REG_TIME_HI) << 32;
			ev.isr_ns = ktime_get_ns();
			irqlab_stage(idev, &ev);
			report = true;
		}
	}
	spin_unlock_irqrestore(&idev->evq_lock, flags);
	if (report)
		irqlab_deliver(idev);
}

/* --- setup ----------------------------------------------------------------- */

/* Before the interrupts are requested: the driver's own lines, locks, work. */
void irqlab_gpio_init(struct irqlab_dev *idev, u32 edges, int key_line,
		      unsigned int key_debounce_ms)
{
	raw_spin_lock_init(&idev->gpio_lock);
	INIT_KFIFO(idev->gpio_evq);
	INIT_WORK(&idev->gpio_work, irqlab_gpio_work_fn);
	timer_setup(&idev->key_timer, irqlab_key_timer_fn, 0);
	idev->key_line = key_line;
	idev->key_debounce_ms = key_debounce_ms;
	if (key_line >= 0)
		edges |= BIT(key_line);
	idev->gpio_direct = edges;
	idev->gpio_rising = edges;
	idev->gpio_falling = edges;
}

/* Write the configuration and learn the key's level (probe, after the IRQs). */
void irqlab_gpio_hw_start(struct irqlab_dev *idev)
{
	lockdep_assert_held(&idev->evq_lock);
	raw_spin_lock(&idev->gpio_lock);
	irqlab_gpio_sync_types(idev);
	irqlab_gpio_sync_en(idev);
	raw_spin_unlock(&idev->gpio_lock);
	if (idev->key_line >= 0)
		idev->key_state = !!(irqlab_rd(idev, IRQLAB_REG_GPIO_IN) &
				     BIT(idev->key_line));
}

/*
 * Stop detecting (the device stops, evq_lock held): the detect registers,
 * GPIO_IRQ_EN and their shadows cleared, and no GPIO register written again.
 */
void irqlab_gpio_hw_stop(struct irqlab_dev *idev)
{
	lockdep_assert_held(&idev->evq_lock);
	raw_spin_lock(&idev->gpio_lock);
	idev->gpio_rising = 0;
	idev->gpio_falling = 0;
	idev->gpio_lvl_high = 0;
	idev->gpio_lvl_low = 0;
	idev->gpio_level = 0;
	idev->gpio_unmasked = 0;
	idev->gpio_held = 0;
	irqlab_wr(idev, IRQLAB_REG_GPIO_IRQ_EN, 0);
	irqlab_gpio_sync_types(idev);
	idev->gpio_stopped = true;
	raw_spin_unlock(&idev->gpio_lock);
}

/*
 * After the device stopped signalling and the handlers that saw it running
 * finished: no more callbacks, and nothing left for a work item to replay.
 */
void irqlab_gpio_stop(struct irqlab_dev *idev)
{
	cancel_work_sync(&idev->gpio_work);
	timer_delete_sync(&idev->key_timer);
	kfifo_reset(&idev->gpio_evq);
}

static void irqlab_key_free(void *data)
{
	struct irqlab_dev *idev = data;

	gpiochip_free_own_desc(idev->key_desc);
}

/* What every irqlab gpio chip has; irqlab_gpio_add() fills in the rest. */
static const struct gpio_chip irqlab_gpio_template = {
	.owner = THIS_MODULE,
	.base = -1,
	.can_sleep = false,
	.get = irqlab_gpio_get,
	.get_direction = irqlab_gpio_get_direction,
	.direction_input = irqlab_gpio_direction_input,
	.direction_output = irqlab_gpio_direction_output,
};

/* Register /dev/gpiochipN; devres removes it. */
int irqlab_gpio_add(struct irqlab_dev *idev)
{
	struct device *dev = &idev->pdev->dev;
	struct gpio_chip *gc = &idev->gc;
	struct gpio_irq_chip *girq = &gc->irq;
	const char **names;
	unsigned int i;
	int ret;

	if (!idev->gpio_lines)
		return 0;
	names = devm_kcalloc(dev, idev->gpio_lines, sizeof(*names), GFP_KERNEL);
	if (!names)
		return -ENOMEM;
	/* Unique names: gpiolib warns of, and looks up the first of, twins. */
	for (i = 0; i < idev->gpio_lines; i++) {
		names[i] = devm_kasprintf(dev, GFP_KERNEL, "irqlab%d-%u",
					  idev->index, i);
		if (!names[i])
			return -ENOMEM;
	}

	*gc = irqlab_gpio_template;
	gc->label = devm_kasprintf(dev, GFP_KERNEL, "irqlab-%s",
				   pci_name(idev->pdev));
	if (!gc->label)
		return -ENOMEM;
	gc->parent = dev;
	gc->ngpio = idev->gpio_lines;
	gc->names = names;

	gpio_irq_chip_set_chip(girq, &irqlab_gpio_irqchip);
	/* Nested: handle_nested_irq() from irqlab_gpio_work_fn(). */
	girq->threaded = true;
	girq->handler = handle_simple_irq;
	girq->default_type = IRQ_TYPE_NONE;
	girq->parent_handler = NULL;
	girq->num_parents = 0;
	girq->parents = NULL;

	ret = devm_gpiochip_add_data(dev, gc, idev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot add the gpio chip\n");

	if (idev->key_line < 0)
		return 0;
	idev->key_desc = gpiochip_request_own_desc(gc, idev->key_line, "irqlab-key",
						   GPIO_LOOKUP_FLAGS_DEFAULT,
						   GPIOD_IN);
	if (IS_ERR(idev->key_desc))
		return dev_err_probe(dev, PTR_ERR(idev->key_desc),
				     "cannot claim the key line\n");
	return devm_add_action_or_reset(dev, irqlab_key_free, idev);
}
