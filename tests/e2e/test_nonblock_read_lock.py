"""O_NONBLOCK read(2) and FLUSH do not sleep on another reader of the same file.

A reader holds the file's read lock while it copies records out, and the copy can
fault and sleep (here: on a userfaultfd page nobody serves until the end).  A
non-blocking read or FLUSH of the same file meanwhile fails with EAGAIN at once; before
the fix it slept in mutex_lock_interruptible() until a 5 s alarm broke it (EINTR).
The held reader still gets its record once the page is served.
"""

from __future__ import annotations

import json
from pathlib import Path

from progs import build_test_prog  # same directory (rootdir-relative import)

from irqlab.testing.helpers import DeviceControl, wait_until
from irqlab.vm.guest import Guest

TIMEOUT = 30.0


def _exists(g: Guest, path: str) -> bool:
    return g.sh(f"test -e {path} && echo yes || true").strip() == "yes"


def test_nonblocking_read_and_flush_do_not_wait_for_a_held_read_lock(
    irqlab_guest: Guest, irqlab_device: DeviceControl, tmp_path: Path
) -> None:
    g = irqlab_guest
    g.put(build_test_prog("nb_read", tmp_path), "/tmp/nb_read", mode=0o755)
    g.sh("rm -f /tmp/nb_read.ready /tmp/nb_read.out")
    g.sh(f"setsid /tmp/nb_read {g.dev} /tmp/nb_read.ready </dev/null >/tmp/nb_read.out 2>&1 &")
    try:
        wait_until(lambda: _exists(g, "/tmp/nb_read.ready"), bool, TIMEOUT, "nb_read to open")
        irqlab_device.push(0x4E42)  # one record for the held reader to copy
        out = wait_until(
            lambda: g.sh("cat /tmp/nb_read.out 2>/dev/null || true").strip(),
            lambda s: s.endswith("}"),
            TIMEOUT,
            "nb_read's result",
        )
    finally:  # not left holding /dev/irqlab0 open for the shared guest's next tests
        g.sh("kill -9 $(pidof nb_read) 2>/dev/null; true")
    r = json.loads(out.splitlines()[-1])
    assert "error" not in r, r
    assert r["read_errno"] == "EAGAIN" and r["read_s"] < 1.0, (
        f"an O_NONBLOCK read while another read holds the lock: {r}"
    )
    assert r["flush_errno"] == "EAGAIN" and r["flush_s"] < 1.0, (
        f"FLUSH on an O_NONBLOCK file while another read holds the lock: {r}"
    )
    assert r["held_read"] > 0, f"the held reader lost its record: {r}"
