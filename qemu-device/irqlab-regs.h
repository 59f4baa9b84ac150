/* SPDX-License-Identifier: GPL-2.0-or-later OR MIT */
/*
 * irqlab PCI device: register map.
 *
 * This header is the single source of truth for the device's register map.
 * It is included by the QEMU device model (grafted as
 * include/hw/misc/irqlab-regs.h), by the Linux driver in guest-kmod/, and
 * parsed by the Python harness (harness/irqlab/contract/regs.py).  Keep it
 * to plain "#define IRQLAB_NAME <integer expression>" lines (literals,
 * parentheses, <<, >>, |, &, ~, +, -, and other IRQLAB_ names) and
 * "#define IRQLAB_NAME "string"" lines (the QOM names; each property's
 * _WHEN mark is an integer line) so that the Python parser can read it.
 * See qemu-device/irqlab.rst for the semantics.
 *
 * All registers are 32 bits wide, little endian, in BAR0.  64-bit values
 * are split into _LO/_HI halves; reading _LO latches _HI.
 */
#ifndef IRQLAB_REGS_H
#define IRQLAB_REGS_H

/* PCI identity */
#define IRQLAB_PCI_VENDOR_ID      0x1234
#define IRQLAB_PCI_DEVICE_ID      0x11ec
#define IRQLAB_PCI_REVISION       0x01
#define IRQLAB_PCI_CLASS          0x00ff   /* PCI_CLASS_OTHERS */

#define IRQLAB_BAR0_SIZE          0x1000
#define IRQLAB_MSIX_TABLE_OFFSET  0x800
#define IRQLAB_MSIX_PBA_OFFSET    0xc00

/* Interrupt sources; with MSI-X, vector N belongs to source N. */
#define IRQLAB_SRC_GPIO           0
#define IRQLAB_SRC_FIFO           1
#define IRQLAB_SRC_BURST          2
#define IRQLAB_NUM_SOURCES        3
#define IRQLAB_SRC_ALL            ((1 << IRQLAB_NUM_SOURCES) - 1)

#define IRQLAB_MAX_GPIO_LINES     32
#define IRQLAB_MAX_FIFO_DEPTH     4096
#define IRQLAB_MAX_EVQ_DEPTH      4096
#define IRQLAB_ACK_WINDOW         4096     /* raise timestamps kept for ACK */
#define IRQLAB_HIST_BUCKETS       64       /* log2 latency histogram */
#define IRQLAB_MIN_BURST_PERIOD_NS 1000
#define IRQLAB_MAX_BURST_PERIOD_NS 10000000000  /* 10 s, no suffix */
#define IRQLAB_BURST_LINE_NONE    (-1)     /* burst-line: BURST events */

/* ID register value: magic in [31:16], major version [15:8], minor [7:0] */
#define IRQLAB_ID_MAGIC           0x1a5b
#define IRQLAB_ID_VALUE           ((IRQLAB_ID_MAGIC << 16) | 0x0100)

/* Global block */
#define IRQLAB_REG_ID             0x000    /* RO */
#define IRQLAB_REG_FEATURES       0x004    /* RO, see IRQLAB_FEAT_* */
#define IRQLAB_REG_IRQ_STATUS     0x008    /* RO / W1C per source bit */
#define IRQLAB_REG_IRQ_ENABLE     0x00c    /* RW per source bit */
#define IRQLAB_REG_IRQ_PENDING    0x010    /* RO: STATUS & ENABLE */
#define IRQLAB_REG_SCRATCH        0x014    /* RW, no side effect */
#define IRQLAB_REG_TIME_LO        0x018    /* RO device clock, ns */
#define IRQLAB_REG_TIME_HI        0x01c    /* RO, latched by TIME_LO */

/* FEATURES fields */
#define IRQLAB_FEAT_GPIO_LINES_MASK   0xff
#define IRQLAB_FEAT_IRQ_MODE_SHIFT    8
#define IRQLAB_FEAT_IRQ_MODE_MASK     (0x3 << IRQLAB_FEAT_IRQ_MODE_SHIFT)
#define IRQLAB_FEAT_BROKEN_INTX       (1 << 16)

/* irq-mode values (FEATURES[9:8]) */
#define IRQLAB_IRQ_MODE_INTX      0
#define IRQLAB_IRQ_MODE_MSI       1
#define IRQLAB_IRQ_MODE_MSIX      2

/* GPIO block: one bit per line */
#define IRQLAB_REG_GPIO_IN        0x040    /* RO input levels (host-driven) */
#define IRQLAB_REG_GPIO_RISING    0x044    /* RW rising-edge detect enable */
#define IRQLAB_REG_GPIO_FALLING   0x048    /* RW falling-edge detect enable */
#define IRQLAB_REG_GPIO_LEVEL_HIGH 0x04c   /* RW high-level detect enable */
#define IRQLAB_REG_GPIO_LEVEL_LOW 0x050    /* RW low-level detect enable */
#define IRQLAB_REG_GPIO_IRQ_EN    0x054    /* RW 1 = line unmasked */
#define IRQLAB_REG_GPIO_STATUS    0x058    /* RW1C latched line events */
#define IRQLAB_REG_GPIO_NLINES    0x05c    /* RO number of lines */

/* FIFO block (host pushes 32-bit words; each word is one event) */
#define IRQLAB_REG_FIFO_COUNT     0x080    /* RO FIFO words in the EVQ */
#define IRQLAB_REG_FIFO_DEPTH     0x084    /* RO */
#define IRQLAB_REG_FIFO_OVERFLOW  0x088    /* RO words dropped (FIFO full) */

/* Burst generator (started by the host over QMP) */
#define IRQLAB_REG_BURST_COUNT    0x0c0    /* RO events in current/last burst */
#define IRQLAB_REG_BURST_REMAINING 0x0c4   /* RO */
#define IRQLAB_REG_BURST_PERIOD_LO 0x0c8   /* RO ns */
#define IRQLAB_REG_BURST_PERIOD_HI 0x0cc   /* RO */

/* Event queue: every raised event, oldest first */
#define IRQLAB_REG_EVQ_COUNT      0x100    /* RO events queued */
#define IRQLAB_REG_EVQ_DEPTH      0x104    /* RO */
#define IRQLAB_REG_EVQ_POP        0x108    /* WO any value: drop head */
#define IRQLAB_REG_EVQ_HEAD_SEQ   0x10c    /* RO head event sequence */
#define IRQLAB_REG_EVQ_HEAD_INFO  0x110    /* RO see IRQLAB_EVINFO_* */
#define IRQLAB_REG_EVQ_HEAD_VALUE 0x114    /* RO */
#define IRQLAB_REG_EVQ_HEAD_TS_LO 0x118    /* RO raise time, ns */
#define IRQLAB_REG_EVQ_HEAD_TS_HI 0x11c    /* RO */
#define IRQLAB_REG_EVQ_OVERFLOW   0x120    /* RO events dropped (queue full) */

/* EVQ_HEAD_INFO fields */
#define IRQLAB_EVINFO_SRC_MASK    0xff
#define IRQLAB_EVINFO_LINE_SHIFT  8
#define IRQLAB_EVINFO_LINE_MASK   (0xff << IRQLAB_EVINFO_LINE_SHIFT)
#define IRQLAB_EVINFO_VALID       (1 << 16)  /* queue was not empty */
#define IRQLAB_EVINFO_DROPPED     (1 << 17)  /* events lost just before */
#define IRQLAB_EVINFO_KIND_SHIFT  24
#define IRQLAB_EVINFO_KIND_MASK   (0xf << IRQLAB_EVINFO_KIND_SHIFT)

/* GPIO event kinds (EVINFO KIND field) */
#define IRQLAB_KIND_RISING        0
#define IRQLAB_KIND_FALLING       1
#define IRQLAB_KIND_LEVEL_HIGH    2
#define IRQLAB_KIND_LEVEL_LOW     3

/* Acknowledge: the guest writes the sequence of the event it handled */
#define IRQLAB_REG_ACK            0x140    /* WO event sequence */
#define IRQLAB_REG_ACK_SEQ        0x144    /* RO last valid acked sequence */
#define IRQLAB_REG_ACK_LAT_LO     0x148    /* RO raise->ack latency, ns */
#define IRQLAB_REG_ACK_LAT_HI     0x14c    /* RO */
#define IRQLAB_REG_ACK_INVALID    0x150    /* RO ACKs naming no known event */

/* Counters (low 32 bits; full 64-bit values over QMP) */
#define IRQLAB_REG_CNT_RAISED     0x180
#define IRQLAB_REG_CNT_DELIVERED  0x184
#define IRQLAB_REG_CNT_ACKED      0x188
#define IRQLAB_REG_CNT_COALESCED  0x18c
#define IRQLAB_REG_CNT_DROPPED    0x190

/*
 * QOM properties of the device (the host side: QMP qom-get/qom-set).  The
 * device model registers them under these names and the host's injector
 * uses them; nothing else types them.
 *
 * Each IRQLAB_PROP_<NAME> has an IRQLAB_PROP_<NAME>_WHEN: when it can be
 * set.  Start-time properties are given on -device (or device_add) and fixed
 * once the device is realized; runtime controls act on the realized device
 * (qom-set), so the device refuses them before realize (on -device); the
 * read-only ones are read with qom-get.  The device model registers each
 * property by its mark, and the harness refuses a property that is not
 * start-time among the -device properties before it starts QEMU.
 */
#define IRQLAB_SET_AT_START       1  /* -device; fixed once realized */
#define IRQLAB_SET_AT_RUN         2  /* qom-set on the realized device */
#define IRQLAB_SET_NEVER          3  /* read-only: qom-get */

#define IRQLAB_PROP_IRQ_MODE      "irq-mode"
#define IRQLAB_PROP_IRQ_MODE_WHEN        IRQLAB_SET_AT_START
#define IRQLAB_PROP_BROKEN_INTX_DISABLE "broken-intx-disable"
#define IRQLAB_PROP_BROKEN_INTX_DISABLE_WHEN IRQLAB_SET_AT_START
#define IRQLAB_PROP_GPIO_LINES    "gpio-lines"
#define IRQLAB_PROP_GPIO_LINES_WHEN      IRQLAB_SET_AT_START
#define IRQLAB_PROP_FIFO_DEPTH    "fifo-depth"
#define IRQLAB_PROP_FIFO_DEPTH_WHEN      IRQLAB_SET_AT_START
#define IRQLAB_PROP_EVQ_DEPTH     "evq-depth"
#define IRQLAB_PROP_EVQ_DEPTH_WHEN       IRQLAB_SET_AT_START
#define IRQLAB_PROP_GPIO_IN       "gpio-in"
#define IRQLAB_PROP_GPIO_IN_WHEN         IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_GPIO_SET      "gpio-set"
#define IRQLAB_PROP_GPIO_SET_WHEN        IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_GPIO_CLEAR    "gpio-clear"
#define IRQLAB_PROP_GPIO_CLEAR_WHEN      IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_GPIO_PULSE    "gpio-pulse"
#define IRQLAB_PROP_GPIO_PULSE_WHEN      IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_FIFO_PUSH     "fifo-push"
#define IRQLAB_PROP_FIFO_PUSH_WHEN       IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_BURST_PERIOD_NS "burst-period-ns"
#define IRQLAB_PROP_BURST_PERIOD_NS_WHEN IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_BURST_COUNT   "burst-count"
#define IRQLAB_PROP_BURST_COUNT_WHEN     IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_BURST_LINE    "burst-line"
#define IRQLAB_PROP_BURST_LINE_WHEN      IRQLAB_SET_AT_RUN
#define IRQLAB_PROP_COUNTERS      "counters"
#define IRQLAB_PROP_COUNTERS_WHEN        IRQLAB_SET_NEVER
#define IRQLAB_PROP_LATENCY_HISTOGRAM "latency-histogram"
#define IRQLAB_PROP_LATENCY_HISTOGRAM_WHEN IRQLAB_SET_NEVER
#define IRQLAB_PROP_RESET_COUNTERS "reset-counters"
#define IRQLAB_PROP_RESET_COUNTERS_WHEN  IRQLAB_SET_AT_RUN

/* Members of the counters property */
#define IRQLAB_COUNTER_RAISED     "raised"
#define IRQLAB_COUNTER_DELIVERED  "delivered"
#define IRQLAB_COUNTER_ACKED      "acked"
#define IRQLAB_COUNTER_COALESCED  "coalesced"
#define IRQLAB_COUNTER_DROPPED    "dropped"
#define IRQLAB_COUNTER_FIFO_OVERFLOW "fifo-overflow"
#define IRQLAB_COUNTER_EVQ_OVERFLOW "evq-overflow"
#define IRQLAB_COUNTER_ACK_INVALID "ack-invalid"
#define IRQLAB_COUNTER_EVQ_COUNT  "evq-count"
#define IRQLAB_COUNTER_NEXT_SEQ   "next-seq"

/* Members of the latency-histogram property; "buckets": the log2 list */
#define IRQLAB_HISTOGRAM_COUNT    "count"
#define IRQLAB_HISTOGRAM_SUM_NS   "sum-ns"
#define IRQLAB_HISTOGRAM_MIN_NS   "min-ns"
#define IRQLAB_HISTOGRAM_MAX_NS   "max-ns"
#define IRQLAB_HISTOGRAM_BUCKETS  "buckets"

#endif /* IRQLAB_REGS_H */
