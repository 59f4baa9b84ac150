// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Test module: /dev/blocking_read, a character device as a driver under
 * development often has it: read() and no .poll handler (so poll(2) and
 * select(2) say it is always readable), a read() that waits for data whatever
 * O_NONBLOCK says.  It waits interruptibly (wait_event_interruptible: a
 * signal ends it, -ERESTARTSYS) or, with "uninterruptible" set, not at all
 * (wait_event: the reader sits in state D, deaf to SIGKILL too) until a
 * write() queues bytes; a read takes what is queued (at most its count).
 * "waiting" counts the reads waiting now.
 */

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

static bool uninterruptible;
module_param(uninterruptible, bool, 0644);
MODULE_PARM_DESC(uninterruptible, "read() waits with wait_event (state D) instead of wait_event_interruptible");
static int waiting;
module_param(waiting, int, 0444);
MODULE_PARM_DESC(waiting, "reads waiting for data now");

#define QUEUE_BYTES 64

static DEFINE_SPINLOCK(blocking_read_lock);
static DECLARE_WAIT_QUEUE_HEAD(blocking_read_wq);
static char queued[QUEUE_BYTES];
static size_t queued_len;

static bool blocking_read_has_data(void)
{
	return READ_ONCE(queued_len) > 0;
}

static ssize_t blocking_read_read(struct file *f, char __user *buf, size_t count,
				  loff_t *off)
{
	char out[QUEUE_BYTES];
	size_t n;
	int ret = 0;

	spin_lock(&blocking_read_lock);
	WRITE_ONCE(waiting, waiting + 1);
	spin_unlock(&blocking_read_lock);
	if (READ_ONCE(uninterruptible))
		wait_event(blocking_read_wq, blocking_read_has_data());
	else
		ret = wait_event_interruptible(blocking_read_wq, blocking_read_has_data());
	spin_lock(&blocking_read_lock);
	WRITE_ONCE(waiting, waiting - 1);
	if (ret) {
		spin_unlock(&blocking_read_lock);
		return ret;
	}
	n = min(count, queued_len);
	memcpy(out, queued, n);
	memmove(queued, queued + n, queued_len - n);
	WRITE_ONCE(queued_len, queued_len - n);
	spin_unlock(&blocking_read_lock);
	if (!n)
		return -EAGAIN; /* another reader took it */
	if (copy_to_user(buf, out, n))
		return -EFAULT;
	return n;
}

static ssize_t blocking_read_write(struct file *f, const char __user *buf, size_t count,
				   loff_t *off)
{
	char in[QUEUE_BYTES];
	size_t n = min_t(size_t, count, QUEUE_BYTES);

	if (copy_from_user(in, buf, n))
		return -EFAULT;
	spin_lock(&blocking_read_lock);
	n = min(n, QUEUE_BYTES - queued_len);
	memcpy(queued + queued_len, in, n);
	WRITE_ONCE(queued_len, queued_len + n);
	spin_unlock(&blocking_read_lock);
	if (!n)
		return -ENOSPC;
	wake_up(&blocking_read_wq);
	return n;
}

static const struct file_operations blocking_read_fops = {
	.owner = THIS_MODULE,
	.read = blocking_read_read,
	.write = blocking_read_write,
	.llseek = noop_llseek,
};

static struct miscdevice blocking_read_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "blocking_read",
	.fops = &blocking_read_fops,
	.mode = 0666,
};

static int __init blocking_read_init(void)
{
	return misc_register(&blocking_read_misc);
}

static void __exit blocking_read_exit(void)
{
	misc_deregister(&blocking_read_misc);
}

module_init(blocking_read_init);
module_exit(blocking_read_exit);
MODULE_DESCRIPTION("irqlab test: a char device whose read() has no .poll and waits for a write");
MODULE_LICENSE("GPL");
