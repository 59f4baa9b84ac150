"""A seeded random walk through the device: thousands of valid MMIO accesses and QMP
actions (GPIO, FIFO, bursts, ACKs, masks, resets, migrations to a file and back),
checking after every step that QEMU answers and the spec's counting rules hold.

A failure names its seed, step and the last actions; replay one seed with
``IRQLAB_RANDOM_SEED=<seed> invoke test-device -k random``.  ``IRQLAB_RANDOM_STEPS``
sets the steps per seed (default 1000 under ``invoke test-all``, 2500 under ``invoke soak``).
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
from devrig import Rig, RigFactory, device_arg, migrate_in, migrate_out

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import QtestIrqlab
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

SEEDS = [int(os.environ["IRQLAB_RANDOM_SEED"])] if "IRQLAB_RANDOM_SEED" in os.environ else [1, 2]
STEPS = (1000, 2500)  # per seed (test-all, soak); $IRQLAB_RANDOM_STEPS overrides both
MIGRATE_EVERY = 800  # expected steps between two migrations
PROPS: dict[str, object] = {"irq_mode": "msix", "gpio_lines": 8, "fifo_depth": 6, "evq_depth": 12}
LINES = 8
ALL = (1 << LINES) - 1
U32 = 0xFFFF_FFFF
GPIO_RW = ("GPIO_RISING", "GPIO_FALLING", "GPIO_LEVEL_HIGH", "GPIO_LEVEL_LOW", "GPIO_IRQ_EN")
READABLE = (
    "ID", "FEATURES", "IRQ_STATUS", "IRQ_ENABLE", "IRQ_PENDING", "SCRATCH", "TIME_LO",
    "TIME_HI", "GPIO_IN", *GPIO_RW, "GPIO_STATUS", "GPIO_NLINES", "FIFO_COUNT", "FIFO_DEPTH",
    "FIFO_OVERFLOW", "BURST_COUNT", "BURST_REMAINING", "BURST_PERIOD_LO", "BURST_PERIOD_HI",
    "EVQ_COUNT", "EVQ_DEPTH", "EVQ_HEAD_SEQ", "EVQ_HEAD_INFO", "EVQ_HEAD_VALUE",
    "EVQ_HEAD_TS_LO", "EVQ_HEAD_TS_HI", "EVQ_OVERFLOW", "ACK_SEQ", "ACK_LAT_LO",
    "ACK_LAT_HI", "ACK_INVALID", "CNT_RAISED", "CNT_DELIVERED", "CNT_ACKED",
    "CNT_COALESCED", "CNT_DROPPED",
)  # fmt: skip


def seq_after(seq: int, n: int) -> int:
    """The sequence number *n* raises after *seq* (32 bits, 0 skipped)."""
    return (seq - 1 + n) % U32 + 1


class Walk:
    def __init__(self, seed: int, rig: Rig, restart: Callable[[Path], Rig], tmp_path: Path) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.rig = rig
        self.restart = restart
        self.tmp_path = tmp_path
        self.log: deque[str] = deque(maxlen=12)
        self.seen_seqs: list[int] = []  # raise seqs of recent popped events, for ACKs
        self.acks = 0  # ACK writes since the counters were reset
        self.last = rig.inj.counters()
        self.migrations = 0

    @property
    def dev(self) -> QtestIrqlab:
        return self.rig.dev

    @property
    def inj(self) -> Injector:
        return self.rig.inj

    # -- actions ---------------------------------------------------------------------
    def step(self, migrate: bool = False) -> None:
        """One random action; *migrate*: a migration to a file and back instead."""
        r = self.rng
        actions: list[tuple[int, Callable[[], str]]] = [
            (8, self.gpio_config), (6, self.gpio_drive), (6, self.fifo_push),
            (3, self.burst), (6, self.pop), (5, self.ack), (3, self.irq_enable),
            (3, self.w1c), (5, self.read_any), (4, self.clock), (1, self.reset_counters),
            (1, self.system_reset),
        ]  # fmt: skip
        if r.randrange(MIGRATE_EVERY) == 0 or migrate:
            actions = [(1, self.migrate)]
        weights = [w for w, _ in actions]
        action = r.choices([a for _, a in actions], weights)[0]
        self.log.append(action())

    def gpio_config(self) -> str:
        reg = self.rng.choice((*GPIO_RW, "GPIO_STATUS"))
        value = self.rng.getrandbits(32) if self.rng.random() < 0.1 else self.rng.getrandbits(LINES)
        self.dev.write(reg, value)
        return f"write {reg} {value:#x}"

    def gpio_drive(self) -> str:
        op = self.rng.choice(
            (QOM.PROP_GPIO_IN, QOM.PROP_GPIO_SET, QOM.PROP_GPIO_CLEAR, QOM.PROP_GPIO_PULSE)
        )
        mask = self.rng.getrandbits(LINES)
        self.inj.set(op, mask)
        return f"qom-set {op} {mask:#x}"

    def fifo_push(self) -> str:
        word = self.rng.getrandbits(32)
        self.inj.push(word)
        return f"{QOM.PROP_FIFO_PUSH} {word:#x}"

    def burst(self) -> str:
        r = self.rng
        what = r.random()
        if what < 0.3:
            self.inj.stop_burst()
            return f"{QOM.PROP_BURST_COUNT} 0"
        if what < 0.45 and not self.inj.burst_remaining():
            line = r.choice((None, r.randrange(LINES)))
            self.inj.set_burst_line(line)
            return f"{QOM.PROP_BURST_LINE} {line}"
        period = r.choice((REGS.MIN_BURST_PERIOD_NS, 2_000, 10_000, 1_000_000))
        count = r.choice((1, 3, 20, 200, U32))
        self.inj.burst(count, period_ns=period)
        return f"burst {count} at {period} ns"

    def pop(self) -> str:
        ev = self.dev.pop()
        if ev is not None:
            self.seen_seqs.append(ev.seq)
            del self.seen_seqs[:-64]
        return f"pop -> {ev}"

    def ack(self) -> str:
        r = self.rng
        if self.seen_seqs and r.random() < 0.8:
            seq = r.choice(self.seen_seqs)
        else:
            seq = r.choice((0, r.getrandbits(32), self.inj.counters().next_seq))
        self.dev.ack(seq)
        self.acks += 1
        return f"ack {seq}"

    def irq_enable(self) -> str:
        value = self.rng.getrandbits(3)
        self.dev.write("IRQ_ENABLE", value)
        return f"IRQ_ENABLE {value:#x}"

    def w1c(self) -> str:
        value = self.rng.getrandbits(3)
        self.dev.write("IRQ_STATUS", value)
        return f"IRQ_STATUS w1c {value:#x}"

    def read_any(self) -> str:
        reg = self.rng.choice(READABLE)
        self.dev.read(reg)
        return f"read {reg}"

    def clock(self) -> str:
        ns = self.rng.choice((0, 500, 1_000, 7_777, 50_000, 1_000_000))
        self.rig.qt.clock_step(ns)
        return f"clock_step {ns}"

    def reset_counters(self) -> str:
        self.inj.reset_counters()
        self.acks = 0
        self.last = self.inj.counters()
        return QOM.PROP_RESET_COUNTERS

    def system_reset(self) -> str:
        self.rig.machine.qmp("system_reset")
        self.seen_seqs.clear()
        # reset clears the queue and the configuration, not the counters or BAR mapping
        # (the PCI core clears the BAR and the command register: map it again)
        self.rig = Rig(
            self.rig.machine, self.rig.qt, QtestIrqlab.attach(self.rig.qt, self.dev.bar0),
            self.inj,
        )  # fmt: skip
        return "system_reset"

    def migrate(self) -> str:
        before = self.snapshot()
        clock = self.rig.qt.clock()
        image = self.tmp_path / f"walk-{self.seed}-{self.migrations}.mig"
        migrate_out(self.rig.machine, image)
        old = self.rig
        self.rig = self.restart(image)
        self.rig.qt.clock_set(clock)
        old.machine.close()
        image.unlink()
        self.migrations += 1
        after = self.snapshot()
        assert after == before, f"state changed by migration:\n{before}\n{after}"
        return "migrate"

    # -- invariants ------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        regs = {r: self.dev.read(r) for r in READABLE if r not in ("TIME_LO", "TIME_HI")}
        return {"regs": regs, QOM.PROP_COUNTERS: self.inj.counters()}

    def check(self) -> None:
        c = self.inj.counters()  # QEMU answers QMP
        d = self.dev
        status, enable, pending = d.read("IRQ_STATUS"), d.read("IRQ_ENABLE"), d.read("IRQ_PENDING")
        gpio_status, gpio_en = d.read("GPIO_STATUS"), d.read("GPIO_IRQ_EN")
        assert pending == status & enable
        assert bool(status & 1 << REGS.SRC_GPIO) == bool(gpio_status & gpio_en)
        assert (status | enable) & ~REGS.SRC_ALL == 0
        for reg in (*GPIO_RW, "GPIO_STATUS", "GPIO_IN"):
            assert d.read(reg) & ~ALL == 0, reg
        evq, fifo = d.read("EVQ_COUNT"), d.read("FIFO_COUNT")
        assert evq == c.evq_count <= int(PROPS["evq_depth"])  # type: ignore[call-overload]
        assert fifo <= min(evq, int(PROPS["fifo_depth"]))  # type: ignore[call-overload]
        assert d.read("BURST_REMAINING") <= d.read("BURST_COUNT")
        assert c.dropped == c.fifo_overflow + c.evq_overflow
        assert c.acked + c.ack_invalid == self.acks
        assert self.inj.histogram().count == c.acked
        assert c.next_seq != 0
        # every raise took the next sequence number (FIFO overflows take none)
        assert c.next_seq == seq_after(self.last.next_seq, c.raised - self.last.raised)
        head = d.head()
        if head is not None:
            assert head.source < REGS.NUM_SOURCES and c.next_seq != head.seq
        self.last = c


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequence_keeps_the_invariants(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    seed: int, soak: Callable[[float, float], float],
) -> None:  # fmt: skip
    def restart(image: Path) -> Rig:
        m = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
        migrate_in(m, image)
        return Rig(m, m.qtest, QtestIrqlab.attach(m.qtest, walk.dev.bar0), Injector(m, "irq0"))

    walk = Walk(seed, rig_factory(**PROPS), restart, tmp_path)
    steps = int(os.environ.get("IRQLAB_RANDOM_STEPS") or soak(*STEPS))
    for n in range(steps):
        try:
            walk.step(migrate=n == steps // 2)  # at least one migration in every walk
            walk.check()
        except Exception as e:
            recent = "\n  ".join(walk.log)
            raise AssertionError(
                f"seed {seed}, step {n}: {e!r}\nlast actions:\n  {recent}\n"
                f"replay: IRQLAB_RANDOM_SEED={seed} invoke test-device -k random"
            ) from e
    print(f"seed {seed}: {steps} steps, {walk.migrations} migrations")
    assert walk.migrations >= 1
