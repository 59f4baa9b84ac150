"""ACK on a device that reads all ones (surprise-removed: gone before the driver was
told) gives ENODEV.

The ACK path compared two readings of ACK_INVALID (all ones both times: "valid") and
returned 0 with an all-ones latency, counted as an ACK.  A test module
(tests/e2e/kmods/reads_ones) makes the device read all ones for one process (a
kretprobe on ioread32()): QEMU cannot remove a PCIe device without the guest's
cooperation, and its reads of an unmapped BAR give zeros, not ones.
"""

from __future__ import annotations

import json

from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.contract import uapi
from irqlab.vm.guest import Guest
from irqlab_agent.abi import Abi

PARAMS = "/sys/module/reads_ones/parameters"

# Runs in the guest: one ACK while this process's register reads give all ones (the
# request and its argument's bytes from the host, by the uapi header's layout; the
# argument's bytes after the call go back in hex).
PROBE = """
import errno, fcntl, json, os, sys
dev, ack, arg, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] + "/pid"
fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK)
arg = bytearray.fromhex(arg)
with open(pid, "w") as f:
    f.write(str(os.getpid()))
try:
    fcntl.ioctl(fd, ack, arg)
    res = {"errno": None, "arg": arg.hex()}
except OSError as e:
    res = {"errno": errno.errorcode[e.errno]}
finally:
    with open(pid, "w") as f:
        f.write("0")
print(json.dumps(res))
"""


def test_ack_on_a_device_reading_all_ones_gives_enodev(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    ack = Abi(uapi.abi_spec(uapi.load(uapi.header_path()))).ioctls["ACK"]
    assert ack.arg is not None
    arg = ack.arg.pack({"seq": 1}).hex()
    g.put(build_test_kmod("reads_ones"), "/tmp/reads_ones.ko")
    g.put_bytes(PROBE.encode(), "/tmp/ack_gone.py")
    g.sh("insmod /tmp/reads_ones.ko")
    try:
        res = json.loads(
            g.sh(f"python3 /tmp/ack_gone.py {g.dev} {ack.request} {arg} {PARAMS}")
            .strip()
            .splitlines()[-1]
        )
        hits = int(g.sh(f"cat {PARAMS}/hits"))
    finally:
        g.sh("rmmod reads_ones")
    assert hits > 0, "no register read of the ACK was replaced: the test did not run"
    if "arg" in res:  # the ACK's fields as it returned them
        res["arg"] = ack.arg.unpack(bytes.fromhex(res["arg"]))
    assert res == {"errno": "ENODEV"}, (
        f"ACK on a device reading all ones: {res} (an all-ones latency is the device's "
        f"absence, not a measurement)"
    )
