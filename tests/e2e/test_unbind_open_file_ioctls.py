"""The ioctls of a file left open across unbind: those that need the device fail with
ENODEV, the others work on the file's own state.

SET_EVENTFD bound a new eventfd after unbind and returned 0, though nothing would ever
signal it (the device's removal signals the eventfds bound *before* it): a waiter on it
slept for ever.  It now gives ENODEV, as ACK and GET_CLOCK do; unbinding (-1) still
works.
"""

from __future__ import annotations

import json

from irqlab.contract import uapi
from irqlab.vm.guest import Guest

# Runs in the guest: opens the event file, unbinds the device, then tries the ioctls.
PROBE = """
import errno, fcntl, json, os, struct, sys
dev, unbind, addr = sys.argv[1], sys.argv[2], sys.argv[3]
req = json.loads(sys.argv[4])
fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK)
with open(unbind, "w") as f:
    f.write(addr)
def outcome(name, arg):
    try:
        fcntl.ioctl(fd, req[name], arg)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
efd = os.eventfd(0)
print(json.dumps({
    "ACK": outcome("ACK", bytearray(struct.pack("=IIQ", 1, 0, 0))),
    "GET_CLOCK": outcome("GET_CLOCK", bytearray(24)),
    "SET_EVENTFD": outcome("SET_EVENTFD", struct.pack("=i", efd)),
    "SET_EVENTFD -1": outcome("SET_EVENTFD", struct.pack("=i", -1)),
    "SET_SOURCES": outcome("SET_SOURCES", struct.pack("=I", 0)),
    "GET_STATS": outcome("GET_STATS", bytearray(256)),
}))
"""


def test_ioctls_after_unbind_fail_with_enodev_where_they_need_the_device(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    requests = {
        name: io["request"]
        for name, io in uapi.abi_spec(uapi.load(uapi.header_path()))["ioctls"].items()
    }
    g.put_bytes(PROBE.encode(), "/tmp/unbind_ioctls.py")
    unbind = f"/sys/bus/pci/drivers/{g.module_name()}/unbind"
    out = g.sh(
        f"python3 /tmp/unbind_ioctls.py {g.dev} {unbind} {g.pci_address()} '{json.dumps(requests)}'"
    )
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {
        "ACK": "ENODEV",
        "GET_CLOCK": "ENODEV",
        "SET_EVENTFD": "ENODEV",  # was "ok": an eventfd nothing would ever signal
        "SET_EVENTFD -1": "ok",
        "SET_SOURCES": "ok",
        "GET_STATS": "ok",
    }, res
