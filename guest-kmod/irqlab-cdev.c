// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * irqlab: the device nodes.
 *
 * /dev/irqlabN        event records, one ring per open file: blocking and
 *                     O_NONBLOCK read, poll/select/epoll, SIGIO (fasync),
 *                     eventfd, ACK by write() or ioctl.
 * /dev/irqlabN-count  the counting interrupt file: read() returns a u32, the
 *                     number of device events since the previous read.
 *
 * See README.md for the userspace view.
 */

#include <linux/atomic.h>
#include <linux/eventfd.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "irqlab-drv.h"

/* Records copied to userspace per locked step of read(). */
#define IRQLAB_READ_CHUNK	8
#define IRQLAB_RING_MAX		65536

/* One open file of /dev/irqlabN.  All fields but @read_lock under idev->lock. */
struct irqlab_file {
	struct irqlab_dev *idev;
	struct list_head node;		/* in idev->files */
	wait_queue_head_t wait;
	struct mutex read_lock;		/* one consumer of @ring at a time */
	DECLARE_KFIFO_PTR(ring, struct irqlab_event);
	struct irqlab_event *ring_buf;
	unsigned int ring_size;
	struct fasync_struct *fasync;
	struct eventfd_ctx *efd;
	u32 sources;			/* BIT(IRQLAB_SRC_*) this file receives */
	u32 lost;			/* lost since the last queued record */
	unsigned int batch;		/* queued in the current delivery */
	u64 delivered;
	u64 nread;
	u64 lost_total;
	u64 overflows;
	u64 flushed;
};

/* One open file of /dev/irqlabN-count. */
struct irqlab_counter {
	struct irqlab_dev *idev;
	struct list_head node;		/* in idev->counters, under idev->lock */
	wait_queue_head_t wait;
	atomic_t count;
};

static struct class irqlab_class = {
	.name = "irqlab",
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 4, 0)
	.owner = THIS_MODULE,	/* gone in 6.4 */
#endif
};

static dev_t irqlab_devt;

static int irqlab_ring_size_set(const char *val, const struct kernel_param *kp)
{
	unsigned int n;
	int ret;

	ret = kstrtouint(val, 0, &n);
	if (ret)
		return ret;
	if (n < 2 || n > IRQLAB_RING_MAX || !is_power_of_2(n))
		return -EINVAL;
	*(unsigned int *)kp->arg = n;
	return 0;
}

static const struct kernel_param_ops irqlab_ring_size_ops = {
	.set = irqlab_ring_size_set,
	.get = param_get_uint,
};

static unsigned int ring_size = 256;
module_param_cb(ring_size, &irqlab_ring_size_ops, &ring_size, 0644);
__MODULE_PARM_TYPE(ring_size, "uint");	/* modinfo's type, as module_param() gives */
MODULE_PARM_DESC(ring_size,
		 "event records per open file, a power of two in [2, 65536] (default 256); read at open()");

/* Add @n to the eventfd counter (6.8 dropped the count argument). */
static void irqlab_eventfd_add(struct eventfd_ctx *ctx, unsigned int n)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	while (n--)
		eventfd_signal(ctx);
#else
	eventfd_signal(ctx, n);
#endif
}

static u32 irqlab_sat_add(u32 a, u32 b)
{
	return a > U32_MAX - b ? U32_MAX : a + b;
}

/* --- delivery (hardirq, IRQ thread or work item) ------------------------ */

/* Queue one staged event to @f.  Called with idev->lock held. */
static void irqlab_file_push(struct irqlab_file *f, const struct irqlab_event *ev)
{
	struct irqlab_event rec;

	/* Staging losses concern every file, whatever the sources it wants. */
	f->lost = irqlab_sat_add(f->lost, ev->lost);
	if (ev->source < IRQLAB_NUM_SOURCES && !(f->sources & BIT(ev->source)))
		return;

	/* Ring full: drop the newest; the next queued record reports it. */
	if (kfifo_is_full(&f->ring)) {
		f->lost = irqlab_sat_add(f->lost, 1);
		f->lost_total++;
		return;
	}

	rec = *ev;
	rec.lost = f->lost;
	rec.flags &= ~IRQLAB_EVF_OVERFLOW;
	if (rec.lost) {
		rec.flags |= IRQLAB_EVF_OVERFLOW;
		f->overflows++;
	}
	f->lost = 0;
	kfifo_put(&f->ring, rec);
	f->delivered++;
	f->batch++;
}

/* Called with idev->lock held. */
static void irqlab_file_notify(struct irqlab_file *f)
{
	if (!f->batch)
		return;
	wake_up_interruptible_poll(&f->wait, EPOLLIN | EPOLLRDNORM);
	kill_fasync(&f->fasync, SIGIO, POLL_IN);
	if (f->efd)
		irqlab_eventfd_add(f->efd, f->batch);
	f->batch = 0;
}

/*
 * Hand every staged event to the open files and wake them up.  Runs where the
 * "wakeup" parameter says: in the hard IRQ handler, the IRQ thread or a work
 * item; concurrent runs (one per MSI-X vector) serialise on idev->lock, which
 * also makes this the single consumer of the staging kfifo.
 */
void irqlab_deliver(struct irqlab_dev *idev)
{
	struct irqlab_counter *c;
	struct irqlab_file *f;
	struct irqlab_event ev;
	unsigned long flags;
	unsigned int n = 0;
	u64 now;

	spin_lock_irqsave(&idev->lock, flags);
	idev->deliveries++;
	now = ktime_get_ns();
	while (kfifo_get(&idev->stage, &ev)) {
		if (idev->dead)
			continue;
		ev.wake_ns = now;
		list_for_each_entry(f, &idev->files, node)
			irqlab_file_push(f, &ev);
		n++;
	}
	if (n) {
		list_for_each_entry(f, &idev->files, node)
			irqlab_file_notify(f);
		list_for_each_entry(c, &idev->counters, node) {
			atomic_add(n, &c->count);
			wake_up_interruptible_poll(&c->wait, EPOLLIN | EPOLLRDNORM);
		}
	}
	spin_unlock_irqrestore(&idev->lock, flags);
}

/*
 * The device is going away: from now on reads return what is buffered and
 * then -ENODEV; blocked readers, pollers and SIGIO owners are told now.
 */
static void irqlab_kill(struct irqlab_dev *idev)
{
	struct irqlab_counter *c;
	struct irqlab_file *f;
	unsigned long flags;

	mutex_lock(&idev->hw_lock);
	spin_lock_irqsave(&idev->lock, flags);
	WRITE_ONCE(idev->dead, true);
	list_for_each_entry(f, &idev->files, node) {
		wake_up_interruptible_all(&f->wait);
		kill_fasync(&f->fasync, SIGIO, POLL_HUP);
		/* An eventfd has no hangup: wake its waiter to find -ENODEV. */
		if (f->efd)
			irqlab_eventfd_add(f->efd, 1);
	}
	list_for_each_entry(c, &idev->counters, node)
		wake_up_interruptible_all(&c->wait);
	spin_unlock_irqrestore(&idev->lock, flags);
	mutex_unlock(&idev->hw_lock);
}

/* --- /dev/irqlabN --------------------------------------------------------- */

static int irqlab_ev_open(struct inode *inode, struct file *filp)
{
	struct irqlab_dev *idev = container_of(inode->i_cdev, struct irqlab_dev,
					       ev_cdev);
	struct irqlab_file *f;
	int ret;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->idev = idev;
	f->sources = IRQLAB_SRC_ALL;
	f->ring_size = READ_ONCE(ring_size);
	init_waitqueue_head(&f->wait);
	mutex_init(&f->read_lock);
	f->ring_buf = kvcalloc(f->ring_size, sizeof(*f->ring_buf), GFP_KERNEL);
	if (!f->ring_buf) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = kfifo_init(&f->ring, f->ring_buf,
			 f->ring_size * sizeof(*f->ring_buf));
	if (ret)
		goto err_ring;

	spin_lock_irq(&idev->lock);
	if (idev->dead)
		ret = -ENODEV;
	else
		list_add_tail(&f->node, &idev->files);
	spin_unlock_irq(&idev->lock);
	if (ret)
		goto err_ring;

	filp->private_data = f;
	return stream_open(inode, filp);

err_ring:
	kvfree(f->ring_buf);
err_free:
	kfree(f);
	return ret;
}

static int irqlab_ev_release(struct inode *inode, struct file *filp)
{
	struct irqlab_file *f = filp->private_data;
	struct irqlab_dev *idev = f->idev;

	/* ->fasync(-1, filp, 0) has already run if FASYNC was set. */
	spin_lock_irq(&idev->lock);
	list_del(&f->node);
	spin_unlock_irq(&idev->lock);
	if (f->efd)
		eventfd_ctx_put(f->efd);
	mutex_destroy(&f->read_lock);
	kvfree(f->ring_buf);
	kfree(f);
	return 0;
}

static bool irqlab_file_readable(struct irqlab_file *f)
{
	struct irqlab_dev *idev = f->idev;
	bool ret;

	spin_lock_irq(&idev->lock);
	ret = !kfifo_is_empty(&f->ring) || idev->dead;
	spin_unlock_irq(&idev->lock);
	return ret;
}

/*
 * Copy up to @want records to userspace.  Records leave the ring only once
 * copied, so a fault loses nothing.  -ENODEV when the ring is empty and the
 * device dead, both seen in one critical section: a record delivered just
 * before the kill is read first.  Called with f->read_lock held: the ring
 * head cannot move under us (the producer only appends).
 */
static ssize_t irqlab_copy_records(struct irqlab_file *f, char __user *buf,
				   size_t want)
{
	struct irqlab_event recs[IRQLAB_READ_CHUNK];
	struct irqlab_dev *idev = f->idev;
	size_t done = 0;
	unsigned int n;

	while (done < want) {
		spin_lock_irq(&idev->lock);
		n = kfifo_out_peek(&f->ring, recs,
				   min_t(size_t, want - done, ARRAY_SIZE(recs)));
		if (!n && !done && idev->dead) {
			spin_unlock_irq(&idev->lock);
			return -ENODEV;
		}
		spin_unlock_irq(&idev->lock);
		if (!n)
			break;
		if (copy_to_user(buf + done * sizeof(recs[0]), recs,
				 n * sizeof(recs[0])))
			return done ? (ssize_t)(done * sizeof(recs[0])) : -EFAULT;
		spin_lock_irq(&idev->lock);
		n = kfifo_out(&f->ring, recs, n);
		f->nread += n;
		spin_unlock_irq(&idev->lock);
		done += n;
	}
	return done * sizeof(recs[0]);
}

/*
 * Take f->read_lock.  Another reader of the file may hold it across a
 * copy_to_user() that faults and sleeps: O_NONBLOCK does not wait for it.
 */
static int irqlab_read_lock(struct irqlab_file *f, struct file *filp)
{
	if (filp->f_flags & O_NONBLOCK)
		return mutex_trylock(&f->read_lock) ? 0 : -EAGAIN;
	return mutex_lock_interruptible(&f->read_lock) ? -ERESTARTSYS : 0;
}

static ssize_t irqlab_ev_read(struct file *filp, char __user *buf,
			      size_t count, loff_t *ppos)
{
	struct irqlab_file *f = filp->private_data;
	size_t want = count / sizeof(struct irqlab_event);
	ssize_t ret;

	if (!want)
		return -EINVAL;
	for (;;) {
		ret = irqlab_read_lock(f, filp);
		if (ret)
			return ret;
		ret = irqlab_copy_records(f, buf, want);
		mutex_unlock(&f->read_lock);
		if (ret)
			return ret;
		if (filp->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(f->wait, irqlab_file_readable(f));
		if (ret)
			return ret;
	}
}

/*
 * Each u32 written is the sequence number of an event to acknowledge.  A
 * signal ends a long write with the ACKs done so far (a short count).
 */
static ssize_t irqlab_ev_write(struct file *filp, const char __user *buf,
			       size_t count, loff_t *ppos)
{
	struct irqlab_file *f = filp->private_data;
	size_t done;
	u32 seq;
	int ret;

	if (!count || count % sizeof(seq))
		return -EINVAL;
	for (done = 0; done < count; done += sizeof(seq)) {
		if (signal_pending(current))
			return done ? (ssize_t)done : -ERESTARTSYS;
		cond_resched();
		if (copy_from_user(&seq, buf + done, sizeof(seq)))
			return done ? (ssize_t)done : -EFAULT;
		/* A sequence the device does not know is counted, not fatal. */
		ret = irqlab_hw_ack(f->idev, seq, NULL);
		if (ret == -ENODEV)
			return done ? (ssize_t)done : ret;
	}
	return count;
}

static __poll_t irqlab_ev_poll(struct file *filp, poll_table *pt)
{
	struct irqlab_file *f = filp->private_data;
	struct irqlab_dev *idev = f->idev;
	unsigned long flags;
	__poll_t mask = 0;

	poll_wait(filp, &f->wait, pt);
	spin_lock_irqsave(&idev->lock, flags);
	if (!kfifo_is_empty(&f->ring))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (idev->dead)
		mask |= EPOLLHUP | EPOLLERR;
	else
		mask |= EPOLLOUT | EPOLLWRNORM;
	spin_unlock_irqrestore(&idev->lock, flags);
	return mask;
}

static int irqlab_ev_fasync(int fd, struct file *filp, int on)
{
	struct irqlab_file *f = filp->private_data;

	return fasync_helper(fd, filp, on, &f->fasync);
}

static long irqlab_ioc_ack(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_ack ack;
	int ret;

	if (copy_from_user(&ack, uarg, sizeof(ack)))
		return -EFAULT;
	if (ack.flags)
		return -EINVAL;
	ret = irqlab_hw_ack(f->idev, ack.seq, &ack.latency_ns);
	if (ret)
		return ret;
	return copy_to_user(uarg, &ack, sizeof(ack)) ? -EFAULT : 0;
}

static long irqlab_ioc_get_stats(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_dev *idev = f->idev;
	struct irqlab_stats st = { };

	irqlab_hw_stats(idev, &st);
	spin_lock_irq(&idev->lock);
	st.delivered = f->delivered;
	st.read = f->nread;
	st.lost = f->lost_total;
	st.overflows = f->overflows;
	st.flushed = f->flushed;
	st.queued = kfifo_len(&f->ring);
	spin_unlock_irq(&idev->lock);
	return copy_to_user(uarg, &st, sizeof(st)) ? -EFAULT : 0;
}

static long irqlab_ioc_set_eventfd(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_dev *idev = f->idev;
	struct eventfd_ctx *ctx = NULL;
	struct eventfd_ctx *old;
	s32 fd;

	if (get_user(fd, (s32 __user *)uarg))
		return -EFAULT;
	if (fd < -1)
		return -EINVAL;
	if (fd >= 0) {
		ctx = eventfd_ctx_fdget(fd);
		if (IS_ERR(ctx))
			return PTR_ERR(ctx);
	}
	spin_lock_irq(&idev->lock);
	/* Once the device is gone nothing would ever signal it. */
	if (ctx && idev->dead) {
		spin_unlock_irq(&idev->lock);
		eventfd_ctx_put(ctx);
		return -ENODEV;
	}
	old = f->efd;
	f->efd = ctx;
	spin_unlock_irq(&idev->lock);
	if (old)
		eventfd_ctx_put(old);
	return 0;
}

static long irqlab_ioc_get_info(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_dev *idev = f->idev;
	struct irqlab_info info = {
		.abi_version = IRQLAB_ABI_VERSION,
		.record_size = sizeof(struct irqlab_event),
		.device_id = idev->id,
		.features = idev->features,
		.index = idev->index,
		.irq_mode = idev->irq_mode,
		.nvecs = idev->nvecs,
		.wakeup = idev->wakeup,
		.gpio_lines = idev->gpio_lines,
		.evq_depth = idev->evq_depth,
		.fifo_depth = idev->fifo_depth,
		.ring_size = f->ring_size,
		.irq_sources = idev->irq_sources,
	};

	spin_lock_irq(&idev->lock);
	info.sources = f->sources;
	spin_unlock_irq(&idev->lock);
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long irqlab_ioc_set_sources(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_dev *idev = f->idev;
	u32 mask;

	if (get_user(mask, (u32 __user *)uarg))
		return -EFAULT;
	if (mask & ~IRQLAB_SRC_ALL)
		return -EINVAL;
	spin_lock_irq(&idev->lock);
	f->sources = mask;
	spin_unlock_irq(&idev->lock);
	return 0;
}

static long irqlab_ioc_flush(struct irqlab_file *f, struct file *filp)
{
	struct irqlab_dev *idev = f->idev;
	unsigned int n;
	int ret;

	/* Not while a reader is between peeking and consuming the ring. */
	ret = irqlab_read_lock(f, filp);
	if (ret)
		return ret;
	spin_lock_irq(&idev->lock);
	n = kfifo_len(&f->ring);
	kfifo_reset_out(&f->ring);
	f->flushed += n;
	spin_unlock_irq(&idev->lock);
	mutex_unlock(&f->read_lock);
	return n;
}

/*
 * One device clock reading bracketed by two CLOCK_MONOTONIC readings (the
 * device samples its clock at the TIME_LO read).  Under hw_lock, as ACK:
 * while it is held and @dead is false the nodes are not deleted, so BAR0 is
 * still mapped.  Under evq_lock too: the hard IRQ handler reads TIME_LO/HI,
 * and TIME_LO latches TIME_HI.
 */
static long irqlab_ioc_get_clock(struct irqlab_file *f, void __user *uarg)
{
	struct irqlab_dev *idev = f->idev;
	struct irqlab_clock clk = { };
	unsigned long flags;
	int ret = 0;
	u32 lo;

	mutex_lock(&idev->hw_lock);
	spin_lock_irqsave(&idev->evq_lock, flags);
	if (idev->dead || idev->hw_stopped) {
		ret = -ENODEV;
	} else {
		clk.mono_before_ns = ktime_get_ns();
		lo = irqlab_rd(idev, IRQLAB_REG_TIME_LO);
		clk.mono_after_ns = ktime_get_ns();
		clk.dev_ns = ((u64)irqlab_rd(idev, IRQLAB_REG_TIME_HI) << 32) | lo;
	}
	spin_unlock_irqrestore(&idev->evq_lock, flags);
	mutex_unlock(&idev->hw_lock);
	if (ret)
		return ret;
	return copy_to_user(uarg, &clk, sizeof(clk)) ? -EFAULT : 0;
}

static long irqlab_ev_ioctl(struct file *filp, unsigned int cmd,
			    unsigned long arg)
{
	struct irqlab_file *f = filp->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case IRQLAB_IOC_ACK:
		return irqlab_ioc_ack(f, uarg);
	case IRQLAB_IOC_GET_STATS:
		return irqlab_ioc_get_stats(f, uarg);
	case IRQLAB_IOC_SET_EVENTFD:
		return irqlab_ioc_set_eventfd(f, uarg);
	case IRQLAB_IOC_GET_INFO:
		return irqlab_ioc_get_info(f, uarg);
	case IRQLAB_IOC_SET_SOURCES:
		return irqlab_ioc_set_sources(f, uarg);
	case IRQLAB_IOC_FLUSH:
		return irqlab_ioc_flush(f, filp);
	case IRQLAB_IOC_GET_CLOCK:
		return irqlab_ioc_get_clock(f, uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations irqlab_ev_fops = {
	.owner = THIS_MODULE,
	.open = irqlab_ev_open,
	.release = irqlab_ev_release,
	.read = irqlab_ev_read,
	.write = irqlab_ev_write,
	.poll = irqlab_ev_poll,
	.fasync = irqlab_ev_fasync,
	.unlocked_ioctl = irqlab_ev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,	/* stream_open(): lseek gives -ESPIPE */
};

/* --- /dev/irqlabN-count --------------------------------------------------- */

static int irqlab_cnt_open(struct inode *inode, struct file *filp)
{
	struct irqlab_dev *idev = container_of(inode->i_cdev, struct irqlab_dev,
					       cnt_cdev);
	struct irqlab_counter *c;
	int ret = 0;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	c->idev = idev;
	init_waitqueue_head(&c->wait);
	atomic_set(&c->count, 0);

	spin_lock_irq(&idev->lock);
	if (idev->dead)
		ret = -ENODEV;
	else
		list_add_tail(&c->node, &idev->counters);
	spin_unlock_irq(&idev->lock);
	if (ret) {
		kfree(c);
		return ret;
	}
	filp->private_data = c;
	return stream_open(inode, filp);
}

static int irqlab_cnt_release(struct inode *inode, struct file *filp)
{
	struct irqlab_counter *c = filp->private_data;

	spin_lock_irq(&c->idev->lock);
	list_del(&c->node);
	spin_unlock_irq(&c->idev->lock);
	kfree(c);
	return 0;
}

static ssize_t irqlab_cnt_read(struct file *filp, char __user *buf,
			       size_t count, loff_t *ppos)
{
	struct irqlab_counter *c = filp->private_data;
	struct irqlab_dev *idev = c->idev;
	bool dead;
	u32 n;
	int ret;

	if (count < sizeof(n))
		return -EINVAL;
	for (;;) {
		/* One look under the lock: a count added before the kill wins. */
		spin_lock_irq(&idev->lock);
		n = atomic_xchg(&c->count, 0);
		dead = idev->dead;
		spin_unlock_irq(&idev->lock);
		if (n)
			break;
		if (dead)
			return -ENODEV;
		if (filp->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(c->wait, atomic_read(&c->count) ||
					       READ_ONCE(c->idev->dead));
		if (ret)
			return ret;
	}
	if (copy_to_user(buf, &n, sizeof(n))) {
		atomic_add(n, &c->count);
		return -EFAULT;
	}
	return sizeof(n);
}

static __poll_t irqlab_cnt_poll(struct file *filp, poll_table *pt)
{
	struct irqlab_counter *c = filp->private_data;
	__poll_t mask = 0;

	poll_wait(filp, &c->wait, pt);
	if (atomic_read(&c->count))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(c->idev->dead))
		mask |= EPOLLHUP | EPOLLERR;
	return mask;
}

static const struct file_operations irqlab_cnt_fops = {
	.owner = THIS_MODULE,
	.open = irqlab_cnt_open,
	.release = irqlab_cnt_release,
	.read = irqlab_cnt_read,
	.poll = irqlab_cnt_poll,
	.llseek = noop_llseek,	/* stream_open(): lseek gives -ESPIPE */
};

/* --- node registration ---------------------------------------------------- */

static void irqlab_node_release(struct device *dev)
{
	irqlab_put(dev_get_drvdata(dev));
}

static void irqlab_node_init(struct irqlab_dev *idev, struct device *dev,
			     struct cdev *cdev,
			     const struct file_operations *fops,
			     unsigned int minor)
{
	device_initialize(dev);
	dev->class = &irqlab_class;
	dev->parent = &idev->pdev->dev;
	dev->devt = MKDEV(MAJOR(irqlab_devt),
			  idev->index * IRQLAB_MINORS_PER_DEV + minor);
	dev->release = irqlab_node_release;
	dev_set_drvdata(dev, idev);
	kref_get(&idev->ref);
	cdev_init(cdev, fops);
	cdev->owner = THIS_MODULE;
}

static void irqlab_nodes_del(void *data)
{
	struct irqlab_dev *idev = data;

	irqlab_kill(idev);
	cdev_device_del(&idev->cnt_cdev, &idev->cnt_dev);
	cdev_device_del(&idev->ev_cdev, &idev->ev_dev);
	put_device(&idev->cnt_dev);
	put_device(&idev->ev_dev);
}

/* Create /dev/irqlabN and /dev/irqlabN-count; devres deletes them. */
int irqlab_nodes_add(struct irqlab_dev *idev)
{
	int ret;

	irqlab_node_init(idev, &idev->ev_dev, &idev->ev_cdev, &irqlab_ev_fops, 0);
	irqlab_node_init(idev, &idev->cnt_dev, &idev->cnt_cdev, &irqlab_cnt_fops, 1);

	ret = dev_set_name(&idev->ev_dev, "irqlab%d", idev->index);
	if (ret)
		goto err_put;
	ret = dev_set_name(&idev->cnt_dev, "irqlab%d-count", idev->index);
	if (ret)
		goto err_put;
	ret = cdev_device_add(&idev->ev_cdev, &idev->ev_dev);
	if (ret)
		goto err_put;
	ret = cdev_device_add(&idev->cnt_cdev, &idev->cnt_dev);
	if (ret)
		goto err_del_ev;

	return devm_add_action_or_reset(&idev->pdev->dev, irqlab_nodes_del, idev);

err_del_ev:
	cdev_device_del(&idev->ev_cdev, &idev->ev_dev);
err_put:
	put_device(&idev->cnt_dev);
	put_device(&idev->ev_dev);
	return ret;
}

int irqlab_cdev_init(void)
{
	int ret;

	ret = class_register(&irqlab_class);
	if (ret)
		return ret;
	ret = alloc_chrdev_region(&irqlab_devt, 0,
				  IRQLAB_MAX_DEVICES * IRQLAB_MINORS_PER_DEV,
				  "irqlab");
	if (ret)
		class_unregister(&irqlab_class);
	return ret;
}

void irqlab_cdev_exit(void)
{
	unregister_chrdev_region(irqlab_devt,
				 IRQLAB_MINORS_PER_DEV * IRQLAB_MAX_DEVICES);
	class_unregister(&irqlab_class);
}
