"""The seed's debounced key as an ARM board describes it (aarch64 only).

The aarch64 guest boots with virt's device tree plus a node for our PCI function
(a gpio-controller) and a ``gpio-keys`` key on its line ``KEY_LINE`` with
``debounce-interval`` (:mod:`irqlab.build.devicetree`).  The kernel's own
``gpio_keys`` driver turns bouncy edge trains injected over QMP into exactly one
press and one release each on ``/dev/input/eventN``.

Collected only when the aarch64 QEMU is built (``tests/e2e/conftest.py``
``collect_ignore``; the session header says so otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path

import pytest

from irqlab.build.archguest import KEY_DEBOUNCE_MS, KEY_LINE
from irqlab.build.devicetree import KEY_CODE, KEY_LABEL
from irqlab.testing.helpers import DeviceControl
from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig

TIMEOUT = 60.0
BOUNCES = 5  # extra edge pairs before a press or release settles
HOLD_S = 5 * KEY_DEBOUNCE_MS / 1000  # a press/release held well past the debounce
OUT = "/tmp/irqlab-keys.txt"

# The reader in the guest: every EV_KEY event of the key's input device, one line each
# ("code value"), after a "ready" line once it polls the device.  struct input_event
# on a 64-bit kernel: struct timeval (2 x 8 bytes), __u16 type, __u16 code, __s32 value.
READER = r"""
import os, select, struct, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
p = select.poll()
p.register(fd, select.POLLIN)
out = open(sys.argv[2], "w", buffering=1)
print("ready", file=out)
while True:
    p.poll()
    data = os.read(fd, 24 * 64)
    for i in range(0, len(data), 24):
        _s, _us, typ, code, value = struct.unpack_from("qqHHi", data, i)
        if typ == 1:
            print(code, value, file=out)
"""


def wait_lines(guest: Guest, n: int, timeout: float = TIMEOUT) -> list[str]:
    """The reader's output once it has at least *n* lines (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = guest.sh(f"cat {OUT} 2>/dev/null; true").splitlines()
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} of {n} lines: {lines}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def key_guest(irqlab_log_dir: Path) -> Generator[Guest, None, None]:
    g = start_guest(GuestConfig(name="dt-key", arch="aarch64", log_dir=irqlab_log_dir))
    try:
        g.sh("modprobe evdev && modprobe gpio_keys")
        yield g
    finally:
        g.close()


@pytest.fixture
def key(key_guest: Guest) -> Generator[tuple[Guest, DeviceControl], None, None]:
    """The key's input device read by a fresh reader; the line released (low)."""
    g = key_guest
    g.injector.set_line(KEY_LINE, False)
    ev = g.sh(
        "for e in /sys/class/input/event*; do "
        "grep -qx irqlab-keys $e/device/name && basename $e; done"
    ).strip()
    assert ev.startswith("event"), "no input device for the irqlab-keys node"
    g.sh(f"cat > /tmp/irqlab-keys.py <<'EOF'\n{READER}\nEOF\nrm -f {OUT}")
    g.sh(f"setsid python3 /tmp/irqlab-keys.py /dev/input/{ev} {OUT} </dev/null >/dev/null 2>&1 &")
    assert wait_lines(g, 1) == ["ready"]
    g.injector.reset_counters()
    try:
        yield g, DeviceControl(g)
    finally:
        g.sh("pkill -f irqlab-keys.py; true")


def bouncy(guest: Guest, level: bool) -> int:
    """Settle the key line at *level* after BOUNCES glitches; returns the edges made."""
    inj = guest.injector
    for _ in range(BOUNCES):
        inj.set_line(KEY_LINE, level)
        inj.set_line(KEY_LINE, not level)
    inj.set_line(KEY_LINE, level)
    return 2 * BOUNCES + 1


def test_key_is_bound_to_our_gpiochip(key_guest: Guest) -> None:
    irqs = key_guest.sh("cat /proc/interrupts")
    line = next(ln for ln in irqs.splitlines() if KEY_LABEL in ln)
    assert "irqlab-gpio" in line and f" {KEY_LINE} " in line, line


def test_bouncy_presses_give_one_press_and_release_each(
    key: tuple[Guest, DeviceControl],
) -> None:
    guest, device = key
    n = 3
    edges = 0
    for _ in range(n):
        edges += bouncy(guest, True)
        time.sleep(HOLD_S)  # the key is held: the stimulus, not a wait for the guest
        edges += bouncy(guest, False)
        time.sleep(HOLD_S)
    lines = wait_lines(guest, 1 + 2 * n)
    assert lines[1:] == [f"{KEY_CODE} 1", f"{KEY_CODE} 0"] * n
    c = device.counters()
    assert c.raised == edges and c.dropped == 0, c  # every edge reached the guest


def test_glitch_shorter_than_debounce_gives_nothing(key: tuple[Guest, DeviceControl]) -> None:
    guest, device = key
    inj = guest.injector
    for _ in range(4):  # released key: a glitch up and back, far below the debounce
        inj.pulse(KEY_LINE)
    edges = bouncy(guest, True)
    time.sleep(HOLD_S)
    edges += bouncy(guest, False)
    lines = wait_lines(guest, 3)
    assert lines[1:] == [f"{KEY_CODE} 1", f"{KEY_CODE} 0"], lines
    c = device.counters()
    assert c.raised == edges + 8, c
