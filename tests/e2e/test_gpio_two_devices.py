"""Two irqlab devices in one guest: their gpiochips' line names are unique.

Every chip named its lines irqlab-0 .. irqlab-31: the second chip's registration
warned "Detected name collision" once per line, and a lookup by name (gpiolib's, or
libgpiod's gpiofind) found the first chip's line only.  The names now carry the
device's index (irqlabN-<line>, N that of /dev/irqlabN).  The guest boots cold
(extra_devices keeps no snapshot).
"""

from __future__ import annotations

import re

from irqlab.vm.guest import Guest, GuestConfig

# A second irqlab device, unconfigured (the harness drives only the first).  Spelled
# "driver=irqlab": extra_devices refuses a bare "irqlab" (the guest's own device takes
# its properties from device_props); QEMU takes both spellings alike.
SECOND = "driver=irqlab,id=irqlab1"


def test_two_devices_name_their_lines_apart() -> None:
    config = GuestConfig(name="two-irqlab", extra_devices=(SECOND,))
    with Guest(config) as g:
        assert g.sh("ls /dev/irqlab0 /dev/irqlab1").split() == ["/dev/irqlab0", "/dev/irqlab1"]
        info = g.sh("gpioinfo")
        names = re.findall(r'^\s+line\s+\d+:\s+"([^"]*)"', info, re.M)
        lines = g.injector.gpio_lines
        assert len(names) == 2 * lines, info
        twins = sorted(n for n in set(names) if names.count(n) > 1)
        assert not twins, f"line names shared by the two chips: {twins}"
        assert set(names) == {f"irqlab{d}-{i}" for d in (0, 1) for i in range(lines)}, names
        collisions = g.sh("dmesg | grep -c 'name collision' || true").strip()
        assert collisions == "0", f"{collisions} 'Detected name collision' warnings"
