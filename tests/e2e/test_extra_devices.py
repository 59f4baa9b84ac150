"""A driver of another device: ``GuestConfig(extra_devices=...)`` puts more of QEMU's
own devices into the guest (there was no way but a hot-plug into our device's root
port, by names the README never gave).  The guest boots cold: QEMU's ``edu`` keeps no
state in a saved VM, not even its BARs."""

from __future__ import annotations

import pytest

from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig, GuestError, ensure_snapshot

EDU = "1234:11e8"  # QEMU's educational device: vendor, device
EDU_ID = 0x010000ED  # its register 0x00: major 1, minor 0, 0xed

READ_ID = """
import glob, mmap, os, struct
for d in glob.glob("/sys/bus/pci/devices/*"):
    ids = [open(f"{d}/{n}").read().strip()[2:] for n in ("vendor", "device")]
    if ":".join(ids) == "%s":
        with open(f"{d}/enable", "w") as f:
            f.write("1")
        fd = os.open(f"{d}/resource0", os.O_RDWR | os.O_SYNC)
        m = mmap.mmap(fd, 4096)
        print(hex(struct.unpack_from("<I", m, 0)[0]))
"""


def test_an_extra_device_is_in_the_guest_beside_ours() -> None:
    config = GuestConfig(name="edu", extra_devices=("edu,id=edu0",))
    with Guest(config) as g:
        assert not g.restored and g.snapshot_dir is None  # cold, nothing saved
        out = g.sh(f"python3 -c '{READ_ID % EDU}'").split()
        assert out == [hex(EDU_ID)], out
        assert g.sh("ls /dev/irqlab0").strip() == "/dev/irqlab0"  # ours is there too
    with pytest.raises(GuestError, match="extra_devices always cold-boots"):
        ensure_snapshot(config)
    assert snapshot.lookup(Guest(config).prepare().snapshot_key()) is None


def test_a_device_qemu_does_not_know_is_refused_in_its_words() -> None:
    from irqlab.vm.machine import QemuExited

    g = Guest(GuestConfig(name="nodev", extra_devices=("no-such-device",)))
    with pytest.raises(QemuExited, match="'no-such-device' is not a valid device model name"):
        g.start()
    assert g.machine is None or not g.machine.is_running()
