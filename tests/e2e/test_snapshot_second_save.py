"""A second migration on one QEMU (the base flow saves twice; a module rebuild saves
right after its restore) took the first one's leftover MIGRATION events: its wait
returned at once on the earlier "completed" while QEMU went on writing, the VM was
continued under the running migration and stopped again when it ended (the guest
frozen for good, "no agent heartbeat" seconds later), and the snapshot's meta recorded
the size of a half-written file (its next restore: "state.mig is N bytes, meta.json
says M", a cold boot)."""

from __future__ import annotations

import secrets
import time

from irqlab.vm import snapshot
from irqlab.vm.guest import Guest


def _wait_migration_status(g: Guest, want: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (status := g.machine.qmp("query-migrate").get("status")) != want:
        assert time.monotonic() < deadline, f"migration still {status} after {timeout} s"
        time.sleep(0.05)  # QEMU's state, looked at again (no event is taken here)


def test_a_save_after_a_migration_whose_events_were_not_taken_waits_for_its_own(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    m = g.machine
    # a migration that ends unseen by any event wait: its events stay queued, as after a
    # wait that query-migrate ended (the load's, a save's)
    m.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    m.qmp("stop")
    m.qmp("migrate", uri="exec:cat > /dev/null")
    _wait_migration_status(g, "completed")
    while m.qmp("query-status")["status"] == "finish-migrate":
        time.sleep(0.05)  # cont is refused until QEMU leaves it (no event marks it)
    m.qmp("cont")
    assert g.sh("echo alive").strip() == "alive"

    key = secrets.token_hex(8)  # a digest of no configuration
    try:
        saved = snapshot.save(m, key, {"test": "second save"})
        assert m.qmp("query-migrate").get("status") == "completed", "save returned early"
        assert snapshot.intact(saved), snapshot.check(saved)
        assert m.qmp("query-status")["status"] == "running"
        assert g.sh("echo still alive", timeout=30).strip() == "still alive"
    finally:
        assert snapshot.discard(key) is None and snapshot.lookup(key) is None
