// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: holds one reader of /dev/irqlabN inside the driver's read
 * path, between "the ring is empty" and "is the device dead?", until unbind
 * has killed the device, so that a record delivered meanwhile is certain to
 * land in that window (issue 16 item 7).  No delay in the driver itself:
 *
 * - a kprobe on the entry of irqlab_copy_records() (ftrace-based, so it may
 *   change the instruction pointer, as livepatch does) diverts the call to
 *   read_window_copy(), which runs the real function and then, when nothing
 *   was copied in the task whose tgid was written to "pid" (the first time
 *   only), sleeps until the device is killed (at most hold_ms);
 * - a kprobe on cdev_device_del() of an irqlab node, which unbind calls
 *   right after irqlab_kill() set "dead", ends the sleep.
 *
 * "state": 0 idle or armed, 1 holding, 2 released by the kill, 3 released by
 * the timeout.
 */

#include <linux/atomic.h>
#include <linux/cdev.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/wait.h>

static int pid;
module_param(pid, int, 0644);
MODULE_PARM_DESC(pid, "tgid of the reader to hold (0: nobody)");
static unsigned int hold_ms = 30000;
module_param(hold_ms, uint, 0644);
MODULE_PARM_DESC(hold_ms, "longest hold");
static int state;
module_param(state, int, 0444);
MODULE_PARM_DESC(state, "0 idle, 1 holding, 2 released by the kill, 3 timed out");

static DECLARE_WAIT_QUEUE_HEAD(read_window_wq);
static atomic_t fired = ATOMIC_INIT(0);
static int killed;
static struct task_struct *passthrough;

typedef ssize_t (*copy_records_fn)(void *f, char __user *buf, size_t want);
static copy_records_fn copy_records;

static ssize_t read_window_copy(void *f, char __user *buf, size_t want)
{
	ssize_t ret;

	WRITE_ONCE(passthrough, current);
	ret = copy_records(f, buf, want);
	WRITE_ONCE(passthrough, NULL);
	if (ret || current->tgid != READ_ONCE(pid) || atomic_xchg(&fired, 1))
		return ret;
	WRITE_ONCE(state, 1);
	wait_event_timeout(read_window_wq, READ_ONCE(killed),
			   msecs_to_jiffies(hold_ms));
	WRITE_ONCE(state, READ_ONCE(killed) ? 2 : 3);
	return ret;
}

static int read_window_divert(struct kprobe *p, struct pt_regs *regs)
{
	if (!READ_ONCE(pid) || READ_ONCE(passthrough) == current)
		return 0;
	instruction_pointer_set(regs, (unsigned long)read_window_copy);
	return 1;
}

/* A post handler makes kprobes use its IP-modifying ftrace ops. */
static void read_window_post(struct kprobe *p, struct pt_regs *regs,
			     unsigned long flags)
{
}

static struct kprobe read_window_copy_kp = {
	.symbol_name = "irqlab_copy_records",
	.pre_handler = read_window_divert,
	.post_handler = read_window_post,
};

/* The first node of irqlab goes (gpiolib's chip node goes before, skip it). */
static int read_window_kill(struct kprobe *p, struct pt_regs *regs)
{
	struct cdev *cdev = (struct cdev *)regs_get_kernel_argument(regs, 0);

	if (!cdev->owner || strcmp(cdev->owner->name, "irqlab"))
		return 0;
	WRITE_ONCE(killed, 1);
	wake_up(&read_window_wq);
	return 0;
}

static struct kprobe read_window_kill_kp = {
	.symbol_name = "cdev_device_del",
	.pre_handler = read_window_kill,
};

static int __init read_window_init(void)
{
	int ret;

	ret = register_kprobe(&read_window_kill_kp);
	if (ret)
		return ret;
	ret = register_kprobe(&read_window_copy_kp);
	if (ret)
		goto err;
	if (!kprobe_ftrace(&read_window_copy_kp)) {
		/* An int3 probe cannot divert the call. */
		unregister_kprobe(&read_window_copy_kp);
		ret = -EOPNOTSUPP;
		goto err;
	}
	copy_records = (copy_records_fn)read_window_copy_kp.addr;
	return 0;
err:
	unregister_kprobe(&read_window_kill_kp);
	return ret;
}

static void __exit read_window_exit(void)
{
	unregister_kprobe(&read_window_copy_kp);
	unregister_kprobe(&read_window_kill_kp);
}

module_init(read_window_init);
module_exit(read_window_exit);
MODULE_DESCRIPTION("irqlab test: hold a reader between an empty ring and the dead check");
MODULE_LICENSE("GPL");
