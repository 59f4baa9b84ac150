"""Which of a start's faults remove the snapshot it saved or restored: only the guest's
own end that its saved state may cause again (a panic, an oops), never a silence (a
frozen-guest verdict: a loaded host stalls a good guest too) nor QEMU's end."""

from __future__ import annotations

import pytest

from irqlab.vm.guest import _the_guests_doing
from irqlab.vm.health import Fault, exited_cause


@pytest.mark.parametrize(
    ("cause", "qmp_silent", "poison"),
    [
        ("guest kernel panic: Kernel panic - not syncing: sysrq triggered crash", False, True),
        ("guest kernel panic (pvpanic; QEMU's run state 'guest-panicked')", False, True),
        ("guest kernel oops: BUG: kernel NULL pointer dereference, address: 0", False, True),
        ("guest stopped responding: no agent heartbeat for 30 s (limit 30 s)", False, False),
        ("guest stopped responding: SSH silent for 20 s", False, False),
        (exited_cause(-9), False, False),
        (exited_cause(0), False, False),
        ("QEMU did not answer QMP within 11.7 s", True, False),
    ],
)
def test_only_a_panic_or_oops_poisons_a_snapshot(
    cause: str, qmp_silent: bool, poison: bool
) -> None:
    """A heartbeat's verdict in the reconnect after a save, on a host loaded by other
    guests, removed a good snapshot: every worker then booted cold."""
    assert _the_guests_doing(Fault(cause, "", qmp_silent=qmp_silent)) is poison
