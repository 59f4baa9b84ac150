"""Many guests at once on one machine: what pytest-xdist workers rely on.

Each test starts its own guests (restored from the ready-state snapshot) from
several threads at the same moment, the way several workers do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from irqlab.contract.regs import REGS
from irqlab.testing.plugin import start_guest
from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig

GUESTS = 8
TIMEOUT = 120.0


def start_together(configs: list[GuestConfig]) -> list[Guest]:
    """Start one guest per config, all at once (a barrier releases the threads
    together); every guest that did start is closed if any failed."""
    barrier = threading.Barrier(len(configs))

    def one(cfg: GuestConfig) -> Guest:
        barrier.wait(TIMEOUT)
        return start_guest(cfg)

    with ThreadPoolExecutor(len(configs)) as pool:
        futures = [pool.submit(one, c) for c in configs]
        errors = [f.exception() for f in futures]
    guests = [f.result() for f, e in zip(futures, errors, strict=True) if e is None]
    if any(errors):
        for g in guests:
            g.close()
        raise next(e for e in errors if e is not None)
    return guests


@pytest.fixture
def eight_guests(irqlab_log_dir: Path) -> Iterator[list[Guest]]:
    configs = [GuestConfig(name=f"par{i}", log_dir=irqlab_log_dir / "eight") for i in range(GUESTS)]
    guests = start_together(configs)
    try:
        yield guests
    finally:
        for g in guests:
            g.close()


def test_eight_guests_at_once_get_distinct_ports_and_their_own_devices(
    eight_guests: list[Guest],
) -> None:
    guests = eight_guests
    ports = [g.ssh_port for g in guests]
    assert len(set(ports)) == GUESTS and all(p > 0 for p in ports), ports
    # Each guest answers on its own port (the hostname is per boot: the boot id).
    boot_ids = [g.sh("cat /proc/sys/kernel/random/boot_id").strip() for g in guests]
    assert all(boot_ids), boot_ids
    # Guest i gets i+1 FIFO words tagged with i: its own agent sees exactly those,
    # and its device counted exactly those (no guest sees another's injections).
    for g in guests:
        g.agent.arm("read", dev=g.dev)
    seq0 = [g.injector.counters().raised for g in guests]
    for i, g in enumerate(guests):
        g.injector.push_many([(i << 16) | j for j in range(i + 1)])
    for i, g in enumerate(guests):
        evs = g.agent.events(i + 1, timeout=TIMEOUT, path="read")
        assert [(e["source"], e["value"]) for e in evs] == [
            (REGS.SRC_FIFO, (i << 16) | j) for j in range(i + 1)
        ], f"guest {i}"
        c = g.injector.counters()
        assert c.raised - seq0[i] == i + 1 and c.acked == c.raised, (i, c)
        assert g.agent.disarm("read")["read"]["events"] == i + 1, i
        assert not g.agent.pending(), (i, g.agent.pending())
    # Per-guest logs and sockets: no two guests share a run directory or a socket dir.
    run_dirs = {g.machine.paths.log_dir for g in guests}
    sock_dirs = {g.machine.paths.sock_dir for g in guests}
    assert len(run_dirs) == GUESTS and len(sock_dirs) == GUESTS


def test_concurrent_starters_of_a_missing_snapshot_boot_cold_only_once(
    irqlab_log_dir: Path,
) -> None:
    """Two starters that both miss a configuration's snapshot: one cold-boots and saves
    it, the other waits for it and restores (the xdist workers' case)."""
    configs = [
        GuestConfig(name=f"lock{i}", snapshot_tag="test-boot-lock", log_dir=irqlab_log_dir)
        for i in range(2)
    ]
    key = Guest(configs[0]).prepare().snapshot_key()
    snapshot.discard(key)
    assert snapshot.lookup(key) is None
    guests = start_together(configs)
    try:
        assert sorted(g.restored for g in guests) == [False, True], [g.phases for g in guests]
        assert len({g.snapshot_dir for g in guests}) == 1
        for g in guests:
            assert g.sh("test -c /dev/irqlab0 && echo ok").strip() == "ok"
    finally:
        for g in guests:
            g.close()
