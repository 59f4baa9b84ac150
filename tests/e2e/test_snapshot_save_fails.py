"""A snapshot save that fails (a full cache filesystem) leaves the cold-booted guest
running and says why, in QEMU's words; it failed the guest's start before, so on a
full disk every test of a run errored.  The failure is made real: QEMU runs under a
file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored), so writing the state file fails with
EFBIG as a full disk fails with ENOSPC."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from irqlab.vm import snapshot

SCRIPT = r"""
import resource, signal, sys
from irqlab.vm.guest import Guest, GuestConfig

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by QEMU: write() says EFBIG
limit = 32 * 1024 * 1024  # logs fit, the ~140 MB state does not
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with Guest(GuestConfig(name="save-fails", snapshot_tag=sys.argv[1], log_dir=sys.argv[2])) as g:
    print("RESTORED", g.restored, flush=True)
    print("ERROR", g.snapshot_error, flush=True)
    print("SAYS", g.sh("echo alive").strip(), flush=True)
    print("KEY", g.snapshot_key(), flush=True)
"""


def test_a_failed_save_leaves_the_guest_running_and_names_the_cause(tmp_path: Path) -> None:
    tag = f"save-fails-{os.getpid()}-{time.monotonic_ns()}"  # a key of its own: cold boot
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, tag, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert lines["RESTORED"] == "False" and lines["SAYS"] == "alive", r.stdout
    assert "migration failed" in lines["ERROR"] and "File too large" in lines["ERROR"], r.stdout
    assert "going on without it" in r.stderr, r.stderr
    assert snapshot.lookup(lines["KEY"]) is None  # nothing half-written looks complete
