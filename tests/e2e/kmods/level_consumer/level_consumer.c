// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a level-triggered consumer of one line of a gpiochip, the
 * kind of consumer user space cannot be (the GPIO character device and sysfs
 * request edges only).  It requests the line's interrupt with
 * IRQF_TRIGGER_HIGH (or LOW) and counts the interrupts it gets in the
 * read-only parameter "count".  With notype=1 it requests the interrupt
 * without a trigger type (irq_set_type is not called); with noautoen=1 the
 * interrupt stays disabled (the line masked) after the request.  With
 * disable=1 the handler disables its interrupt (disable_irq_nosync(), as
 * drivers do until they serviced their device); writing to the parameter
 * "enable" enables it again (enable_irq()).
 *
 *   insmod level_consumer.ko chip=irqlab-0000:00:03.0 line=7 [low=1] [notype=1]
 *	[noautoen=1] [disable=1]
 */

#include <linux/atomic.h>
#include <linux/gpio/consumer.h>
#include <linux/gpio/driver.h>
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/string.h>

static char *chip;
module_param(chip, charp, 0444);
MODULE_PARM_DESC(chip, "label of the gpiochip");
static unsigned int line;
module_param(line, uint, 0444);
MODULE_PARM_DESC(line, "line offset in the chip");
static bool low;
module_param(low, bool, 0444);
MODULE_PARM_DESC(low, "trigger on low level instead of high");
static bool notype;
module_param(notype, bool, 0444);
MODULE_PARM_DESC(notype, "request without a trigger type");
static bool noautoen;
module_param(noautoen, bool, 0444);
MODULE_PARM_DESC(noautoen, "leave the interrupt disabled after the request");
static bool disable;
module_param(disable, bool, 0444);
MODULE_PARM_DESC(disable, "the handler disables the interrupt");
static unsigned int count;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "interrupts handled");

static int irq;
static atomic_t disabled = ATOMIC_INIT(0);

static irqreturn_t level_consumer_fn(int irq, void *data)
{
	WRITE_ONCE(count, READ_ONCE(count) + 1);
	if (disable) {
		atomic_inc(&disabled);
		disable_irq_nosync(irq);
	}
	return IRQ_HANDLED;
}

/* Undo one disable of the handler; nothing when it disabled nothing. */
static int level_consumer_enable(const char *val, const struct kernel_param *kp)
{
	if (!atomic_add_unless(&disabled, -1, 0))
		return -EINVAL;
	enable_irq(irq);
	return 0;
}

static const struct kernel_param_ops level_consumer_enable_ops = {
	.set = level_consumer_enable,
};
module_param_cb(enable, &level_consumer_enable_ops, NULL, 0200);
MODULE_PARM_DESC(enable, "write: enable the interrupt the handler disabled");

static int level_consumer_match(struct gpio_chip *gc, void *data)
{
	return gc->label && !strcmp(gc->label, data);
}

static int __init level_consumer_init(void)
{
	unsigned long flags = IRQF_ONESHOT;
	struct gpio_desc *desc;
	struct gpio_chip *gc;
	int ret;

	if (!chip)
		return -EINVAL;
	gc = gpiochip_find(chip, level_consumer_match);
	if (!gc)
		return -ENODEV;
	if (line >= gc->ngpio)
		return -EINVAL;
	desc = gpio_to_desc(gc->base + line);
	if (!desc)
		return -ENODEV;
	irq = gpiod_to_irq(desc);
	if (irq < 0)
		return irq;
	if (noautoen)
		flags |= IRQF_NO_AUTOEN;
	if (!notype)
		flags |= low ? IRQF_TRIGGER_LOW : IRQF_TRIGGER_HIGH;
	ret = request_threaded_irq(irq, NULL, level_consumer_fn, flags,
				   "level_consumer", &count);
	return ret;
}

static void __exit level_consumer_exit(void)
{
	free_irq(irq, &count);
}

module_init(level_consumer_init);
module_exit(level_consumer_exit);
MODULE_DESCRIPTION("irqlab test: a level-triggered consumer of a gpiochip line");
MODULE_LICENSE("GPL");
