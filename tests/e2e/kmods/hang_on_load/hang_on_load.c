// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a module_init that never returns, chosen by the parameter "how":
 *   sleep  it sleeps forever: insmod never returns, the guest lives on
 *   spin   it spins forever with interrupts off: on a one-vCPU guest, the
 *          guest is frozen (no SSH, no agent)
 *   busy   it spins forever with preemption off, interrupts on: on a one-vCPU
 *          guest no process runs again, and the kernel's soft lockup detector
 *          says so on the console
 * The harness must name the insmod that did not return and say whether the
 * guest still answers, not report an SSH timeout of its own step script.
 */

#include <linux/delay.h>
#include <linux/irqflags.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/processor.h>
#include <linux/string.h>

static char *how = "sleep";
module_param(how, charp, 0444);
MODULE_PARM_DESC(how, "sleep (default), spin or busy");

static int __init hang_on_load_init(void)
{
	pr_err("hang_on_load: how=%s, never returning\n", how); /* on the console */
	if (!strcmp(how, "spin")) {
		local_irq_disable();
		for (;;)
			cpu_relax();
	}
	if (!strcmp(how, "busy")) {
		preempt_disable();
		for (;;)
			cpu_relax();
	}
	for (;;)
		msleep(1000);
	return 0;
}
module_init(hang_on_load_init);

MODULE_DESCRIPTION("irqlab test: a module_init that never returns");
MODULE_LICENSE("GPL");
