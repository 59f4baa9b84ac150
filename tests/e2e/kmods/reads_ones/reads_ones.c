// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a device that reads all ones, as a surprise-removed PCI
 * device does, for one process.  A kretprobe on ioread32() replaces what
 * every read made in the task context of process "pid" returns with ~0
 * (0 disarms); reads elsewhere (interrupt handlers, other processes) are
 * untouched.  "hits" counts the replaced reads.
 */

#include <linux/io.h>
#include <linux/kprobes.h>
#include <linux/limits.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/ptrace.h>
#include <linux/sched.h>

static int pid;
module_param(pid, int, 0644);
MODULE_PARM_DESC(pid, "the process whose ioread32() reads all ones; 0: none");
static unsigned int hits;
module_param(hits, uint, 0444);
MODULE_PARM_DESC(hits, "reads replaced");

static int reads_ones_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	int armed = READ_ONCE(pid);

	if (!armed || !in_task() || current->tgid != armed)
		return 0;
	regs_set_return_value(regs, U32_MAX);
	WRITE_ONCE(hits, hits + 1);
	return 0;
}

static struct kretprobe reads_ones_krp = {
	.kp.symbol_name = "ioread32",
	.handler = reads_ones_ret,
	.maxactive = 32,
};

static int __init reads_ones_init(void)
{
	return register_kretprobe(&reads_ones_krp);
}

static void __exit reads_ones_exit(void)
{
	unregister_kretprobe(&reads_ones_krp);
}

module_init(reads_ones_init);
module_exit(reads_ones_exit);
MODULE_DESCRIPTION("irqlab test: ioread32() reads all ones for one process");
MODULE_LICENSE("GPL");
