/* SPDX-License-Identifier: GPL-2.0-or-later WITH Linux-syscall-note OR MIT */
/*
 * irqlab: userspace ABI of the irqlab PCI test device driver.
 *
 * This header is the single source of truth for the event record and the
 * ioctls of /dev/irqlabN.  The Python harness parses it (harness/irqlab/contract/uapi.py):
 * keep structs to one "<type> <name>;" or "<type> <name>[<n>];" member per
 * line with the __u8/__u16/__u32/__u64/__s32/__s64 types, every member
 * naturally aligned (no implicit padding), and constants to plain
 * "#define IRQLAB_NAME <expression>" lines.
 *
 * Values that come from the device (event source, GPIO event kind, interrupt
 * mode) are the IRQLAB_SRC_*, IRQLAB_KIND_* and IRQLAB_IRQ_MODE_* numbers of
 * the device's register map, qemu-device/irqlab-regs.h; they are not repeated
 * here.  See guest-kmod/README.md for the semantics of the device nodes.
 */
#ifndef _UAPI_LINUX_IRQLAB_H
#define _UAPI_LINUX_IRQLAB_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define IRQLAB_ABI_VERSION	1

/*
 * struct irqlab_event - one device event, as read() from /dev/irqlabN
 * @seq:	device sequence number (starts at 1, +1 per raised event)
 * @source:	IRQLAB_SRC_* of irqlab-regs.h
 * @line:	GPIO line for IRQLAB_SRC_GPIO events, else 0
 * @kind:	IRQLAB_KIND_* for GPIO events, else 0
 * @flags:	IRQLAB_EVF_* bits
 * @value:	GPIO: new level; FIFO: the pushed word; BURST: index in burst
 * @lost:	events this file lost in the driver just before this one
 *		(IRQLAB_EVF_OVERFLOW is set when non-zero), saturates
 * @raise_ns:	device clock (QEMU virtual clock, ns) when the device raised it
 * @isr_dev_ns:	device clock read by the hard IRQ handler before it fetched
 *		this event from the device queue
 * @isr_ns:	CLOCK_MONOTONIC (ns) at entry of that hard IRQ handler
 * @wake_ns:	CLOCK_MONOTONIC (ns) when the driver queued the event for this
 *		file and issued the wakeup (hardirq, IRQ thread or work item,
 *		as selected by the "wakeup" module parameter)
 */
struct irqlab_event {
	__u32 seq;
	__u8 source;
	__u8 line;
	__u8 kind;
	__u8 flags;
	__u32 value;
	__u32 lost;
	__u64 raise_ns;
	__u64 isr_dev_ns;
	__u64 isr_ns;
	__u64 wake_ns;
};

#define IRQLAB_EVENT_SIZE	48

/*
 * Records the driver makes itself (not device events: @seq is 0, nothing to
 * ACK) use sources above the device's IRQLAB_SRC_* numbers.  They reach
 * every open file: IRQLAB_IOC_SET_SOURCES filters the device's sources only.
 * IRQLAB_SRC_KEY: the debounced key line ("key_line" module parameter);
 * @line is the key line, @kind IRQLAB_KEY_PRESS (level went high) or
 * IRQLAB_KEY_RELEASE (level went low), @value the debounced level,
 * @raise_ns the device time of the last edge before the level settled.
 */
#define IRQLAB_SRC_KEY		16
#define IRQLAB_KEY_RELEASE	0
#define IRQLAB_KEY_PRESS	1

/* irqlab_event.flags */
#define IRQLAB_EVF_DEV_DROPPED	(1 << 0)	/* the device lost events before it */
#define IRQLAB_EVF_OVERFLOW	(1 << 1)	/* the driver lost @lost events before it */

/*
 * struct irqlab_ack - IRQLAB_IOC_ACK argument
 * @seq:	in: sequence number of the handled event
 * @flags:	in: must be 0
 * @latency_ns:	out: raise -> ack latency measured by the device
 */
struct irqlab_ack {
	__u32 seq;
	__u32 flags;
	__u64 latency_ns;
};

/*
 * struct irqlab_stats - IRQLAB_IOC_GET_STATS result
 *
 * The first block counts for the open file the ioctl is issued on, the
 * second for the whole device since the driver bound to it.
 */
struct irqlab_stats {
	__u64 delivered;	/* records queued to this file */
	__u64 read;		/* records returned by read() */
	__u64 lost;		/* records this file's ring had no room for */
	__u64 overflows;	/* records delivered with IRQLAB_EVF_OVERFLOW */
	__u64 flushed;		/* records discarded by IRQLAB_IOC_FLUSH */
	__u64 queued;		/* records in this file's ring now */
	__u64 irqs;		/* hard IRQ handler runs that found work */
	__u64 irqs_none;	/* INTx handler runs that were not ours */
	__u64 irqs_spurious;	/* MSI/MSI-X handler runs with nothing pending */
	__u64 rearms;		/* handler gave up draining and re-armed */
	__u64 events;		/* events fetched from the device queue */
	__u64 dev_dropped;	/* fetched events carrying the device's DROPPED mark */
	__u64 stage_lost;	/* events lost in the driver's staging buffer */
	__u64 deliveries;	/* runs of the wakeup stage (hardirq/thread/work) */
	__u64 acks;		/* ACKs written to the device */
	__u64 acks_invalid;	/* ACKs the device did not recognise */
	__u64 gpio_lost;	/* GPIO events for gpiolib lost in the driver */
};

/* irqlab_info.wakeup: where the driver wakes readers ("wakeup" parameter) */
#define IRQLAB_WAKEUP_HARDIRQ	0
#define IRQLAB_WAKEUP_THREAD	1
#define IRQLAB_WAKEUP_WORKQUEUE	2

/*
 * struct irqlab_info - IRQLAB_IOC_GET_INFO result
 * @abi_version:	IRQLAB_ABI_VERSION
 * @record_size:	sizeof(struct irqlab_event)
 * @device_id:		the device's ID register
 * @features:		the device's FEATURES register
 * @index:		N of /dev/irqlabN
 * @irq_mode:		IRQLAB_IRQ_MODE_* the driver uses
 * @nvecs:		interrupt vectors the driver requested
 * @wakeup:		IRQLAB_WAKEUP_*
 * @gpio_lines:		GPIO lines of the device
 * @evq_depth:		depth of the device event queue
 * @fifo_depth:		depth of the device FIFO
 * @ring_size:		records this file's ring holds
 * @sources:		this file's source mask (bit IRQLAB_SRC_*)
 * @irq_sources:	sources the driver enabled in IRQ_ENABLE
 */
struct irqlab_info {
	__u32 abi_version;
	__u32 record_size;
	__u32 device_id;
	__u32 features;
	__u32 index;
	__u32 irq_mode;
	__u32 nvecs;
	__u32 wakeup;
	__u32 gpio_lines;
	__u32 evq_depth;
	__u32 fifo_depth;
	__u32 ring_size;
	__u32 sources;
	__u32 irq_sources;
	__u32 reserved[2];
};

/*
 * struct irqlab_clock - IRQLAB_IOC_GET_CLOCK result: one reading of the
 * device clock bracketed by two readings of the guest's clock, to map the
 * record's CLOCK_MONOTONIC times onto the device clock
 * @mono_before_ns:	CLOCK_MONOTONIC (ns) just before the device read
 * @dev_ns:		the device clock (TIME register, ns)
 * @mono_after_ns:	CLOCK_MONOTONIC (ns) just after the device read
 */
struct irqlab_clock {
	__u64 mono_before_ns;
	__u64 dev_ns;
	__u64 mono_after_ns;
};

#define IRQLAB_IOC_MAGIC	0xB9

/* Write @seq to the device ACK register; -ENOENT if the device rejects it. */
#define IRQLAB_IOC_ACK		_IOWR(IRQLAB_IOC_MAGIC, 0x01, struct irqlab_ack)
#define IRQLAB_IOC_GET_STATS	_IOR(IRQLAB_IOC_MAGIC, 0x02, struct irqlab_stats)
/* Argument: pointer to an eventfd descriptor; -1 unbinds. */
#define IRQLAB_IOC_SET_EVENTFD	_IOW(IRQLAB_IOC_MAGIC, 0x03, __s32)
#define IRQLAB_IOC_GET_INFO	_IOR(IRQLAB_IOC_MAGIC, 0x04, struct irqlab_info)
/*
 * Argument: pointer to a source mask, bits (1 << IRQLAB_SRC_*) of the
 * device's sources; any other bit (IRQLAB_SRC_KEY's too) is -EINVAL.
 * Records of the driver's own sources (IRQLAB_SRC_KEY) are not filtered.
 */
#define IRQLAB_IOC_SET_SOURCES	_IOW(IRQLAB_IOC_MAGIC, 0x05, __u32)
/*
 * Discard this file's queued records; returns how many.  With O_NONBLOCK,
 * -EAGAIN while another reader of the file is copying records out.
 */
#define IRQLAB_IOC_FLUSH	_IO(IRQLAB_IOC_MAGIC, 0x06)
#define IRQLAB_IOC_GET_CLOCK	_IOR(IRQLAB_IOC_MAGIC, 0x07, struct irqlab_clock)

#endif /* _UAPI_LINUX_IRQLAB_H */
