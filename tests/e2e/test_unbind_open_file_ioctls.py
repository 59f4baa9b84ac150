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
from irqlab_agent.abi import Abi

# Runs in the guest: opens the event file, unbinds the device, then tries the ioctls.
# The ioctls' requests and argument bytes come from the host (the uapi header's layout,
# irqlab_agent.abi): {label: [request, hex of the argument]}; "EFD:<struct format>" is
# this process's eventfd packed so.
PROBE = """
import errno, fcntl, json, os, struct, sys
dev, unbind, addr = sys.argv[1], sys.argv[2], sys.argv[3]
calls = json.loads(sys.argv[4])
fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK)
efd = os.eventfd(0)
with open(unbind, "w") as f:
    f.write(addr)
def outcome(req, arg):
    try:
        fcntl.ioctl(fd, req, arg)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print(json.dumps({
    label: outcome(req, struct.pack(arg[4:], efd) if arg.startswith("EFD:")
                   else bytearray.fromhex(arg))
    for label, (req, arg) in calls.items()
}))
"""


def test_ioctls_after_unbind_fail_with_enodev_where_they_need_the_device(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    io = Abi(uapi.abi_spec(uapi.load(uapi.header_path()))).ioctls

    def arg(name: str, **values: int) -> str:
        spec = io[name].arg
        assert spec is not None, name
        return spec.pack(values).hex()

    efd_arg = io["SET_EVENTFD"].arg
    assert efd_arg is not None
    efd_format = efd_arg.st.format
    calls = {
        "ACK": [io["ACK"].request, arg("ACK", seq=1)],
        "GET_CLOCK": [io["GET_CLOCK"].request, arg("GET_CLOCK")],
        "SET_EVENTFD": [io["SET_EVENTFD"].request, f"EFD:{efd_format}"],
        "SET_EVENTFD -1": [io["SET_EVENTFD"].request, arg("SET_EVENTFD", value=-1)],
        "SET_SOURCES": [io["SET_SOURCES"].request, arg("SET_SOURCES")],
        "GET_STATS": [io["GET_STATS"].request, arg("GET_STATS")],
    }
    g.put_bytes(PROBE.encode(), "/tmp/unbind_ioctls.py")
    unbind = f"/sys/bus/pci/drivers/{g.module_name()}/unbind"
    out = g.sh(
        f"python3 /tmp/unbind_ioctls.py {g.dev} {unbind} {g.pci_address()} '{json.dumps(calls)}'"
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
