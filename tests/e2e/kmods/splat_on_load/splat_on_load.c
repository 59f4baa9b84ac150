// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a splat in module_init, chosen by the parameter "how":
 *   panic  the kernel panics under insmod (the guest dies: the harness must name
 *          the panic and the insmod, not its own script)
 *   warn   a WARN(): the module loads and the guest lives on, tainted (a test
 *          that loads it must not pass as if nothing happened)
 * Anything else fails the load with -EINVAL, after "lines" lines of chatter (a driver
 * that dumps its registers as it gives up: more than the kernel log's ring holds).
 */

#include <linux/bug.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/string.h>

static char *how = "warn";
module_param(how, charp, 0444);
MODULE_PARM_DESC(how, "panic or warn (default)");

static int lines;
module_param(lines, int, 0444);
MODULE_PARM_DESC(lines, "lines logged before a load that fails (default 0)");

static int __init splat_on_load_init(void)
{
	int i;

	if (!strcmp(how, "panic"))
		panic("splat_on_load: panic in module_init");
	if (!strcmp(how, "warn")) {
		WARN(1, "splat_on_load: WARN in module_init");
		return 0;
	}
	for (i = 0; i < lines; i++)
		pr_info("splat_on_load: chatter %d of %d: 0123456789abcdef0123456789abcdef\n",
			i + 1, lines);
	pr_err("splat_on_load: how=%s: not panic or warn\n", how);
	return -EINVAL;
}
module_init(splat_on_load_init);

static void __exit splat_on_load_exit(void)
{
}
module_exit(splat_on_load_exit);

MODULE_DESCRIPTION("irqlab test: panics or WARNs in module_init");
MODULE_LICENSE("GPL");
