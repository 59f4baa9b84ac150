"""Every notification path once on each guest architecture built here.

x86_64 always; aarch64 (``-M virt,gic-version=3,its=on``, MSI-X through the GICv3
ITS, INTx through the PCIe host bridge's interrupt map to GIC SPIs) when its QEMU
is built (``IRQLAB_ARCHES=x86_64,aarch64 invoke build-qemu``).  Without it the
aarch64 cases are not collected at all (nothing is skipped): the session header
says so (``tests/e2e/conftest.py``).

Each architecture gets its own guests (restored from their ready-state snapshots
after one cold boot); ``test_boot_and_restore_times`` measures cold boot and restore
of each architecture in the same run and prints them side by side.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from agent_paths import RECORD_PATHS  # same directory (rootdir-relative import)
from arch_times import ARCH_TIMES  # same directory
from test_paths_notify import check_path_specifics, wait_eagain

from irqlab.build.archguest import present_arches
from irqlab.contract.regs import QOM, REGS
from irqlab.testing.helpers import DeviceControl
from irqlab.testing.plugin import start_guest, start_uio_generic_guest
from irqlab.vm.guest import Guest, GuestConfig

TIMEOUT = 60.0
ARCHES = [a.name for a in present_arches()]
GPIO_LINE = 5

pytestmark = pytest.mark.parametrize("arch", ARCHES, indirect=True)


@pytest.fixture(scope="module")
def arch(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def arch_guest(arch: str, irqlab_log_dir: Path) -> Generator[Guest, None, None]:
    g = start_guest(GuestConfig(name=f"arch-{arch}", arch=arch, log_dir=irqlab_log_dir))
    try:
        assert g.sh("uname -m").strip() == arch
        yield g
    finally:
        g.close()


@pytest.fixture
def ag(arch_guest: Guest) -> Iterator[tuple[Guest, DeviceControl]]:
    arch_guest.agent.reset()
    arch_guest.agent.drain_events()
    arch_guest.injector.reset_counters()
    yield arch_guest, DeviceControl(arch_guest)
    errors = [e for e in arch_guest.agent.pending() if e.get("type") == "path_error"]
    arch_guest.agent.drain_events()
    assert not errors, f"unexpected path errors: {errors}"


@pytest.mark.parametrize("path", RECORD_PATHS)
def test_record_path(ag: tuple[Guest, DeviceControl], path: str) -> None:
    """read, O_NONBLOCK, poll/select/epoll, SIGIO, F_SETSIG, eventfd (MSI-X)."""
    guest, device = ag
    agent = guest.agent
    armed = agent.arm(path, dev=guest.dev)
    if path == "nonblock":
        wait_eagain(agent, path)
    seq0 = device.next_seq()
    device.push(0xC0FFEE, 7)
    evs = [agent.expect(path=path, seq=seq0 + i, timeout=TIMEOUT) for i in range(2)]
    assert [e["value"] for e in evs] == [0xC0FFEE, 7]
    check_path_specifics(path, evs[0], armed)
    c = device.counters()
    assert c.raised == 2 and c.acked == 2 and c.dropped == 0, c
    st = agent.disarm(path)[path]
    assert st["events"] == 2 and st["ack_errors"] == 0, st


def test_count_path(ag: tuple[Guest, DeviceControl]) -> None:
    guest, device = ag
    agent = guest.agent
    agent.arm("count", dev=guest.count_dev)
    agent.request("wait_blocked", name="count")
    device.push(1, 2, 3)
    total = 0
    while total < 3:
        total += agent.expect(path="count", timeout=TIMEOUT)["count"]
    assert total == 3


def test_gpio_cdev_edges(ag: tuple[Guest, DeviceControl]) -> None:
    guest, device = ag
    agent, inj = guest.agent, guest.injector
    inj.drive_low(1 << GPIO_LINE)
    armed = agent.arm("gpio-cdev", lines=[GPIO_LINE], edge="both")
    assert armed["chip"].startswith("/dev/gpiochip"), armed
    device.inj.reset_counters()
    for _ in range(3):
        inj.pulse(GPIO_LINE)
    evs = agent.events(6, path="gpio-cdev", timeout=TIMEOUT, idle=30)
    assert [e["edge"] for e in evs] == ["rising", "falling"] * 3
    assert device.counters().raised == 6


def test_intx_through_the_driver(ag: tuple[Guest, DeviceControl]) -> None:
    """The driver on INTx (on aarch64: a GIC SPI through the host bridge's map)."""
    guest, device = ag
    agent = guest.agent
    try:
        guest.reload_module(irq_mode="intx")
        guest.injector.reset_counters()
        agent.arm("read", dev=guest.dev)
        agent.request("wait_blocked", name="read")
        seq0 = device.next_seq()
        device.push(1, 2, 3, 4)
        evs = [agent.expect(path="read", seq=seq0 + i, timeout=TIMEOUT) for i in range(4)]
        assert [e["value"] for e in evs] == [1, 2, 3, 4]
        agent.request("open", name="info", dev=guest.dev)
        info = agent.request("ioctl", name="info", ioctl="GET_INFO")["result"]
        assert info["irq_mode"] == REGS.IRQLAB_IRQ_MODE_INTX and info["nvecs"] == 1, info
    finally:
        agent.reset()
        guest.reload_module(**guest.config.module_params)


@pytest.fixture(scope="module")
def intx_uio_guest(arch: str, irqlab_log_dir: Path) -> Generator[Guest, None, None]:
    cfg = GuestConfig(
        name=f"arch-{arch}-intx",
        arch=arch,
        device_props={QOM.PROP_IRQ_MODE: "intx"},
        log_dir=irqlab_log_dir,
    )
    with start_uio_generic_guest(cfg) as g:
        yield g


def test_uio_pci_generic(intx_uio_guest: Guest) -> None:
    """uio_pci_generic on our INTx function: N injections, N wake-ups, each re-enabled
    through the PCI 2.3 INTx-disable bit."""
    g = intx_uio_guest
    agent, device = g.agent, DeviceControl(g)
    agent.arm("uio", dev="", regs=dict(REGS), uio="/dev/uio0", map="resource0", reenable="config")
    seq0 = device.next_seq()
    for i in range(4):
        device.push(0x100 + i)
        ev = agent.expect(path="uio", timeout=TIMEOUT)
        assert ev["delta"] == 1 and ev["seqs"] == [seq0 + i], ev
    c = device.counters()
    assert c.raised == 4 and c.delivered == 4 and c.acked == 4, c
    agent.disarm("uio")


def test_boot_and_restore_times(
    arch: str, irqlab_log_dir: Path, request: pytest.FixtureRequest
) -> None:
    """One cold boot and one restore of this architecture's guest, timed (QEMU start →
    agent ready); written to arch-times.json and the terminal summary."""
    cfg = GuestConfig(name=f"arch-{arch}-timing", arch=arch, log_dir=irqlab_log_dir)
    times: dict[str, float] = {}
    cold = start_guest(dataclasses.replace(cfg, snapshot=False))
    try:
        times["cold_agent_ready_s"] = cold.phases["agent_ready"]
        times["cold_console_s"] = cold.phases["console_ready"]
    finally:
        cold.close()
    t0 = time.monotonic()
    warm = start_guest(cfg)  # a restore when this configuration's snapshot exists
    try:
        if not warm.restored:  # the first run saves it: restore once more to time it
            warm.close()
            t0 = time.monotonic()
            warm = start_guest(cfg)
        assert warm.restored, warm.snapshot_error
        times["restore_agent_ready_s"] = warm.phases["agent_ready"]
        times["restore_wall_s"] = time.monotonic() - t0
    finally:
        warm.close()
    out = irqlab_log_dir / "arch-times.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[arch] = {k: round(v, 3) for k, v in times.items()}
    out.write_text(json.dumps(data, indent=2) + "\n")
    request.config.stash.setdefault(ARCH_TIMES, {})[arch] = times
    assert times["cold_agent_ready_s"] > 0


def test_a_kvm_asked_for_is_used_or_said_to_be_unused(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KVM runs the host's own architecture only: an aarch64 guest runs under TCG, and
    a KVM asked for is said to be unused (it was dropped without a word)."""
    from irqlab import notice

    monkeypatch.setenv("IRQLAB_ACCEL", "kvm")
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        g = Guest(GuestConfig(name=f"accel-{arch}", arch=arch)).prepare()  # nothing boots
    finally:
        notice.set_sink(old)
    assert g.accel is not None
    if arch == "x86_64":
        assert (g.accel.accel, g.accel.reason.split(" by ")[0]) == ("kvm", "kvm forced")
    else:
        assert g.accel.accel == "tcg", g.accel
        assert "the KVM asked for is not used" in g.accel.reason, g.accel
        assert [line for line in said if "the KVM asked for is not used" in line], said
