// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a driver developer's bug, a NULL pointer written in module_init.
 * The kernel oopses and kills insmod; the guest lives on.  The harness must name
 * the oops (the kernel's BUG line), not report an insmod that exited -1.
 */

#include <linux/compiler.h>
#include <linux/module.h>

static int *target;

static int __init oops_on_load_init(void)
{
	pr_info("oops_on_load: about to write through a NULL pointer\n");
	WRITE_ONCE(*target, 1);
	return 0;
}
module_init(oops_on_load_init);

MODULE_DESCRIPTION("irqlab test: oopses in module_init");
MODULE_LICENSE("GPL");
