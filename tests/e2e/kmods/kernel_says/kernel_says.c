// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: the kernel says a line of the test's choosing, as a kernel message
 * (facility 0, LOG_KERN), which a line written to /dev/kmsg never is (userspace's
 * records are facility 1 or more).  Each write of the parameter "line"
 * (/sys/module/kernel_says/parameters/line) prints it once at the loglevel in
 * "level" (default 4, KERN_WARNING): a stand-in for a kernel report (a WARNING: or
 * BUG: line) without a bug to cause it.
 */

#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/module.h>
#include <linux/printk.h>

static int level = 4;
module_param(level, int, 0644);
MODULE_PARM_DESC(level, "loglevel of the lines said (0-7, default 4)");

static int kernel_says_set(const char *val, const struct kernel_param *kp)
{
	int n = strcspn(val, "\n");

	switch (clamp(READ_ONCE(level), 0, 7)) {
	case 0: pr_emerg("%.*s\n", n, val); break;
	case 1: pr_alert("%.*s\n", n, val); break;
	case 2: pr_crit("%.*s\n", n, val); break;
	case 3: pr_err("%.*s\n", n, val); break;
	case 4: pr_warn("%.*s\n", n, val); break;
	case 5: pr_notice("%.*s\n", n, val); break;
	case 6: pr_info("%.*s\n", n, val); break;
	default: printk(KERN_DEBUG "%.*s\n", n, val); break;
	}
	return 0;
}

static const struct kernel_param_ops kernel_says_ops = {
	.set = kernel_says_set,
	.get = NULL,
};
module_param_cb(line, &kernel_says_ops, NULL, 0200);
MODULE_PARM_DESC(line, "written: the kernel prints it (at the loglevel \"level\")");

static int __init kernel_says_init(void)
{
	return 0;
}
module_init(kernel_says_init);

static void __exit kernel_says_exit(void)
{
}
module_exit(kernel_says_exit);

MODULE_DESCRIPTION("irqlab test: prints the lines written to its parameter as the kernel's");
MODULE_LICENSE("GPL");
