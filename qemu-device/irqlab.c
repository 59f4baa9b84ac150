/*
 * irqlab: a PCI device that raises interrupts on command, for testing how
 * interrupts reach Linux userspace.
 *
 * The host drives it over QMP (qom-set/qom-get on the device's QOM path):
 * a bank of GPIO input lines, a FIFO of 32-bit words and an in-device burst
 * generator.  Every raise becomes an event with a sequence number and a
 * timestamp in the device's event queue; the guest acknowledges events by
 * sequence number and the device measures the raise->ack latency itself.
 *
 * The register map is in include/hw/misc/irqlab-regs.h, the behaviour is
 * described in docs/specs/irqlab.rst.  The same file builds against QEMU 7.2
 * and QEMU >= 8 (see the QEMU_VERSION_MAJOR checks).
 *
 * Copyright (c) 2026 The irqlab authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/host-utils.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "hw/pci/pci.h"
#if QEMU_VERSION_MAJOR >= 8
#include "hw/pci/pci_device.h"
#endif
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "migration/vmstate.h"
#include "qom/object.h"
#include "hw/misc/irqlab-regs.h"

/*
 * API differences between the QEMU versions this file supports.
 *   >= 9.2:  device_class_set_legacy_reset() replaces dc->reset
 *   >= 10.0: Property arrays are const and have no terminator
 *   >= 10.1: class_init takes const void *data
 */
#define IRQLAB_QEMU_AT_LEAST(major, minor) \
    (QEMU_VERSION_MAJOR > (major) || \
     (QEMU_VERSION_MAJOR == (major) && QEMU_VERSION_MINOR >= (minor)))

#if IRQLAB_QEMU_AT_LEAST(10, 1)
typedef const void IrqlabClassData;
#else
typedef void IrqlabClassData;
#endif

#define TYPE_IRQLAB "irqlab"
OBJECT_DECLARE_SIMPLE_TYPE(IrqlabState, IRQLAB)

#define IRQLAB_DEFAULT_FIFO_DEPTH   256
#define IRQLAB_DEFAULT_EVQ_DEPTH    1024
#define IRQLAB_DEFAULT_BURST_PERIOD 1000000          /* 1 ms */

/* Which 64-bit register pair a _HI read returns (latched by the _LO read) */
enum {
    IRQLAB_LATCH_TIME,
    IRQLAB_LATCH_BURST_PERIOD,
    IRQLAB_LATCH_EVQ_HEAD_TS,
    IRQLAB_LATCH_ACK_LAT,
    IRQLAB_LATCH_NUM,
};

/* How the device signals an interrupt right now */
enum {
    IRQLAB_ROUTE_INTX,
    IRQLAB_ROUTE_MSI,
    IRQLAB_ROUTE_MSIX,
};

/*
 * Event counters, in the order of the CNT_* registers (the first five), then
 * the ones with a register of their own
 */
enum {
    IRQLAB_CNT_RAISED,
    IRQLAB_CNT_DELIVERED,
    IRQLAB_CNT_ACKED,
    IRQLAB_CNT_COALESCED,
    IRQLAB_CNT_DROPPED,
    IRQLAB_CNT_FIFO_OVERFLOW,
    IRQLAB_CNT_EVQ_OVERFLOW,
    IRQLAB_CNT_ACK_INVALID,
    IRQLAB_CNT_NUM,
};

/* The CNT_* registers are read by index: offsets follow the counters */
#define IRQLAB_CNT_REG_IS(name) \
    QEMU_BUILD_BUG_ON(IRQLAB_REG_CNT_##name - IRQLAB_REG_CNT_RAISED != \
                      4 * (IRQLAB_CNT_##name - IRQLAB_CNT_RAISED))
IRQLAB_CNT_REG_IS(DELIVERED);
IRQLAB_CNT_REG_IS(ACKED);
IRQLAB_CNT_REG_IS(COALESCED);
IRQLAB_CNT_REG_IS(DROPPED);

/*
 * BAR0: the register window (offset 0 up to the MSI-X table) holds the last
 * register, CNT_DROPPED; the MSI-X table, then the PBA, fit in BAR0.  The
 * harness's header parser checks every register offset the same way.
 */
QEMU_BUILD_BUG_ON(IRQLAB_REG_CNT_DROPPED + 4 > IRQLAB_MSIX_TABLE_OFFSET);
QEMU_BUILD_BUG_ON(IRQLAB_MSIX_TABLE_OFFSET +
                  IRQLAB_NUM_SOURCES * PCI_MSIX_ENTRY_SIZE >
                  IRQLAB_MSIX_PBA_OFFSET);
QEMU_BUILD_BUG_ON(IRQLAB_MSIX_PBA_OFFSET +
                  DIV_ROUND_UP(IRQLAB_NUM_SOURCES, 64) * 8 >
                  IRQLAB_BAR0_SIZE);

typedef struct IrqlabEvent {
    uint32_t seq;
    uint32_t info;      /* EVQ_HEAD_INFO layout, without EVINFO_VALID */
    uint32_t value;
    uint64_t ts;        /* raise time, QEMU_CLOCK_VIRTUAL ns */
} IrqlabEvent;

/* raise->ack latency histogram */
typedef struct IrqlabHist {
    uint64_t buckets[IRQLAB_HIST_BUCKETS];  /* by log2 of the latency in ns */
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
} IrqlabHist;

struct IrqlabState {
    PCIDevice parent_obj;

    MemoryRegion bar0;          /* container: registers + MSI-X */
    MemoryRegion regs;
    QEMUTimer burst_timer;

    /* static properties */
    char *irq_mode_str;
    bool broken_intx_disable;
    bool stream_broken_intx;    /* the migration source's, see post_load */
    uint32_t gpio_lines;
    uint32_t fifo_depth;
    uint32_t evq_depth;
    uint32_t irq_mode;          /* IRQLAB_IRQ_MODE_*, from irq_mode_str */
    uint32_t gpio_mask;         /* bits of the lines that exist */

    /* global registers */
    uint32_t irq_status;        /* latched FIFO and BURST bits only */
    uint32_t irq_enable;
    uint32_t scratch;
    uint32_t hi_latch[IRQLAB_LATCH_NUM];

    /* GPIO bank */
    uint32_t gpio_in;
    uint32_t gpio_rising;
    uint32_t gpio_falling;
    uint32_t gpio_level_high;
    uint32_t gpio_level_low;
    uint32_t gpio_irq_en;
    uint32_t gpio_status;

    /* FIFO: its words live in the event queue */
    uint32_t fifo_count;

    /* burst generator */
    uint64_t burst_period_ns;   /* for the next burst */
    uint64_t burst_active_period;
    int64_t burst_start;
    uint32_t burst_count;
    uint32_t burst_next;        /* index of the next event */
    uint32_t burst_remaining;
    int32_t burst_line;         /* -1: BURST events; else the line toggled */

    /* event queue (ring of evq_depth entries) */
    IrqlabEvent evq[IRQLAB_MAX_EVQ_DEPTH];
    uint32_t evq_head;
    uint32_t evq_count;
    bool evq_lost;              /* next queued event gets EVINFO_DROPPED */
    uint32_t next_seq;

    /* acknowledge: raise timestamps of recent events, by seq */
    uint32_t ack_win_seq[IRQLAB_ACK_WINDOW];
    uint64_t ack_win_ts[IRQLAB_ACK_WINDOW];
    uint32_t ack_seq;
    uint64_t ack_lat;

    /* interrupt delivery */
    uint32_t route;             /* IRQLAB_ROUTE_*, derived from config */
    uint32_t last_pending;      /* IRQ_PENDING when last evaluated */
    bool intx_level;

    /* reset by reset-counters */
    uint64_t cnt[IRQLAB_CNT_NUM];   /* by IRQLAB_CNT_* */
    IrqlabHist hist;
};

static int64_t irqlab_now(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
}

/* ---- interrupt state and delivery ---------------------------------- */

static uint32_t irqlab_irq_status(IrqlabState *s)
{
    uint32_t status = s->irq_status & ~(1u << IRQLAB_SRC_GPIO);

    if (s->gpio_status & s->gpio_irq_en) {
        status |= 1u << IRQLAB_SRC_GPIO;
    }
    return status;
}

static uint32_t irqlab_pending(IrqlabState *s)
{
    return irqlab_irq_status(s) & s->irq_enable;
}

static bool irqlab_intx_disabled(IrqlabState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    return pci_get_word(pdev->config + PCI_COMMAND) &
           PCI_COMMAND_INTX_DISABLE;
}

/*
 * MSI and MSI-X messages are memory writes by the device: with
 * COMMAND.MASTER clear the PCI core drops them (a driver that forgot
 * pci_set_master()), so they are not counted as delivered.
 */
static bool irqlab_bus_master(IrqlabState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    return pci_get_word(pdev->config + PCI_COMMAND) & PCI_COMMAND_MASTER;
}

/*
 * MSI-X or MSI when the guest enabled it, INTx otherwise (a PCI function
 * whose MSI/MSI-X is disabled signals through its interrupt pin).
 */
static uint32_t irqlab_compute_route(IrqlabState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (s->irq_mode == IRQLAB_IRQ_MODE_MSIX && msix_enabled(pdev)) {
        return IRQLAB_ROUTE_MSIX;
    }
    if (s->irq_mode == IRQLAB_IRQ_MODE_MSI && msi_enabled(pdev)) {
        return IRQLAB_ROUTE_MSI;
    }
    return IRQLAB_ROUTE_INTX;
}

static void irqlab_set_intx(IrqlabState *s, bool level)
{
    if (s->intx_level == level) {
        return;
    }
    s->intx_level = level;
    /* The PCI core keeps the line low while COMMAND.INTX_DISABLE is set */
    pci_set_irq(PCI_DEVICE(s), level);
    if (level && !irqlab_intx_disabled(s)) {
        s->cnt[IRQLAB_CNT_DELIVERED]++;
    }
}

/* A message for @vector waits in the PBA */
static bool irqlab_msix_parked(PCIDevice *pdev, unsigned vector)
{
    return pdev->msix_pba[vector / 8] & (1u << (vector % 8));
}

static void irqlab_msix_send(IrqlabState *s, unsigned vector)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    if (msix_is_masked(pdev, vector)) {
        /*
         * parked in the PBA; counted when the core sends it on unmask.  A
         * raise whose message merges into one parked there is counted as
         * coalesced where it is raised (irqlab_count_coalesced()): this
         * 0->1 may come from no raise at all (IRQ_ENABLE, GPIO_IRQ_EN).
         */
        msix_notify(pdev, vector);
        return;
    }
    msix_notify(pdev, vector);
    if (irqlab_bus_master(s)) {
        s->cnt[IRQLAB_CNT_DELIVERED]++;
    }
}

/*
 * Signal every source whose IRQ_PENDING bit went 0->1 since last time.  On
 * MSI-X a source whose bit went 1->0 (status cleared, disabled in
 * IRQ_ENABLE, its GPIO lines masked) withdraws a message still waiting in
 * the PBA, as PCI 3.0 requires of a masked vector whose interrupt events
 * are satisfied: unmasked later, it would send an interrupt for nothing.
 */
static void irqlab_update_irq(IrqlabState *s)
{
    uint32_t pending = irqlab_pending(s);
    uint32_t old = s->last_pending;
    unsigned src;

    if (s->route == IRQLAB_ROUTE_MSIX) {
        /*
         * Source by source, from the state as it is then: a message may
         * write the device's own registers (a vector aimed at BAR0), which
         * runs this function again before the loop goes on.
         */
        for (src = 0; src < IRQLAB_NUM_SOURCES; src++) {
            uint32_t bit = 1u << src;
            uint32_t now = irqlab_pending(s) & bit;

            if (now == (s->last_pending & bit)) {
                continue;
            }
            s->last_pending ^= bit;
            if (now) {
                irqlab_msix_send(s, src);
            } else {
                msix_clr_pending(PCI_DEVICE(s), src);
            }
        }
        return;
    }
    s->last_pending = pending;

    switch (s->route) {
    case IRQLAB_ROUTE_MSI:
        if (!old && pending) {
            msi_notify(PCI_DEVICE(s), 0);
            if (irqlab_bus_master(s)) {
                s->cnt[IRQLAB_CNT_DELIVERED]++;
            }
        }
        break;
    default:
        irqlab_set_intx(s, pending != 0);
        break;
    }
}

/* Called when MSI/MSI-X enable bits may have changed */
static void irqlab_update_route(IrqlabState *s)
{
    uint32_t route = irqlab_compute_route(s);

    if (route == s->route) {
        return;
    }
    if (s->route == IRQLAB_ROUTE_INTX) {
        irqlab_set_intx(s, false);
    }
    if (s->route == IRQLAB_ROUTE_MSIX) {
        unsigned v;

        /*
         * A message parked in the PBA is for a condition the new path
         * signals now; sent on a later return to MSI-X it would be a
         * second interrupt for one raise.
         */
        for (v = 0; v < IRQLAB_NUM_SOURCES; v++) {
            msix_clr_pending(PCI_DEVICE(s), v);
        }
    }
    s->route = route;
    /* whatever is pending now is signalled on the new path */
    s->last_pending = 0;
    irqlab_update_irq(s);
}

static void irqlab_config_write(PCIDevice *pdev, uint32_t addr,
                                uint32_t val, int len)
{
    IrqlabState *s = IRQLAB(pdev);
    bool was_disabled = irqlab_intx_disabled(s);

    pci_default_write_config(pdev, addr, val, len);

    /* Clearing INTX_DISABLE while our line is high asserts it now */
    if (was_disabled && !irqlab_intx_disabled(s) && s->intx_level) {
        s->cnt[IRQLAB_CNT_DELIVERED]++;
    }
    irqlab_update_route(s);
}

/* MSI-X core: a vector was unmasked; it sends a parked message next */
static int irqlab_msix_vector_use(PCIDevice *pdev, unsigned vector,
                                  MSIMessage msg)
{
    IrqlabState *s = IRQLAB(pdev);

    if (vector < IRQLAB_NUM_SOURCES && irqlab_bus_master(s) &&
        irqlab_msix_parked(pdev, vector)) {
        s->cnt[IRQLAB_CNT_DELIVERED]++;
    }
    return 0;
}

static void irqlab_msix_vector_release(PCIDevice *pdev, unsigned vector)
{
}

/* ---- events ----------------------------------------------------------- */

/*
 * A raise that makes @src pending (if enabled) produces no interrupt of its
 * own, so is coalesced, when @src is pending already, or was when the
 * interrupt state was last updated: a bit cleared and latched again within
 * one access (a GPIO level that still holds when its GPIO_STATUS is cleared)
 * never reads 0 to the interrupt logic, on every route alike.  Called before
 * the raise latches anything.
 */
static void irqlab_count_coalesced(IrqlabState *s, unsigned src)
{
    uint32_t bit = 1u << src;

    if ((irqlab_pending(s) | s->last_pending) & bit) {
        s->cnt[IRQLAB_CNT_COALESCED]++;
    }
}

/*
 * Give the raise a sequence number and queue it with raise time @ts (now,
 * or a burst step's deadline); false if it was dropped.
 */
static bool irqlab_raise_event(IrqlabState *s, unsigned src, unsigned line,
                               unsigned kind, uint32_t value, int64_t ts)
{
    uint32_t seq = s->next_seq;
    IrqlabEvent *ev;

    s->next_seq = seq + 1 ? seq + 1 : 1;
    s->cnt[IRQLAB_CNT_RAISED]++;

    if (s->evq_count >= s->evq_depth) {
        s->cnt[IRQLAB_CNT_DROPPED]++;
        s->cnt[IRQLAB_CNT_EVQ_OVERFLOW]++;
        s->evq_lost = true;
        return false;
    }

    ev = &s->evq[(s->evq_head + s->evq_count) % s->evq_depth];
    ev->seq = seq;
    ev->info = src | (line << IRQLAB_EVINFO_LINE_SHIFT) |
               (kind << IRQLAB_EVINFO_KIND_SHIFT);
    if (s->evq_lost) {
        ev->info |= IRQLAB_EVINFO_DROPPED;
        s->evq_lost = false;
    }
    ev->value = value;
    ev->ts = ts;
    s->evq_count++;
    if (src == IRQLAB_SRC_FIFO) {
        s->fifo_count++;
    }

    s->ack_win_seq[seq % IRQLAB_ACK_WINDOW] = seq;
    s->ack_win_ts[seq % IRQLAB_ACK_WINDOW] = ts;
    return true;
}

static void irqlab_evq_pop(IrqlabState *s)
{
    if (!s->evq_count) {
        return;
    }
    if ((s->evq[s->evq_head].info & IRQLAB_EVINFO_SRC_MASK) ==
        IRQLAB_SRC_FIFO) {
        s->fifo_count--;
    }
    s->evq_head = (s->evq_head + 1) % s->evq_depth;
    s->evq_count--;
}

/* FIFO and BURST: latch IRQ_STATUS when the event was queued */
static void irqlab_raise_latched(IrqlabState *s, unsigned src, uint32_t value,
                                 int64_t ts)
{
    if (irqlab_raise_event(s, src, 0, 0, value, ts)) {
        irqlab_count_coalesced(s, src);
        s->irq_status |= 1u << src;
    }
}

/* ---- GPIO ------------------------------------------------------------- */

static void irqlab_gpio_latch(IrqlabState *s, unsigned line, unsigned kind,
                              bool level, int64_t ts)
{
    uint32_t bit = 1u << line;

    if (s->gpio_irq_en & bit) {
        irqlab_count_coalesced(s, IRQLAB_SRC_GPIO);
    }
    s->gpio_status |= bit;
    irqlab_raise_event(s, IRQLAB_SRC_GPIO, line, kind, level, ts);
}

/* Level detection: raise when a line's STATUS goes 0->1 */
static void irqlab_gpio_check_levels_at(IrqlabState *s, int64_t ts)
{
    uint32_t high = s->gpio_in & s->gpio_level_high;
    uint32_t low = ~s->gpio_in & s->gpio_level_low;
    uint32_t fire = (high | low) & ~s->gpio_status & s->gpio_mask;
    unsigned line;

    for (line = 0; line < s->gpio_lines; line++) {
        uint32_t bit = 1u << line;

        if (fire & bit) {
            irqlab_gpio_latch(s, line,
                              (high & bit) ? IRQLAB_KIND_LEVEL_HIGH
                                           : IRQLAB_KIND_LEVEL_LOW,
                              s->gpio_in & bit, ts);
        }
    }
}

static void irqlab_gpio_check_levels(IrqlabState *s)
{
    irqlab_gpio_check_levels_at(s, irqlab_now());
}

/*
 * New input levels, changed at @ts: detection only, no signalling (a burst
 * signals once after its steps, see irqlab_burst_tick())
 */
static void irqlab_gpio_input_at(IrqlabState *s, uint32_t levels, int64_t ts)
{
    uint32_t changed = (s->gpio_in ^ levels) & s->gpio_mask;
    unsigned line;

    s->gpio_in = levels & s->gpio_mask;
    for (line = 0; line < s->gpio_lines; line++) {
        uint32_t bit = 1u << line;

        if (!(changed & bit)) {
            continue;
        }
        if ((levels & bit) && (s->gpio_rising & bit)) {
            irqlab_gpio_latch(s, line, IRQLAB_KIND_RISING, true, ts);
        } else if (!(levels & bit) && (s->gpio_falling & bit)) {
            irqlab_gpio_latch(s, line, IRQLAB_KIND_FALLING, false, ts);
        }
    }
    irqlab_gpio_check_levels_at(s, ts);
}

/* The host drives the input levels */
static void irqlab_gpio_drive(IrqlabState *s, uint32_t levels)
{
    irqlab_gpio_input_at(s, levels, irqlab_now());
    irqlab_update_irq(s);
}

/* ---- burst generator -------------------------------------------------- */

static int64_t irqlab_burst_deadline(IrqlabState *s)
{
    uint64_t period = s->burst_active_period;

    if (s->burst_next > (uint64_t)(INT64_MAX - s->burst_start) / period) {
        return INT64_MAX;
    }
    return s->burst_start + (int64_t)(s->burst_next * period);
}

/*
 * One burst step, due at @deadline (its raise timestamp): a BURST event, or
 * with burst-line set a toggle of that GPIO input, which goes through
 * edge/level detection like a host change.  The step is taken off the burst
 * before it is raised, and nothing is signalled: an interrupt is a memory
 * write that may reach the device itself (reset it through a bridge, clear
 * its status) and must not run in the middle of the steps.
 */
static void irqlab_burst_step(IrqlabState *s, int64_t deadline)
{
    uint32_t index = s->burst_next;

    s->burst_next++;
    s->burst_remaining--;
    if (s->burst_line == IRQLAB_BURST_LINE_NONE) {
        irqlab_raise_latched(s, IRQLAB_SRC_BURST, index, deadline);
    } else {
        irqlab_gpio_input_at(s, s->gpio_in ^ (1u << s->burst_line), deadline);
    }
}

/* Use up @n sequence numbers at once (0 is skipped on wrap-around) */
static void irqlab_seq_advance(IrqlabState *s, uint64_t n)
{
    uint64_t seq = s->next_seq - 1 + n % UINT32_MAX;

    s->next_seq = seq % UINT32_MAX + 1;
}

/*
 * Whether every further step only counts: a raise that is dropped (queue
 * full) or no raise at all, and no new latch.  A BURST step once the queue
 * is full; a GPIO step once its line's status is latched (no level raise
 * and no new IRQ_PENDING bit can follow) or while the line detects
 * nothing, and whose edges are not detected or would be dropped.
 */
static bool irqlab_burst_steps_drop(IrqlabState *s)
{
    bool full = s->evq_count >= s->evq_depth;
    uint32_t bit, edges, levels;

    if (s->burst_line == IRQLAB_BURST_LINE_NONE) {
        return full;
    }
    bit = 1u << s->burst_line;
    edges = (s->gpio_rising | s->gpio_falling) & bit;
    levels = (s->gpio_level_high | s->gpio_level_low) & bit;
    if (!(s->gpio_status & bit) && (edges || levels)) {
        return false;
    }
    return full || !edges;
}

/*
 * Count @n overdue steps that irqlab_burst_steps_drop() allows in one go,
 * exactly as raising them one by one would count them.
 */
static void irqlab_burst_drop_steps(IrqlabState *s, uint32_t n)
{
    uint64_t raises = n;

    if (s->burst_line != IRQLAB_BURST_LINE_NONE) {
        uint32_t bit = 1u << s->burst_line;
        uint64_t first = (n + 1) / 2, second = n / 2;
        bool low = !(s->gpio_in & bit);
        uint64_t rising = low ? first : second;
        uint64_t falling = low ? second : first;

        raises = ((s->gpio_rising & bit) ? rising : 0) +
                 ((s->gpio_falling & bit) ? falling : 0);
        if ((s->gpio_irq_en & bit) &&
            (irqlab_pending(s) & (1u << IRQLAB_SRC_GPIO))) {
            s->cnt[IRQLAB_CNT_COALESCED] += raises;
        }
        if (n & 1) {
            s->gpio_in ^= bit;
        }
    }
    if (raises) {
        irqlab_seq_advance(s, raises);
        s->cnt[IRQLAB_CNT_RAISED] += raises;
        s->cnt[IRQLAB_CNT_DROPPED] += raises;
        s->cnt[IRQLAB_CNT_EVQ_OVERFLOW] += raises;
        s->evq_lost = true;
    }
    s->burst_next += n;
    s->burst_remaining -= n;
}

/*
 * Raise every step whose deadline has passed, then wait for the next, then
 * signal once.  Work per call is bounded by the queue depth: steps are raised
 * one by one until the queue is full, the overdue rest is counted in one go.
 */
static void irqlab_burst_tick(void *opaque)
{
    IrqlabState *s = opaque;
    int64_t now = irqlab_now();

    while (s->burst_remaining) {
        int64_t deadline = irqlab_burst_deadline(s);
        uint64_t due;

        if (deadline == INT64_MAX) {
            /* beyond the clock's range: never due (nor a step to count) */
            timer_del(&s->burst_timer);
            break;
        }
        if (deadline > now) {
            timer_mod(&s->burst_timer, deadline);
            break;
        }
        if (irqlab_burst_steps_drop(s)) {
            /* steps burst_next .. last index with a deadline <= now */
            due = (uint64_t)(now - s->burst_start) / s->burst_active_period -
                  s->burst_next + 1;
            irqlab_burst_drop_steps(s, MIN(due, s->burst_remaining));
            continue;
        }
        irqlab_burst_step(s, deadline);
    }
    irqlab_update_irq(s);
}

static void irqlab_burst_start(IrqlabState *s, uint32_t count)
{
    timer_del(&s->burst_timer);
    s->burst_remaining = 0;
    if (!count) {
        return;
    }
    s->burst_count = count;
    s->burst_remaining = count;
    s->burst_next = 0;
    s->burst_active_period = s->burst_period_ns;
    s->burst_start = irqlab_now();
    /* event 0 is due now: raise it before returning to the caller */
    irqlab_burst_tick(s);
}

/* ---- acknowledge and latency histogram -------------------------------- */

static void irqlab_hist_add(IrqlabHist *h, uint64_t lat)
{
    unsigned bucket = lat ? 63 - clz64(lat) : 0;

    h->buckets[bucket]++;
    h->count++;
    h->sum += lat;
    h->min = MIN(h->min, lat);
    h->max = MAX(h->max, lat);
}

static void irqlab_ack(IrqlabState *s, uint32_t seq)
{
    unsigned idx = seq % IRQLAB_ACK_WINDOW;
    int64_t now = irqlab_now();
    uint64_t ts;

    if (!seq || s->ack_win_seq[idx] != seq) {
        s->cnt[IRQLAB_CNT_ACK_INVALID]++;
        return;
    }
    ts = s->ack_win_ts[idx];
    s->ack_win_seq[idx] = 0;    /* a second ACK of the same seq is stale */
    s->ack_seq = seq;
    s->ack_lat = (uint64_t)now > ts ? now - ts : 0;
    s->cnt[IRQLAB_CNT_ACKED]++;
    irqlab_hist_add(&s->hist, s->ack_lat);
}

static void irqlab_reset_counters(IrqlabState *s)
{
    memset(s->cnt, 0, sizeof(s->cnt));
    memset(&s->hist, 0, sizeof(s->hist));
    s->hist.min = UINT64_MAX;
}

/* ---- MMIO ------------------------------------------------------------- */

static uint32_t irqlab_lo_latch(IrqlabState *s, unsigned latch, uint64_t v)
{
    s->hi_latch[latch] = v >> 32;
    return (uint32_t)v;
}

static uint64_t irqlab_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    IrqlabState *s = opaque;
    IrqlabEvent *head = s->evq_count ? &s->evq[s->evq_head] : NULL;
    uint64_t period;

    switch (addr) {
    case IRQLAB_REG_ID:
        return IRQLAB_ID_VALUE;
    case IRQLAB_REG_FEATURES:
        return s->gpio_lines |
               (s->irq_mode << IRQLAB_FEAT_IRQ_MODE_SHIFT) |
               (s->broken_intx_disable ? IRQLAB_FEAT_BROKEN_INTX : 0);
    case IRQLAB_REG_IRQ_STATUS:
        return irqlab_irq_status(s);
    case IRQLAB_REG_IRQ_ENABLE:
        return s->irq_enable;
    case IRQLAB_REG_IRQ_PENDING:
        return irqlab_pending(s);
    case IRQLAB_REG_SCRATCH:
        return s->scratch;
    case IRQLAB_REG_TIME_LO:
        return irqlab_lo_latch(s, IRQLAB_LATCH_TIME, irqlab_now());
    case IRQLAB_REG_TIME_HI:
        return s->hi_latch[IRQLAB_LATCH_TIME];

    case IRQLAB_REG_GPIO_IN:
        return s->gpio_in;
    case IRQLAB_REG_GPIO_RISING:
        return s->gpio_rising;
    case IRQLAB_REG_GPIO_FALLING:
        return s->gpio_falling;
    case IRQLAB_REG_GPIO_LEVEL_HIGH:
        return s->gpio_level_high;
    case IRQLAB_REG_GPIO_LEVEL_LOW:
        return s->gpio_level_low;
    case IRQLAB_REG_GPIO_IRQ_EN:
        return s->gpio_irq_en;
    case IRQLAB_REG_GPIO_STATUS:
        return s->gpio_status;
    case IRQLAB_REG_GPIO_NLINES:
        return s->gpio_lines;

    case IRQLAB_REG_FIFO_COUNT:
        return s->fifo_count;
    case IRQLAB_REG_FIFO_DEPTH:
        return s->fifo_depth;
    case IRQLAB_REG_FIFO_OVERFLOW:
        return (uint32_t)s->cnt[IRQLAB_CNT_FIFO_OVERFLOW];

    case IRQLAB_REG_BURST_COUNT:
        return s->burst_count;
    case IRQLAB_REG_BURST_REMAINING:
        return s->burst_remaining;
    case IRQLAB_REG_BURST_PERIOD_LO:
        period = s->burst_remaining ? s->burst_active_period
                                    : s->burst_period_ns;
        return irqlab_lo_latch(s, IRQLAB_LATCH_BURST_PERIOD, period);
    case IRQLAB_REG_BURST_PERIOD_HI:
        return s->hi_latch[IRQLAB_LATCH_BURST_PERIOD];

    case IRQLAB_REG_EVQ_COUNT:
        return s->evq_count;
    case IRQLAB_REG_EVQ_DEPTH:
        return s->evq_depth;
    case IRQLAB_REG_EVQ_HEAD_SEQ:
        return head ? head->seq : 0;
    case IRQLAB_REG_EVQ_HEAD_INFO:
        return head ? head->info | IRQLAB_EVINFO_VALID : 0;
    case IRQLAB_REG_EVQ_HEAD_VALUE:
        return head ? head->value : 0;
    case IRQLAB_REG_EVQ_HEAD_TS_LO:
        return irqlab_lo_latch(s, IRQLAB_LATCH_EVQ_HEAD_TS,
                               head ? head->ts : 0);
    case IRQLAB_REG_EVQ_HEAD_TS_HI:
        return s->hi_latch[IRQLAB_LATCH_EVQ_HEAD_TS];
    case IRQLAB_REG_EVQ_OVERFLOW:
        return (uint32_t)s->cnt[IRQLAB_CNT_EVQ_OVERFLOW];

    case IRQLAB_REG_ACK_SEQ:
        return s->ack_seq;
    case IRQLAB_REG_ACK_LAT_LO:
        return irqlab_lo_latch(s, IRQLAB_LATCH_ACK_LAT, s->ack_lat);
    case IRQLAB_REG_ACK_LAT_HI:
        return s->hi_latch[IRQLAB_LATCH_ACK_LAT];
    case IRQLAB_REG_ACK_INVALID:
        return (uint32_t)s->cnt[IRQLAB_CNT_ACK_INVALID];

    case IRQLAB_REG_CNT_RAISED ... IRQLAB_REG_CNT_DROPPED:
        return (uint32_t)s->cnt[IRQLAB_CNT_RAISED +
                                (addr - IRQLAB_REG_CNT_RAISED) / 4];

    case IRQLAB_REG_EVQ_POP:
    case IRQLAB_REG_ACK:
        return 0;   /* write-only */
    default:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "irqlab: read of unknown register 0x%" HWADDR_PRIx "\n",
                      addr);
        return 0;
    }
}

static void irqlab_mmio_write(void *opaque, hwaddr addr, uint64_t val64,
                              unsigned size)
{
    IrqlabState *s = opaque;
    uint32_t val = val64;

    switch (addr) {
    case IRQLAB_REG_IRQ_STATUS:
        /* W1C; the GPIO bit is derived from GPIO_STATUS */
        s->irq_status &= ~(val & ~(1u << IRQLAB_SRC_GPIO));
        break;
    case IRQLAB_REG_IRQ_ENABLE:
        s->irq_enable = val & IRQLAB_SRC_ALL;
        break;
    case IRQLAB_REG_SCRATCH:
        s->scratch = val;
        return;

    case IRQLAB_REG_GPIO_RISING:
        s->gpio_rising = val & s->gpio_mask;
        return;
    case IRQLAB_REG_GPIO_FALLING:
        s->gpio_falling = val & s->gpio_mask;
        return;
    case IRQLAB_REG_GPIO_LEVEL_HIGH:
        s->gpio_level_high = val & s->gpio_mask;
        irqlab_gpio_check_levels(s);
        break;
    case IRQLAB_REG_GPIO_LEVEL_LOW:
        s->gpio_level_low = val & s->gpio_mask;
        irqlab_gpio_check_levels(s);
        break;
    case IRQLAB_REG_GPIO_IRQ_EN:
        s->gpio_irq_en = val & s->gpio_mask;
        break;
    case IRQLAB_REG_GPIO_STATUS:
        /* W1C; a level that still holds latches again at once */
        s->gpio_status &= ~val;
        irqlab_gpio_check_levels(s);
        break;

    case IRQLAB_REG_EVQ_POP:
        irqlab_evq_pop(s);
        return;
    case IRQLAB_REG_ACK:
        irqlab_ack(s, val);
        return;

    default:
        qemu_log_mask(LOG_GUEST_ERROR,
                      "irqlab: write 0x%x to read-only or unknown register 0x%"
                      HWADDR_PRIx "\n", val, addr);
        return;
    }
    irqlab_update_irq(s);
}

static const MemoryRegionOps irqlab_mmio_ops = {
    .read = irqlab_mmio_read,
    .write = irqlab_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
    .impl = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
};

/* ---- QMP control surface: dynamic QOM properties ---------------------- */

/*
 * The setters below run on a realized device only: the header marks their
 * properties IRQLAB_SET_AT_RUN and irqlab_prop_set refuses them before
 * realize (gpio_mask, say, is not known before).
 */
static bool irqlab_visit_mask(IrqlabState *s, Visitor *v, const char *name,
                              uint32_t *mask, Error **errp)
{
    if (!visit_type_uint32(v, name, mask, errp)) {
        return false;
    }
    if (*mask & ~s->gpio_mask) {
        error_setg(errp, "irqlab: %s mask 0x%x names lines beyond "
                   IRQLAB_PROP_GPIO_LINES "=%u (valid bits 0x%x)",
                   name, *mask, s->gpio_lines, s->gpio_mask);
        return false;
    }
    return true;
}

static void irqlab_get_gpio_in(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    uint32_t value = s->gpio_in;

    visit_type_uint32(v, name, &value, errp);
}

/* gpio-in, gpio-set, gpio-clear and gpio-pulse: opaque is the operation */
enum {
    IRQLAB_GPIO_OP_IN,
    IRQLAB_GPIO_OP_SET,
    IRQLAB_GPIO_OP_CLEAR,
    IRQLAB_GPIO_OP_PULSE,
};

static void irqlab_set_gpio(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    uint32_t mask, levels = s->gpio_in;

    if (!irqlab_visit_mask(s, v, name, &mask, errp)) {
        return;
    }
    switch (GPOINTER_TO_INT(opaque)) {
    case IRQLAB_GPIO_OP_IN:
        irqlab_gpio_drive(s, mask);
        break;
    case IRQLAB_GPIO_OP_SET:
        irqlab_gpio_drive(s, levels | mask);
        break;
    case IRQLAB_GPIO_OP_CLEAR:
        irqlab_gpio_drive(s, levels & ~mask);
        break;
    default:
        irqlab_gpio_drive(s, levels ^ mask);
        irqlab_gpio_drive(s, levels);
        break;
    }
}

static void irqlab_set_fifo_push(Object *obj, Visitor *v, const char *name,
                                 void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    uint32_t word;

    if (!visit_type_uint32(v, name, &word, errp)) {
        return;
    }
    if (s->fifo_count >= s->fifo_depth) {
        s->cnt[IRQLAB_CNT_FIFO_OVERFLOW]++;
        s->cnt[IRQLAB_CNT_DROPPED]++;
        s->evq_lost = true;     /* flag the next queued event */
        return;
    }
    irqlab_raise_latched(s, IRQLAB_SRC_FIFO, word, irqlab_now());
    irqlab_update_irq(s);
}

/*
 * burst-period-ns, burst-count and burst-line: one accessor each, for
 * qom-get (an output visitor: the value is read) and qom-set (an input
 * visitor: the value is checked, then applied).
 */
static void irqlab_burst_period(Object *obj, Visitor *v, const char *name,
                                void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    uint64_t value = s->burst_period_ns;

    if (!visit_type_uint64(v, name, &value, errp) || !visit_is_input(v)) {
        return;
    }
    if (value < IRQLAB_MIN_BURST_PERIOD_NS ||
        value > IRQLAB_MAX_BURST_PERIOD_NS) {
        error_setg(errp, "irqlab: %s %" PRIu64 " out of range [%llu, %llu]",
                   name, value, (unsigned long long)IRQLAB_MIN_BURST_PERIOD_NS,
                   (unsigned long long)IRQLAB_MAX_BURST_PERIOD_NS);
        return;
    }
    s->burst_period_ns = value;
}

/* get: events remaining; set: start a burst of that many (0 stops) */
static void irqlab_burst_count(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    uint32_t count = s->burst_remaining;

    if (visit_type_uint32(v, name, &count, errp) && visit_is_input(v)) {
        irqlab_burst_start(s, count);
    }
}

/* Which GPIO line the next burst toggles; fixed while a burst runs */
static void irqlab_burst_line(Object *obj, Visitor *v, const char *name,
                              void *opaque, Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    int64_t line = s->burst_line;

    if (!visit_type_int(v, name, &line, errp) || !visit_is_input(v)) {
        return;
    }
    if (line < IRQLAB_BURST_LINE_NONE || line >= (int64_t)s->gpio_lines) {
        error_setg(errp, "irqlab: %s %" PRId64 " out of range [%d, %u] "
                   "(%d: burst events, else a line below "
                   IRQLAB_PROP_GPIO_LINES "=%u)",
                   name, line, IRQLAB_BURST_LINE_NONE, s->gpio_lines - 1,
                   IRQLAB_BURST_LINE_NONE, s->gpio_lines);
        return;
    }
    if (line != s->burst_line && s->burst_remaining) {
        error_setg(errp, "irqlab: %s cannot change while a burst runs "
                   "(%u events remaining; stop it with "
                   IRQLAB_PROP_BURST_COUNT "=0)",
                   name, s->burst_remaining);
        return;
    }
    s->burst_line = line;
}

static void irqlab_visit_u64_fields(Visitor *v, const char *name,
                                    const char *const *names,
                                    const uint64_t *values, size_t n,
                                    const uint64_t *buckets, Error **errp)
{
    uint64_t value;
    size_t i;

    if (!visit_start_struct(v, name, NULL, 0, errp)) {
        return;
    }
    for (i = 0; i < n; i++) {
        value = values[i];
        if (!visit_type_uint64(v, names[i], &value, errp)) {
            goto out;
        }
    }
    if (buckets) {
        if (!visit_start_list(v, IRQLAB_HISTOGRAM_BUCKETS, NULL, 0, errp)) {
            goto out;
        }
        for (i = 0; i < IRQLAB_HIST_BUCKETS; i++) {
            value = buckets[i];
            if (!visit_type_uint64(v, NULL, &value, errp)) {
                break;
            }
        }
        visit_end_list(v, NULL);
    }
    visit_check_struct(v, errp);
out:
    visit_end_struct(v, NULL);
}

static void irqlab_get_counters(Object *obj, Visitor *v, const char *name,
                                void *opaque, Error **errp)
{
    static const char *const names[] = {
        [IRQLAB_CNT_RAISED] = IRQLAB_COUNTER_RAISED,
        [IRQLAB_CNT_DELIVERED] = IRQLAB_COUNTER_DELIVERED,
        [IRQLAB_CNT_ACKED] = IRQLAB_COUNTER_ACKED,
        [IRQLAB_CNT_COALESCED] = IRQLAB_COUNTER_COALESCED,
        [IRQLAB_CNT_DROPPED] = IRQLAB_COUNTER_DROPPED,
        [IRQLAB_CNT_FIFO_OVERFLOW] = IRQLAB_COUNTER_FIFO_OVERFLOW,
        [IRQLAB_CNT_EVQ_OVERFLOW] = IRQLAB_COUNTER_EVQ_OVERFLOW,
        [IRQLAB_CNT_ACK_INVALID] = IRQLAB_COUNTER_ACK_INVALID,
        [IRQLAB_CNT_NUM] = IRQLAB_COUNTER_EVQ_COUNT,
        [IRQLAB_CNT_NUM + 1] = IRQLAB_COUNTER_NEXT_SEQ,
    };
    IrqlabState *s = IRQLAB(obj);
    uint64_t values[ARRAY_SIZE(names)];

    memcpy(values, s->cnt, sizeof(s->cnt));
    values[IRQLAB_CNT_NUM] = s->evq_count;
    values[IRQLAB_CNT_NUM + 1] = s->next_seq;

    irqlab_visit_u64_fields(v, name, names, values, ARRAY_SIZE(names),
                            NULL, errp);
}

static void irqlab_get_histogram(Object *obj, Visitor *v, const char *name,
                                 void *opaque, Error **errp)
{
    static const char *const names[] = {
        IRQLAB_HISTOGRAM_COUNT, IRQLAB_HISTOGRAM_SUM_NS,
        IRQLAB_HISTOGRAM_MIN_NS, IRQLAB_HISTOGRAM_MAX_NS,
    };
    IrqlabState *s = IRQLAB(obj);
    const IrqlabHist *h = &s->hist;
    const uint64_t values[] = {
        h->count, h->sum, h->count ? h->min : 0, h->max,
    };

    irqlab_visit_u64_fields(v, name, names, values, ARRAY_SIZE(names),
                            h->buckets, errp);
}

static void irqlab_set_reset_counters(Object *obj, Visitor *v,
                                      const char *name, void *opaque,
                                      Error **errp)
{
    IrqlabState *s = IRQLAB(obj);
    bool value;

    if (visit_type_bool(v, name, &value, errp) && value) {
        irqlab_reset_counters(s);
    }
}

/* ---- lifecycle -------------------------------------------------------- */

static bool irqlab_check_range(const char *name, uint32_t value,
                               uint32_t min, uint32_t max, Error **errp)
{
    if (value < min || value > max) {
        error_setg(errp, "irqlab: %s=%u out of range [%u, %u]",
                   name, value, min, max);
        return false;
    }
    return true;
}

static void irqlab_realize(PCIDevice *pdev, Error **errp)
{
    IrqlabState *s = IRQLAB(pdev);
    const char *mode = s->irq_mode_str ? s->irq_mode_str : "msix";

    if (!strcmp(mode, "intx")) {
        s->irq_mode = IRQLAB_IRQ_MODE_INTX;
    } else if (!strcmp(mode, "msi")) {
        s->irq_mode = IRQLAB_IRQ_MODE_MSI;
    } else if (!strcmp(mode, "msix")) {
        s->irq_mode = IRQLAB_IRQ_MODE_MSIX;
    } else {
        error_setg(errp, "irqlab: irq-mode must be intx, msi or msix, "
                   "not '%s'", mode);
        return;
    }
    if (!irqlab_check_range(IRQLAB_PROP_GPIO_LINES, s->gpio_lines, 1,
                            IRQLAB_MAX_GPIO_LINES, errp) ||
        !irqlab_check_range(IRQLAB_PROP_FIFO_DEPTH, s->fifo_depth, 1,
                            IRQLAB_MAX_FIFO_DEPTH, errp) ||
        !irqlab_check_range(IRQLAB_PROP_EVQ_DEPTH, s->evq_depth, 1,
                            IRQLAB_MAX_EVQ_DEPTH, errp)) {
        return;
    }
    s->gpio_mask = s->gpio_lines == 32 ? UINT32_MAX
                                       : (1u << s->gpio_lines) - 1;

    pci_config_set_interrupt_pin(pdev->config, 1);
    if (s->broken_intx_disable) {
        /* like hardware without the PCI 2.3 INTx disable bit */
        pci_word_test_and_clear_mask(pdev->wmask + PCI_COMMAND,
                                     PCI_COMMAND_INTX_DISABLE);
    }

    memory_region_init(&s->bar0, OBJECT(s), "irqlab-bar0", IRQLAB_BAR0_SIZE);
    memory_region_init_io(&s->regs, OBJECT(s), &irqlab_mmio_ops, s,
                          "irqlab-regs", IRQLAB_MSIX_TABLE_OFFSET);
    memory_region_add_subregion(&s->bar0, 0, &s->regs);

    if (s->irq_mode == IRQLAB_IRQ_MODE_MSI) {
        if (msi_init(pdev, 0, 1, true, false, errp)) {
            memory_region_del_subregion(&s->bar0, &s->regs);
            return;
        }
    } else if (s->irq_mode == IRQLAB_IRQ_MODE_MSIX) {
        unsigned v;

        if (msix_init(pdev, IRQLAB_NUM_SOURCES,
                      &s->bar0, 0, IRQLAB_MSIX_TABLE_OFFSET,
                      &s->bar0, 0, IRQLAB_MSIX_PBA_OFFSET, 0, errp)) {
            memory_region_del_subregion(&s->bar0, &s->regs);
            return;
        }
        for (v = 0; v < IRQLAB_NUM_SOURCES; v++) {
            msix_vector_use(pdev, v);
        }
        msix_set_vector_notifiers(pdev, irqlab_msix_vector_use,
                                  irqlab_msix_vector_release, NULL);
    }
    pci_register_bar(pdev, 0, PCI_BASE_ADDRESS_SPACE_MEMORY, &s->bar0);

    timer_init_ns(&s->burst_timer, QEMU_CLOCK_VIRTUAL, irqlab_burst_tick, s);
}

static void irqlab_exit(PCIDevice *pdev)
{
    IrqlabState *s = IRQLAB(pdev);

    timer_del(&s->burst_timer);
    if (s->irq_mode == IRQLAB_IRQ_MODE_MSIX) {
        msix_unset_vector_notifiers(pdev);
        msix_uninit(pdev, &s->bar0, &s->bar0);
    } else if (s->irq_mode == IRQLAB_IRQ_MODE_MSI) {
        msi_uninit(pdev);
    }
    /*
     * The subregion holds a reference on the device: without this the
     * device is never finalized and device_del never completes.
     */
    memory_region_del_subregion(&s->bar0, &s->regs);
}

/*
 * Reset clears what the guest configured; the host side (input levels,
 * burst period, counters, histogram, sequence numbers) stays.
 */
static void irqlab_reset(DeviceState *dev)
{
    IrqlabState *s = IRQLAB(dev);

    timer_del(&s->burst_timer);
    s->burst_remaining = 0;
    s->irq_status = 0;
    s->irq_enable = 0;
    s->scratch = 0;
    memset(s->hi_latch, 0, sizeof(s->hi_latch));
    s->gpio_rising = 0;
    s->gpio_falling = 0;
    s->gpio_level_high = 0;
    s->gpio_level_low = 0;
    s->gpio_irq_en = 0;
    s->gpio_status = 0;
    s->evq_head = 0;
    s->evq_count = 0;
    s->evq_lost = false;
    s->fifo_count = 0;
    /* the events are gone: none of them can be acknowledged any more */
    memset(s->ack_win_seq, 0, sizeof(s->ack_win_seq));
    s->ack_seq = 0;
    s->ack_lat = 0;
    s->last_pending = 0;
    s->route = IRQLAB_ROUTE_INTX;
    s->intx_level = false;  /* the PCI core deasserts INTx itself */
}

static void irqlab_instance_init(Object *obj)
{
    IrqlabState *s = IRQLAB(obj);

    s->irq_mode_str = g_strdup("msix");
    s->burst_period_ns = IRQLAB_DEFAULT_BURST_PERIOD;
    s->burst_line = IRQLAB_BURST_LINE_NONE;
    s->next_seq = 1;
    irqlab_reset_counters(s);
}

static int irqlab_pre_save(void *opaque)
{
    IrqlabState *s = opaque;

    s->stream_broken_intx = s->broken_intx_disable;
    return 0;
}

/* A stream without a subsection had that subsection's default */
static int irqlab_pre_load(void *opaque)
{
    IrqlabState *s = opaque;

    s->burst_line = IRQLAB_BURST_LINE_NONE;
    s->stream_broken_intx = false;
    return 0;
}

static bool irqlab_period_ok(uint64_t period)
{
    return period >= IRQLAB_MIN_BURST_PERIOD_NS &&
           period <= IRQLAB_MAX_BURST_PERIOD_NS;
}

/*
 * Our INTx line is the PCI core's (irq_state, migrated with the function),
 * only the INTx route raises it, and there it is high exactly while a source
 * is pending.  A line high on another route is never lowered again: INTA
 * stuck for good.
 */
static bool irqlab_intx_level_ok(IrqlabState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    bool line = pdev->irq_state & (1u << pci_intx(pdev));

    if (s->intx_level != line) {
        return false;
    }
    if (s->route != IRQLAB_ROUTE_INTX) {
        return !s->intx_level;
    }
    return s->intx_level == (s->last_pending != 0);
}

/*
 * A queued event as irqlab_raise_event() makes it: a sequence number (never
 * 0), a GPIO event's line below gpio-lines and kind one of the four, no line
 * or kind for the other sources, no bit beyond the fields but DROPPED (VALID
 * is added when the head is read).  The guest's driver indexes its lines by
 * the line field.
 */
static bool irqlab_event_ok(IrqlabState *s, const IrqlabEvent *ev)
{
    uint32_t fields = IRQLAB_EVINFO_SRC_MASK | IRQLAB_EVINFO_LINE_MASK |
                      IRQLAB_EVINFO_DROPPED | IRQLAB_EVINFO_KIND_MASK;
    uint32_t line = (ev->info & IRQLAB_EVINFO_LINE_MASK) >>
                    IRQLAB_EVINFO_LINE_SHIFT;
    uint32_t kind = (ev->info & IRQLAB_EVINFO_KIND_MASK) >>
                    IRQLAB_EVINFO_KIND_SHIFT;

    if (!ev->seq || (ev->info & ~fields)) {
        return false;
    }
    if ((ev->info & IRQLAB_EVINFO_SRC_MASK) == IRQLAB_SRC_GPIO) {
        return line < s->gpio_lines && kind <= IRQLAB_KIND_LEVEL_LOW;
    }
    return !line && !kind;
}

/*
 * Refuse a stream whose state the device could never reach: every index
 * and divisor the device uses later comes from here.
 */
static int irqlab_post_load(void *opaque, int version_id)
{
    IrqlabState *s = opaque;
    uint32_t gpio_regs = s->gpio_in | s->gpio_rising | s->gpio_falling |
                         s->gpio_level_high | s->gpio_level_low |
                         s->gpio_irq_en | s->gpio_status;
    uint32_t fifo = 0, i;

    /*
     * COMMAND.INTX_DISABLE is writable on one side only: set on a source
     * without the property it would stay set for good (INTx dead).
     */
    if (s->stream_broken_intx != s->broken_intx_disable) {
        error_report("irqlab: " IRQLAB_PROP_BROKEN_INTX_DISABLE " differs "
                     "(source %s, destination %s)",
                     s->stream_broken_intx ? "on" : "off",
                     s->broken_intx_disable ? "on" : "off");
        return -EINVAL;
    }
    if (s->evq_head >= s->evq_depth || s->evq_count > s->evq_depth ||
        s->fifo_count > s->evq_count || s->fifo_count > s->fifo_depth ||
        !s->next_seq || (gpio_regs & ~s->gpio_mask) ||
        (s->irq_status | s->irq_enable | s->last_pending) & ~IRQLAB_SRC_ALL ||
        !irqlab_period_ok(s->burst_period_ns) ||
        s->burst_line < IRQLAB_BURST_LINE_NONE ||
        s->burst_line >= (int64_t)s->gpio_lines) {
        return -EINVAL;
    }
    if (s->burst_remaining &&
        (!irqlab_period_ok(s->burst_active_period) ||
         (uint64_t)s->burst_next + s->burst_remaining > s->burst_count)) {
        return -EINVAL;
    }
    for (i = 0; i < s->evq_count; i++) {
        const IrqlabEvent *ev = &s->evq[(s->evq_head + i) % s->evq_depth];
        uint32_t src = ev->info & IRQLAB_EVINFO_SRC_MASK;

        if (src >= IRQLAB_NUM_SOURCES) {
            return -EINVAL;
        }
        if (!irqlab_event_ok(s, ev)) {
            error_report("irqlab: queued event seq %u info 0x%x is not one "
                         "the device raises", ev->seq, ev->info);
            return -EINVAL;
        }
        fifo += src == IRQLAB_SRC_FIFO;
    }
    if (fifo != s->fifo_count) {
        return -EINVAL;
    }
    /*
     * IRQ_PENDING when last signalled is IRQ_PENDING now after every access:
     * a stale copy on MSI/MSI-X turns the next 0->1 into no message at all
     * (a lost interrupt), or signals a condition that went away.
     */
    if (s->last_pending != irqlab_pending(s)) {
        error_report("irqlab: last signalled IRQ_PENDING 0x%x differs from "
                     "IRQ_STATUS & IRQ_ENABLE 0x%x", s->last_pending,
                     irqlab_pending(s));
        return -EINVAL;
    }
    s->route = irqlab_compute_route(s);
    if (!irqlab_intx_level_ok(s)) {
        error_report("irqlab: INTx level %d does not match the stream's "
                     "route and PCI interrupt state", s->intx_level);
        return -EINVAL;
    }
    /*
     * A message waits in the PBA only on the MSI-X route and while its
     * source is pending (irqlab_update_irq()); one a build before that
     * left behind for a serviced source would be sent on unmask: withdraw it.
     */
    if (s->irq_mode == IRQLAB_IRQ_MODE_MSIX) {
        uint32_t keep = s->route == IRQLAB_ROUTE_MSIX ? s->last_pending : 0;

        for (i = 0; i < IRQLAB_NUM_SOURCES; i++) {
            if (!(keep & (1u << i))) {
                msix_clr_pending(PCI_DEVICE(s), i);
            }
        }
    }
    /* a running burst always waits on its timer (unless never due again) */
    if (s->burst_remaining && !timer_pending(&s->burst_timer) &&
        irqlab_burst_deadline(s) != INT64_MAX) {
        timer_mod(&s->burst_timer, irqlab_burst_deadline(s));
    }
    return 0;
}

static const VMStateDescription vmstate_irqlab_event = {
    .name = "irqlab/event",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (VMStateField[]) {
        VMSTATE_UINT32(seq, IrqlabEvent),
        VMSTATE_UINT32(info, IrqlabEvent),
        VMSTATE_UINT32(value, IrqlabEvent),
        VMSTATE_UINT64(ts, IrqlabEvent),
        VMSTATE_END_OF_LIST()
    }
};

static const VMStateDescription vmstate_irqlab_hist = {
    .name = "irqlab/latency-histogram",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (VMStateField[]) {
        VMSTATE_UINT64_ARRAY(buckets, IrqlabHist, IRQLAB_HIST_BUCKETS),
        VMSTATE_UINT64(count, IrqlabHist),
        VMSTATE_UINT64(sum, IrqlabHist),
        VMSTATE_UINT64(min, IrqlabHist),
        VMSTATE_UINT64(max, IrqlabHist),
        VMSTATE_END_OF_LIST()
    }
};

static bool irqlab_burst_line_needed(void *opaque)
{
    IrqlabState *s = opaque;

    return s->burst_line != IRQLAB_BURST_LINE_NONE;
}

static const VMStateDescription vmstate_irqlab_burst_line = {
    .name = "irqlab/burst-line",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = irqlab_burst_line_needed,
    .fields = (VMStateField[]) {
        VMSTATE_INT32(burst_line, IrqlabState),
        VMSTATE_END_OF_LIST()
    }
};

static bool irqlab_broken_intx_needed(void *opaque)
{
    IrqlabState *s = opaque;

    return s->broken_intx_disable;
}

/* Sent when on: the destination compares it in post_load */
static const VMStateDescription vmstate_irqlab_broken_intx = {
    .name = "irqlab/broken-intx-disable",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = irqlab_broken_intx_needed,
    .fields = (VMStateField[]) {
        VMSTATE_BOOL(stream_broken_intx, IrqlabState),
        VMSTATE_END_OF_LIST()
    }
};

/* Not const: QEMU 7.2 declares the member without the inner const */
static const VMStateDescription *irqlab_vmstate_subsections[] = {
    &vmstate_irqlab_burst_line,
    &vmstate_irqlab_broken_intx,
    NULL
};

static const VMStateDescription vmstate_irqlab = {
    .name = TYPE_IRQLAB,
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = irqlab_pre_save,
    .pre_load = irqlab_pre_load,
    .post_load = irqlab_post_load,
    .fields = (VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, IrqlabState),
        VMSTATE_MSIX(parent_obj, IrqlabState),
        VMSTATE_UINT32_EQUAL(irq_mode, IrqlabState, "irq-mode differs"),
        VMSTATE_UINT32_EQUAL(gpio_lines, IrqlabState, "gpio-lines differs"),
        VMSTATE_UINT32_EQUAL(fifo_depth, IrqlabState, "fifo-depth differs"),
        VMSTATE_UINT32_EQUAL(evq_depth, IrqlabState, "evq-depth differs"),
        VMSTATE_UINT32(irq_status, IrqlabState),
        VMSTATE_UINT32(irq_enable, IrqlabState),
        VMSTATE_UINT32(scratch, IrqlabState),
        VMSTATE_UINT32_ARRAY(hi_latch, IrqlabState, IRQLAB_LATCH_NUM),
        VMSTATE_UINT32(gpio_in, IrqlabState),
        VMSTATE_UINT32(gpio_rising, IrqlabState),
        VMSTATE_UINT32(gpio_falling, IrqlabState),
        VMSTATE_UINT32(gpio_level_high, IrqlabState),
        VMSTATE_UINT32(gpio_level_low, IrqlabState),
        VMSTATE_UINT32(gpio_irq_en, IrqlabState),
        VMSTATE_UINT32(gpio_status, IrqlabState),
        VMSTATE_UINT32(fifo_count, IrqlabState),
        VMSTATE_UINT64(burst_period_ns, IrqlabState),
        VMSTATE_UINT64(burst_active_period, IrqlabState),
        VMSTATE_INT64(burst_start, IrqlabState),
        VMSTATE_UINT32(burst_count, IrqlabState),
        VMSTATE_UINT32(burst_next, IrqlabState),
        VMSTATE_UINT32(burst_remaining, IrqlabState),
        VMSTATE_TIMER(burst_timer, IrqlabState),
        VMSTATE_STRUCT_VARRAY_UINT32(evq, IrqlabState, evq_depth, 1,
                                     vmstate_irqlab_event, IrqlabEvent),
        VMSTATE_UINT32(evq_head, IrqlabState),
        VMSTATE_UINT32(evq_count, IrqlabState),
        VMSTATE_BOOL(evq_lost, IrqlabState),
        VMSTATE_UINT32(next_seq, IrqlabState),
        VMSTATE_UINT32_ARRAY(ack_win_seq, IrqlabState, IRQLAB_ACK_WINDOW),
        VMSTATE_UINT64_ARRAY(ack_win_ts, IrqlabState, IRQLAB_ACK_WINDOW),
        VMSTATE_UINT32(ack_seq, IrqlabState),
        VMSTATE_UINT64(ack_lat, IrqlabState),
        VMSTATE_UINT32(last_pending, IrqlabState),
        VMSTATE_BOOL(intx_level, IrqlabState),
        VMSTATE_UINT64_ARRAY(cnt, IrqlabState, IRQLAB_CNT_NUM),
        VMSTATE_STRUCT(hist, IrqlabState, 1, vmstate_irqlab_hist, IrqlabHist),
        VMSTATE_END_OF_LIST()
    },
    .subsections = irqlab_vmstate_subsections,
};

/*
 * The qdev properties are the start-time ones (QEMU refuses to set them once
 * the device is realized): IRQLAB_START_PROP(NAME) is IRQLAB_PROP_NAME, and
 * fails the build unless the header marks it IRQLAB_SET_AT_START.
 */
#define IRQLAB_START_PROP(NAME) \
    (IRQLAB_PROP_##NAME + QEMU_BUILD_BUG_ON_ZERO( \
        IRQLAB_PROP_##NAME##_WHEN != IRQLAB_SET_AT_START))

#if IRQLAB_QEMU_AT_LEAST(10, 0)
static const Property irqlab_properties[] = {
#else
static Property irqlab_properties[] = {
#endif
    DEFINE_PROP_STRING(IRQLAB_START_PROP(IRQ_MODE), IrqlabState,
                       irq_mode_str),
    DEFINE_PROP_BOOL(IRQLAB_START_PROP(BROKEN_INTX_DISABLE), IrqlabState,
                     broken_intx_disable, false),
    DEFINE_PROP_UINT32(IRQLAB_START_PROP(GPIO_LINES), IrqlabState,
                       gpio_lines, IRQLAB_MAX_GPIO_LINES),
    DEFINE_PROP_UINT32(IRQLAB_START_PROP(FIFO_DEPTH), IrqlabState,
                       fifo_depth, IRQLAB_DEFAULT_FIFO_DEPTH),
    DEFINE_PROP_UINT32(IRQLAB_START_PROP(EVQ_DEPTH), IrqlabState,
                       evq_depth, IRQLAB_DEFAULT_EVQ_DEPTH),
#if !IRQLAB_QEMU_AT_LEAST(10, 0)
    DEFINE_PROP_END_OF_LIST(),
#endif
};

/*
 * The other properties: runtime controls and read-only ones, registered as
 * the header's IRQLAB_PROP_<NAME>_WHEN marks them (irqlab_add_props).
 */
typedef struct IrqlabProp {
    const char *name;
    int when;                   /* IRQLAB_SET_AT_RUN or IRQLAB_SET_NEVER */
    const char *type;
    ObjectPropertyAccessor *get;
    ObjectPropertyAccessor *set;
    int op;                     /* the accessors' opaque */
    const char *desc;
} IrqlabProp;

/*
 * A runtime control (a setter) and a read-only property (none): each fails
 * the build unless the header marks NAME so.
 */
#define IRQLAB_RUN_PROP(NAME, type, get, set, op, desc) \
    { IRQLAB_PROP_##NAME, \
      IRQLAB_PROP_##NAME##_WHEN + QEMU_BUILD_BUG_ON_ZERO( \
          IRQLAB_PROP_##NAME##_WHEN != IRQLAB_SET_AT_RUN), \
      type, get, set, op, desc }
#define IRQLAB_RO_PROP(NAME, type, get, desc) \
    { IRQLAB_PROP_##NAME, \
      IRQLAB_PROP_##NAME##_WHEN + QEMU_BUILD_BUG_ON_ZERO( \
          IRQLAB_PROP_##NAME##_WHEN != IRQLAB_SET_NEVER), \
      type, get, NULL, 0, desc }

static const IrqlabProp irqlab_dynamic_props[] = {
    IRQLAB_RUN_PROP(GPIO_IN, "uint32", irqlab_get_gpio_in, irqlab_set_gpio,
                    IRQLAB_GPIO_OP_IN, "GPIO input levels, one bit per line"),
    IRQLAB_RUN_PROP(GPIO_SET, "uint32", NULL, irqlab_set_gpio,
                    IRQLAB_GPIO_OP_SET,
                    "drive the GPIO lines in the mask high"),
    IRQLAB_RUN_PROP(GPIO_CLEAR, "uint32", NULL, irqlab_set_gpio,
                    IRQLAB_GPIO_OP_CLEAR,
                    "drive the GPIO lines in the mask low"),
    IRQLAB_RUN_PROP(GPIO_PULSE, "uint32", NULL, irqlab_set_gpio,
                    IRQLAB_GPIO_OP_PULSE,
                    "toggle the GPIO lines in the mask and back"),
    IRQLAB_RUN_PROP(FIFO_PUSH, "uint32", NULL, irqlab_set_fifo_push, 0,
                    "push one 32-bit word into the FIFO"),
    IRQLAB_RUN_PROP(BURST_PERIOD_NS, "uint64", irqlab_burst_period,
                    irqlab_burst_period, 0,
                    "period of the next burst in ns, "
                    stringify(IRQLAB_MIN_BURST_PERIOD_NS) ".."
                    stringify(IRQLAB_MAX_BURST_PERIOD_NS)),
    IRQLAB_RUN_PROP(BURST_COUNT, "uint32", irqlab_burst_count,
                    irqlab_burst_count, 0,
                    "set: start a burst of N events (0 stops); "
                    "get: events remaining"),
    IRQLAB_RUN_PROP(BURST_LINE, "int", irqlab_burst_line, irqlab_burst_line,
                    0, "-1: bursts raise BURST events; 0..gpio-lines-1: "
                    "each burst step toggles that GPIO input"),
    IRQLAB_RO_PROP(COUNTERS, "IrqlabCounters", irqlab_get_counters,
                   "raised, delivered, acked, coalesced, dropped, ..."),
    IRQLAB_RO_PROP(LATENCY_HISTOGRAM, "IrqlabLatencyHistogram",
                   irqlab_get_histogram,
                   "raise->ack latency: count, sum-ns, min-ns, max-ns, "
                   "log2 buckets"),
    IRQLAB_RUN_PROP(RESET_COUNTERS, "bool", NULL, irqlab_set_reset_counters,
                    0, "true: zero the counters and the histogram"),
};

static void irqlab_prop_get(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    const IrqlabProp *p = opaque;

    p->get(obj, v, name, GINT_TO_POINTER(p->op), errp);
}

/* A runtime control acts on a realized device only */
static void irqlab_prop_set(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    const IrqlabProp *p = opaque;

    if (p->when == IRQLAB_SET_AT_RUN && !DEVICE(obj)->realized) {
        error_setg(errp, "irqlab: property '%s' acts on a running device; "
                   "set it with qom-set after realize", name);
        return;
    }
    p->set(obj, v, name, GINT_TO_POINTER(p->op), errp);
}

static void irqlab_add_props(ObjectClass *klass)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(irqlab_dynamic_props); i++) {
        const IrqlabProp *p = &irqlab_dynamic_props[i];

        /* a runtime control has a setter, a read-only property none */
        assert((p->when == IRQLAB_SET_AT_RUN) == (p->set != NULL));
        object_class_property_add(klass, p->name, p->type,
                                  p->get ? irqlab_prop_get : NULL,
                                  p->set ? irqlab_prop_set : NULL, NULL,
                                  (void *)p);
        object_class_property_set_description(klass, p->name, p->desc);
    }
}

static void irqlab_class_init(ObjectClass *klass, IrqlabClassData *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = irqlab_realize;
    k->exit = irqlab_exit;
    k->config_write = irqlab_config_write;
    k->vendor_id = IRQLAB_PCI_VENDOR_ID;
    k->device_id = IRQLAB_PCI_DEVICE_ID;
    k->revision = IRQLAB_PCI_REVISION;
    k->class_id = IRQLAB_PCI_CLASS;
    dc->desc = "irqlab interrupt test device";
    dc->vmsd = &vmstate_irqlab;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
#if IRQLAB_QEMU_AT_LEAST(9, 2)
    device_class_set_legacy_reset(dc, irqlab_reset);
#else
    dc->reset = irqlab_reset;
#endif
    device_class_set_props(dc, irqlab_properties);
    object_class_property_set_description(klass, IRQLAB_PROP_IRQ_MODE,
        "interrupt delivery: intx, msi or msix (default msix)");
    object_class_property_set_description(klass,
        IRQLAB_PROP_BROKEN_INTX_DISABLE,
        "make COMMAND.INTX_DISABLE read-only 0");
    object_class_property_set_description(klass, IRQLAB_PROP_GPIO_LINES,
        "number of GPIO lines, 1.." stringify(IRQLAB_MAX_GPIO_LINES));
    object_class_property_set_description(klass, IRQLAB_PROP_FIFO_DEPTH,
        "FIFO words that may wait in the event queue, 1.."
        stringify(IRQLAB_MAX_FIFO_DEPTH));
    object_class_property_set_description(klass, IRQLAB_PROP_EVQ_DEPTH,
        "event queue depth, 1.." stringify(IRQLAB_MAX_EVQ_DEPTH));

    irqlab_add_props(klass);
}

static const TypeInfo irqlab_info = {
    .name = TYPE_IRQLAB,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(IrqlabState),
    .instance_init = irqlab_instance_init,
    .class_init = irqlab_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { },
    },
};

static void irqlab_register_types(void)
{
    type_register_static(&irqlab_info);
}

type_init(irqlab_register_types)
