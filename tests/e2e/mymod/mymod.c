// SPDX-License-Identifier: GPL-2.0
/*
 * A driver developer's own module, as a test of "bring your own module": built
 * against the guest kernel (make -C $(irqlab kdir) M=$PWD) and loaded into the
 * guest by GuestConfig(extra_modules=[...]). It logs one line with its
 * parameter.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>

static char *greeting = "hello";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "word logged at load");

static int __init mymod_init(void)
{
	pr_info("mymod: %s\n", greeting);
	return 0;
}

static void __exit mymod_exit(void)
{
	pr_info("mymod: bye\n");
}

module_init(mymod_init);
module_exit(mymod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("irqlab e2e test: a module of the test's own");
