"""A script that starts guests one after another in the default log directory: each
start prunes it, but every run directory the script made stayed (their names carry its
pid, which runs: 60 after 60 rounds).  Now its closed guests' go like anyone's; a guest
it still runs keeps its directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from irqlab.vm.guest import ensure_snapshot

SCRIPT = textwrap.dedent(
    """
    import functools, json, sys
    import irqlab.vm.guest as guest
    from irqlab.vm.guest import Guest, GuestConfig

    # each start keeps none of the other entries but those of running processes' guests
    guest.prune_logs = functools.partial(guest.prune_logs, keep_other=0)
    running = Guest(GuestConfig(name="running")).start()
    closed = Guest(GuestConfig(name="closed")).start()
    closed_dir = str(closed.log_dir)
    closed.close()
    last = Guest(GuestConfig(name="last")).start()  # its start prunes
    print(json.dumps({"running": str(running.log_dir), "closed": closed_dir}))
    last.close()
    running.close()
    """
)


def test_a_scripts_closed_guests_logs_are_pruned_its_running_ones_kept(tmp_path: Path) -> None:
    ensure_snapshot()  # three restores, not a cold boot
    env = {**os.environ, "IRQLAB_LOG_DIR": str(tmp_path / "logs")}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    dirs = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(dirs["running"]).is_dir(), "the running guest's logs went under it"
    assert not Path(dirs["closed"]).exists(), "the script's closed guest's logs stayed"
