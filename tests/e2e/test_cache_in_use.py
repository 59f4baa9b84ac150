"""A guest started from the build cache keeps its outputs while it runs: another process
that prunes (another terminal's ``irqlab cache --prune``) leaves its QEMU, kernel and
image alone, and the guest carries on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.build import cache
from irqlab.vm.guest import Guest

# Another process that removes whatever it can of the outputs named on its command line:
# no notion of what is current, only remove_entry's locks between it and the files.
REMOVER = """
import json, sys
from irqlab.build import cache
wanted = set(sys.argv[1:])
print(json.dumps({e.path.name: cache.remove_entry(e) for e in cache.entries()
                  if str(e.path) in wanted}))
"""


def _irqlab(*args: str) -> str:
    r = irqlab(*args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def test_a_running_guests_outputs_are_not_pruned(irqlab_fresh_guest: Guest) -> None:
    guest = irqlab_fresh_guest  # restored from its snapshot: a guest of this test's own
    assert guest.machine is not None
    held = cache.outputs_named(guest.machine.argv)
    recipes = {p.name.rsplit("-", 1)[0] for p in held}
    assert {"qemu", "kernel", "image"} <= recipes, guest.machine.argv
    assert all(cache.in_use(p) for p in held)

    listing = _irqlab("cache", "--prune", "0", "--dry-run")
    for p in held:
        line = next(ln for ln in listing.splitlines() if ln.strip().startswith(p.name))
        assert "in use" in line and "(remove)" not in line, line

    # Only ever the held outputs: were the lock not there, this would remove them.
    assert all(cache.in_use(p) for p in held)
    r = subprocess.run(
        [sys.executable, "-c", REMOVER, *map(str, held)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    assert json.loads(r.stdout) == {p.name: False for p in held}
    assert all(cache.is_complete(p) for p in held)
    assert guest.sh("echo still-here").strip() == "still-here"
