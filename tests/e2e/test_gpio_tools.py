"""Standard userspace tools see the lines: Debian's libgpiod tools (gpiodetect, gpioinfo,
gpiomon) in the guest, with no help from our agent."""

from __future__ import annotations

import re
import time

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

LINE = 7
PULSES = 3
TIMEOUT = 60.0


def _wait_for(guest: Guest, cmd: str, pattern: str, what: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        out = guest.sh(cmd, check=False)
        if re.search(pattern, out, re.M):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {TIMEOUT} s; last output of {cmd!r}:\n{out}")
        time.sleep(0.05)


def test_libgpiod_tools_detect_and_monitor_the_lines(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    label = f"irqlab-{irqlab_guest.pci_address()}"
    detect = irqlab_guest.sh("gpiodetect")
    m = re.search(rf"^(gpiochip\d+) \[{re.escape(label)}\] \((\d+) lines\)$", detect, re.M)
    assert m, f"gpiodetect does not list {label}:\n{detect}"
    chip, nlines = m[1], int(m[2])
    assert nlines == irqlab_guest.injector.gpio_lines
    info = irqlab_guest.sh(f"gpioinfo {chip}")
    name = f"irqlab{irqlab_guest.dev.removeprefix('/dev/irqlab')}-{LINE}"
    assert re.search(rf'line\s+{LINE}:\s+"{name}"\s+unused\s+input', info), info

    irqlab_guest.injector.drive_low(1 << LINE)
    irqlab_guest.sh(
        f"rm -f /tmp/gpiomon.out; setsid gpiomon -n {2 * PULSES} -F '%e %o' {chip} {LINE}"
        " </dev/null >/tmp/gpiomon.out 2>&1 &"
    )
    _wait_for(
        irqlab_guest,
        f"gpioinfo {chip}",
        rf'line\s+{LINE}:\s+"{name}"\s+"gpiomon"',
        "gpiomon never requested the line",
    )
    for _ in range(PULSES):
        irqlab_guest.injector.pulse(LINE)  # low -> high -> low: a rising and a falling edge
    out = _wait_for(
        irqlab_guest,
        "cat /tmp/gpiomon.out",
        rf"(?:.*\n){{{2 * PULSES}}}",
        f"gpiomon did not print {2 * PULSES} events",
    )
    # libgpiod 1.6's %e: 1 = rising edge, 0 = falling edge
    assert out.split("\n")[: 2 * PULSES] == [f"1 {LINE}", f"0 {LINE}"] * PULSES, out
    _wait_for(
        irqlab_guest, "pidof gpiomon || echo gone", r"^gone$", "gpiomon did not exit after -n"
    )
