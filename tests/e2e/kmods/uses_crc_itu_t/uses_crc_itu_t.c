// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: a driver developer's module that needs a module of the guest
 * kernel the standard image does not ship (crc-itu-t, a library module).  Its
 * .modinfo says depends=crc-itu-t; the harness must ship that module in the
 * image and load it first.  The "crc" parameter shows the library really ran,
 * from the "seed" given at insmod (a developer's own module's parameter).
 */

#include <linux/crc-itu-t.h>
#include <linux/module.h>

static unsigned int seed;
module_param(seed, uint, 0444);
MODULE_PARM_DESC(seed, "the CRC's initial value (16 bits)");

static unsigned int crc;
module_param(crc, uint, 0444);
MODULE_PARM_DESC(crc, "crc_itu_t(seed, \"123456789\"), computed at load");

static int __init uses_crc_itu_t_init(void)
{
	static const u8 check[] = "123456789";

	crc = crc_itu_t((u16)seed, check, sizeof(check) - 1);
	return 0;
}
module_init(uses_crc_itu_t_init);

static void __exit uses_crc_itu_t_exit(void)
{
}
module_exit(uses_crc_itu_t_exit);

MODULE_DESCRIPTION("irqlab test: needs the kernel's crc-itu-t module");
MODULE_LICENSE("GPL");
