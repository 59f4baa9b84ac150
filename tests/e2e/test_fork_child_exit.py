"""A script's forked child that exits normally leaves its parent's guest alone: its
atexit hook removed the parent's QEMU socket directory (console.sock, qmp.sock).  Run
as a plain script, without pytest (the child's exit is a real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from irqlab.paths import cache_dir

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from irqlab.vm.guest import Guest, GuestConfig

    g = Guest(GuestConfig(name="forked"))
    g.start()
    pid = os.fork()
    if pid == 0:  # no with-block: the child's exit closes no guest of its own
        sys.exit(0)
    try:
        os.waitpid(pid, 0)
        paths = g.machine.paths
        print(json.dumps({
            "socks": [p.exists() for p in (paths.qmp_sock, paths.console_sock)],
            "qmp": g.injector.counters().next_seq >= 0,
            "sh": g.sh("echo up").strip(),
        }))
    finally:
        g.close()
    """
)


def test_a_forked_childs_exit_leaves_the_parents_qemu_sockets(tmp_path: Path) -> None:
    env = {**os.environ, "IRQLAB_CACHE_DIR": str(cache_dir()), "IRQLAB_LOG_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env
    )
    assert r.returncode == 0, r.stderr
    said = json.loads(r.stdout.splitlines()[-1])
    assert said == {"socks": [True, True], "qmp": True, "sh": "up"}, said
