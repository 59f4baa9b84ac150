// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a consumer of one line of a gpiochip that sets the line's
 * interrupt type (irq_set_irq_type()) in the window between the driver
 * stopping the device at unbind (irqlab_gpio_stop() returned) and the gpio
 * chip's removal, where a consumer can still reach the irq_chip.  A kretprobe
 * on irqlab_gpio_stop() makes the window certain, without any delay.
 *
 * "result": the return of irq_set_irq_type() in the window, 1 before it ran.
 *
 *   insmod stop_window.ko chip=irqlab-0000:00:03.0 line=7 [type=3]
 */

#include <linux/gpio/consumer.h>
#include <linux/gpio/driver.h>
#include <linux/irq.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/string.h>

static char *chip;
module_param(chip, charp, 0444);
MODULE_PARM_DESC(chip, "label of the gpiochip");
static unsigned int line;
module_param(line, uint, 0444);
MODULE_PARM_DESC(line, "line offset in the chip");
static unsigned int type = IRQ_TYPE_EDGE_BOTH;
module_param(type, uint, 0444);
MODULE_PARM_DESC(type, "IRQ_TYPE_* set in the window");
static int result = 1;
module_param(result, int, 0444);
MODULE_PARM_DESC(result, "irq_set_irq_type() in the window; 1: not run");

static int irq;

static int stop_window_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	if (READ_ONCE(result) == 1)
		WRITE_ONCE(result, irq_set_irq_type(irq, type));
	return 0;
}

static struct kretprobe stop_window_krp = {
	.kp.symbol_name = "irqlab_gpio_stop",
	.handler = stop_window_ret,
	.maxactive = 4,
};

static int stop_window_match(struct gpio_chip *gc, void *data)
{
	return gc->label && !strcmp(gc->label, data);
}

static int __init stop_window_init(void)
{
	struct gpio_desc *desc;
	struct gpio_chip *gc;

	if (!chip)
		return -EINVAL;
	gc = gpiochip_find(chip, stop_window_match);
	if (!gc)
		return -ENODEV;
	if (line >= gc->ngpio)
		return -EINVAL;
	desc = gpio_to_desc(gc->base + line);
	if (!desc)
		return -ENODEV;
	irq = gpiod_to_irq(desc);	/* maps the line's interrupt */
	if (irq < 0)
		return irq;
	return register_kretprobe(&stop_window_krp);
}

static void __exit stop_window_exit(void)
{
	unregister_kretprobe(&stop_window_krp);
}

module_init(stop_window_init);
module_exit(stop_window_exit);
MODULE_DESCRIPTION("irqlab test: set a line's irq type between stop and gpiochip removal");
MODULE_LICENSE("GPL");
