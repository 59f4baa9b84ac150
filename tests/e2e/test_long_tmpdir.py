"""A $TMPDIR whose path is too long for a unix socket's (CI workspaces nest deep): the
guest's sockets go to /tmp instead, and the guest runs (it failed with QEMU's
"AF_UNIX path too long" traceback)."""

from __future__ import annotations

import os
from pathlib import Path

from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.vm.machine import SUN_PATH_MAX


def test_a_guest_runs_with_a_tmpdir_too_long_for_a_socket(tmp_path: Path) -> None:
    long = tmp_path / ("t" * (SUN_PATH_MAX - len(str(tmp_path))))
    long.mkdir()
    r = irqlab("run", "-n", "--", "echo", "ran", env={**os.environ, "TMPDIR": str(long)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    assert "Traceback" not in r.stderr, r.stderr
    assert not any(long.iterdir()), list(long.iterdir())  # nothing left there either
