"""The seed's debounced key as an ARM board describes it (aarch64 only).

The aarch64 guest boots with virt's device tree plus a node for our PCI function
(a gpio-controller) and a ``gpio-keys`` key on its line ``KEY_LINE`` with
``debounce-interval`` (:mod:`irqlab.build.devicetree`).  The kernel's own
``gpio_keys`` driver turns bouncy edge trains into exactly one press and one
release each on ``/dev/input/eventN``, which the agent's evdev paths read the
seed's three ways: blocking read, poll and SIGIO (:mod:`irqlab_agent.evdev`).

The bouncy trains come from the device's burst generator on the key line (one
edge per :data:`STEP_NS` of QEMU's virtual clock, the guest's clock: far inside
the debounce interval however loaded the host is); each press or release is
waited for as the agent's event, never slept for.

Collected only when the aarch64 QEMU is built (``tests/e2e/conftest.py``
``collect_ignore``; the session header says so otherwise).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest
from agent_paths import EVDEV_PATHS  # same directory (rootdir-relative import)

from irqlab.build.archguest import KEY_DEBOUNCE_MS, KEY_LINE
from irqlab.build.devicetree import KEY_CODE, KEY_LABEL
from irqlab.testing.helpers import DeviceControl, wait_until
from irqlab.testing.plugin import start_guest
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest, GuestConfig

TIMEOUT = 60.0
INPUT = "irqlab-keys"  # the gpio-keys node's name: its input device's name
BOUNCES = 5  # extra edge pairs before a press or release settles
STEP_NS = 500_000  # between two edges of a train: 0.5 ms of the guest's clock
assert (2 * BOUNCES + 1) * STEP_NS < KEY_DEBOUNCE_MS * 1_000_000 // 2
TRAIN = 2 * BOUNCES + 1  # edges of a bouncy press or release (odd: the level flips)
IDLE_LINE = KEY_LINE - 1  # no edge detection: its steps only mark time


@pytest.fixture(scope="module")
def key_guest(irqlab_log_dir: Path) -> Generator[Guest, None, None]:
    g = start_guest(GuestConfig(name="dt-key", arch="aarch64", log_dir=irqlab_log_dir))
    try:
        g.sh("modprobe evdev && modprobe gpio_keys")
        yield g
    finally:
        g.close()


def key_irqs(guest: Guest) -> int:
    """The key's interrupts so far (/proc/interrupts, all CPUs): one per edge that
    reached gpio_keys through our gpiochip."""
    for ln in guest.sh("cat /proc/interrupts").splitlines():
        if ln.rstrip().endswith(KEY_LABEL):
            counts = ln.split()[1:]
            return sum(
                int(c) for c in counts[: next(i for i, c in enumerate(counts) if not c.isdigit())]
            )
    raise AssertionError(f"no {KEY_LABEL} interrupt in /proc/interrupts")


class Key:
    """The key line driven by the device, the guest's key events read by the agent."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.agent: AgentClient = guest.agent
        self.device = DeviceControl(guest)
        self.edges = 0

    def train(self, count: int) -> None:
        """*count* edges on the key line, STEP_NS apart, and wait until the device made
        them all (its burst counter, over QMP)."""
        self.device.edges(KEY_LINE, count, STEP_NS)
        self.edges += count
        self.device.wait_burst_done("the edge train", TIMEOUT)

    def settle(self) -> None:
        """Let twice the debounce interval pass on the guest's clock (on a line
        nothing listens on)."""
        self.device.let_guest_time_pass(2 * KEY_DEBOUNCE_MS * 1_000_000, IDLE_LINE, TIMEOUT)

    def press(self, path: str, state: str) -> dict[str, object]:
        """A bouncy press (or release); the next event on *path* must be its *state*."""
        self.train(TRAIN)
        ev = self.agent.expect(path=path, timeout=TIMEOUT)
        assert ev.get("key") == state, f"the {state} expected, got {ev}"
        return ev


@pytest.fixture
def key(key_guest: Guest) -> Generator[Key, None, None]:
    """The key released, no path armed, the device's counters zero."""
    g = key_guest
    g.agent.reset()
    if g.injector.gpio_in() >> KEY_LINE & 1:  # left pressed: release it, seen by the guest
        g.agent.arm("evdev-read", name="release", input=INPUT)
        g.injector.set_line(KEY_LINE, False)
        g.agent.expect(path="release", key="release", timeout=TIMEOUT)
        g.agent.reset()
    g.agent.drain_events()
    g.injector.reset_counters()
    yield Key(g)
    g.agent.reset()


def test_key_is_bound_to_our_gpiochip(key_guest: Guest) -> None:
    irqs = key_guest.sh("cat /proc/interrupts")
    line = next(ln for ln in irqs.splitlines() if KEY_LABEL in ln)
    assert "irqlab-gpio" in line and f" {KEY_LINE} " in line, line


def test_evdev_path_finds_the_key_by_name(key: Key) -> None:
    armed = key.agent.arm("evdev-poll", input=INPUT)
    assert armed["dev"].startswith("/dev/input/event") and armed["input"] == INPUT, armed
    assert armed["clock"] == "monotonic" and armed["event_size"] == 24, armed  # arm64: LP64


@pytest.mark.parametrize("path", EVDEV_PATHS)
def test_bouncy_presses_give_one_press_and_release_each(key: Key, path: str) -> None:
    n = 3
    key.agent.arm(path, input=INPUT)
    irqs0 = key_irqs(key.guest)
    evs = []
    for _ in range(n):
        evs.append(key.press(path, "press"))
        evs.append(key.press(path, "release"))
    assert [(e["ev_type"], e["code"], e["value"]) for e in evs] == [
        (1, KEY_CODE, 1),
        (1, KEY_CODE, 0),
    ] * n
    times = [int(e["time_ns"]) for e in evs]
    assert times == sorted(times), times
    # Nothing else came: the last release was the last edge train's.
    st = key.agent.disarm(path)[path]
    assert st["events"] == 2 * n and st["flags"] == {"SYN_REPORT": 2 * n}, st
    assert key.agent.pending() == []
    # The device raised every edge and the kernel handled each as a key interrupt.
    c = key.device.counters()
    assert c.raised == key.edges == n * 2 * TRAIN and c.dropped == 0, c
    assert key_irqs(key.guest) - irqs0 == c.raised


@pytest.mark.parametrize("path", EVDEV_PATHS)
def test_glitch_shorter_than_debounce_gives_nothing(key: Key, path: str) -> None:
    key.agent.arm(path, input=INPUT)
    irqs0 = key_irqs(key.guest)
    glitch = 2 * BOUNCES  # a released key up and back down, within the debounce interval
    key.train(glitch)
    wait_until(lambda: key_irqs(key.guest) - irqs0, lambda n: n == glitch, TIMEOUT, "the glitch")
    key.settle()  # the glitch's debounce has run out: it would have reported by now
    # The next events are the real press's and release's, and there are no others.
    key.press(path, "press")
    key.press(path, "release")
    st = key.agent.disarm(path)[path]
    assert st["events"] == 2, st
    assert key.agent.pending() == []
    c = key.device.counters()
    assert c.raised == key.edges == glitch + 2 * TRAIN and c.dropped == 0, c
    assert key_irqs(key.guest) - irqs0 == c.raised


def test_the_tree_is_dumped_into_a_cache_whose_path_has_a_comma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU dumps virt's tree (``-machine virt,...,dumpdtb=PATH``) into the build cache
    wherever it is: a comma of its path is part of PATH, not another machine option."""
    from irqlab.build.arch import AARCH64
    from irqlab.build.archguest import key_dtb_args
    from irqlab.build.boot import cpu_args, machine_args
    from irqlab.build.qemu import find_qemu

    qemu = find_qemu(AARCH64)
    assert qemu is not None, "the aarch64 QEMU is built (else this file is not collected)"
    cache = tmp_path / "cache,x=y"
    cache.mkdir()
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(cache))
    base = [*machine_args("aarch64"), *cpu_args("tcg", "aarch64"), "-smp", "1"]
    option, dtb = key_dtb_args(qemu.binary, base)
    assert option == "-dtb" and Path(dtb).is_relative_to(cache) and Path(dtb).stat().st_size
