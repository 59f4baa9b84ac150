"""Unbind while a reader of /dev/irqlabN sits between "the ring is empty" and "is the
device dead?": a record delivered in that window is still read before -ENODEV (the
README promises "what is still queued, then -ENODEV"; issue 16 item 7).

The window is a few instructions wide.  A test kernel module (tests/e2e/kmods/
read_window) widens it without any delay in the driver: a kretprobe on
irqlab_copy_records() lets the reader sleep right after it, the first time it copied
nothing, until unbind has killed the device (a kprobe on cdev_device_del(), which unbind
calls right after irqlab_kill()).  Meanwhile the host pushes a word and the driver
delivers it into the reader's ring.
"""

from __future__ import annotations

import errno
import json

from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.helpers import DeviceControl, wait_until
from irqlab.vm.guest import Guest

TIMEOUT = 30.0
PARAMS = "/sys/module/read_window/parameters"
WORD = 0x5A5A

# Opens the counting file (so it counts the delivery), says so, then blocks until the
# driver delivered something.
WAITER = """
import os, sys
fd = os.open("/dev/irqlab0-count", os.O_RDONLY)
open("/tmp/waiter.ready", "w").close()
n = int.from_bytes(os.read(fd, 4), "little")
open("/tmp/waiter.tmp", "w").write(str(n))
os.rename("/tmp/waiter.tmp", "/tmp/waiter.out")
"""

# Marks itself as the reader to hold, then reads twice (blocking).
READER = """
import json, os
fd = os.open("/dev/irqlab0", os.O_RDONLY)
open("/sys/module/read_window/parameters/pid", "w").write(str(os.getpid()))
out = []
for _ in range(2):
    try:
        out.append(len(os.read(fd, 4096)))
    except OSError as e:
        out.append(-e.errno)
open("/tmp/reader.tmp", "w").write(json.dumps(out))
os.rename("/tmp/reader.tmp", "/tmp/reader.out")
"""


def _spawn(g: Guest, name: str, script: str) -> None:
    assert g.ssh is not None
    g.ssh.put_bytes(script.encode(), f"/tmp/{name}.py")
    g.sh(f"setsid python3 /tmp/{name}.py </dev/null >/tmp/{name}.log 2>&1 &")


def _file(g: Guest, path: str) -> str:
    return g.sh(f"cat {path} 2>/dev/null || true").strip()


def _exists(g: Guest, path: str) -> bool:
    return g.sh(f"test -e {path} && echo yes || true").strip() == "yes"


def test_a_record_delivered_just_before_unbind_is_read_before_enodev(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g, dev = irqlab_fresh_guest, irqlab_fresh_device
    assert g.ssh is not None
    g.ssh.put(build_test_kmod("read_window"), "/tmp/read_window.ko")
    g.sh("insmod /tmp/read_window.ko")

    _spawn(g, "waiter", WAITER)
    wait_until(lambda: _exists(g, "/tmp/waiter.ready"), bool, TIMEOUT, "the waiter")
    _spawn(g, "reader", READER)
    wait_until(lambda: _file(g, f"{PARAMS}/state"), lambda s: s == "1", TIMEOUT, "the hold")

    dev.push(WORD)  # delivered into the held reader's ring
    wait_until(lambda: _file(g, "/tmp/waiter.out"), bool, TIMEOUT, "the delivery")
    g.unbind()
    out = wait_until(lambda: _file(g, "/tmp/reader.out"), bool, TIMEOUT, "the reader")
    state = _file(g, f"{PARAMS}/state")
    assert state == "2", f"the hold ended by its timeout, not by the kill (state {state})"
    reads = json.loads(out)
    assert reads[0] > 0 and reads[1] == -errno.ENODEV, (
        f"reads after the kill: {reads} (a record queued before the kill must come first, "
        "then -ENODEV)"
    )
