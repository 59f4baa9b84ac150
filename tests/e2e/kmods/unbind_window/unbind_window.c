// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: makes the unbind race of issue 16 item 1 certain to happen
 * and counts the GPIO work runs that start after unbind cancelled that work
 * (each of them may touch a removed irq domain, an unmapped BAR or freed
 * memory).  No delay in the driver itself:
 *
 * - a kprobe on queue_work_on() holds, once armed, the hard IRQ handler that
 *   is about to queue the driver's GPIO work (the work whose function is
 *   irqlab_gpio_work_fn): it spins, interrupts off, until unbind either
 *   waits for the handlers (synchronize_irq()) or has cancelled the GPIO
 *   work (cancel_work_sync() returned), at most hold_ms;
 * - a kprobe on irqlab_gpio_work_fn() counts the runs that start after that
 *   cancel ("late_runs").
 *
 * "state": 0 idle or armed, 1 holding, 2 released by unbind, 3 timed out.
 * Needs a second CPU for unbind while the handler is held.
 */

#include <linux/atomic.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/workqueue.h>

static bool armed;
module_param(armed, bool, 0644);
MODULE_PARM_DESC(armed, "hold the next handler that queues the GPIO work");
static unsigned int hold_ms = 5000;
module_param(hold_ms, uint, 0644);
MODULE_PARM_DESC(hold_ms, "longest hold");
static int state;
module_param(state, int, 0444);
MODULE_PARM_DESC(state, "0 idle, 1 holding, 2 released by unbind, 3 timed out");
static unsigned int late_runs;
module_param(late_runs, uint, 0444);
MODULE_PARM_DESC(late_runs, "GPIO work runs started after unbind cancelled it");

static atomic_t fired = ATOMIC_INIT(0);
static int release;
static int cancelled;
static unsigned long gpio_work_fn;

static bool is_gpio_work(unsigned long arg)
{
	struct work_struct *work = (struct work_struct *)arg;

	return gpio_work_fn && (unsigned long)work->func == gpio_work_fn;
}

static int unbind_window_queue(struct kprobe *p, struct pt_regs *regs)
{
	u64 deadline;

	if (!READ_ONCE(armed) || !in_hardirq() ||
	    !is_gpio_work(regs_get_kernel_argument(regs, 2)) ||
	    atomic_xchg(&fired, 1))
		return 0;
	WRITE_ONCE(state, 1);
	deadline = ktime_get_ns() + (u64)hold_ms * NSEC_PER_MSEC;
	while (!READ_ONCE(release) && ktime_get_ns() < deadline)
		cpu_relax();
	WRITE_ONCE(state, READ_ONCE(release) ? 2 : 3);
	return 0;
}

static struct kprobe unbind_window_queue_kp = {
	.symbol_name = "queue_work_on",
	.pre_handler = unbind_window_queue,
};

static int unbind_window_work(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(cancelled))
		WRITE_ONCE(late_runs, late_runs + 1);
	return 0;
}

static struct kprobe unbind_window_work_kp = {
	.symbol_name = "irqlab_gpio_work_fn",
	.pre_handler = unbind_window_work,
};

/* unbind waits for the running handlers: let the held one finish. */
static int unbind_window_sync(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(state) == 1)
		WRITE_ONCE(release, 1);
	return 0;
}

static struct kprobe unbind_window_sync_kp = {
	.symbol_name = "synchronize_irq",
	.pre_handler = unbind_window_sync,
};

struct cancel_data {
	bool gpio;
};

static int unbind_window_cancel_entry(struct kretprobe_instance *ri,
				      struct pt_regs *regs)
{
	struct cancel_data *d = (struct cancel_data *)ri->data;

	d->gpio = is_gpio_work(regs_get_kernel_argument(regs, 0));
	return 0;
}

static int unbind_window_cancel_ret(struct kretprobe_instance *ri,
				    struct pt_regs *regs)
{
	struct cancel_data *d = (struct cancel_data *)ri->data;

	if (d->gpio && READ_ONCE(armed)) {
		WRITE_ONCE(cancelled, 1);
		WRITE_ONCE(release, 1);
	}
	return 0;
}

static struct kretprobe unbind_window_cancel_krp = {
	.kp.symbol_name = "cancel_work_sync",
	.entry_handler = unbind_window_cancel_entry,
	.handler = unbind_window_cancel_ret,
	.data_size = sizeof(struct cancel_data),
	.maxactive = 16,
};

static int __init unbind_window_init(void)
{
	int ret;

	ret = register_kprobe(&unbind_window_work_kp);
	if (ret)
		return ret;
	gpio_work_fn = (unsigned long)unbind_window_work_kp.addr;
	ret = register_kprobe(&unbind_window_sync_kp);
	if (ret)
		goto err_work;
	ret = register_kretprobe(&unbind_window_cancel_krp);
	if (ret)
		goto err_sync;
	ret = register_kprobe(&unbind_window_queue_kp);
	if (ret)
		goto err_cancel;
	return 0;
err_cancel:
	unregister_kretprobe(&unbind_window_cancel_krp);
err_sync:
	unregister_kprobe(&unbind_window_sync_kp);
err_work:
	unregister_kprobe(&unbind_window_work_kp);
	return ret;
}

static void __exit unbind_window_exit(void)
{
	unregister_kprobe(&unbind_window_queue_kp);
	unregister_kretprobe(&unbind_window_cancel_krp);
	unregister_kprobe(&unbind_window_sync_kp);
	unregister_kprobe(&unbind_window_work_kp);
}

module_init(unbind_window_init);
module_exit(unbind_window_exit);
MODULE_DESCRIPTION("irqlab test: hold a GPIO-queueing handler across unbind");
MODULE_LICENSE("GPL");
