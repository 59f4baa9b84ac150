"""A running Guest started again is refused: the second QEMU replaced the first in
the object, and the first ran on unreferenced until Python exited (then an asyncio
traceback).  restart() is the way to start it again."""

from __future__ import annotations

import pytest

from irqlab.testing.helpers import DeviceControl
from irqlab.testing.plugin import start_guest
from irqlab.vm import proc
from irqlab.vm.guest import Guest, GuestConfig, GuestError


def test_a_running_guest_is_not_started_again_and_restart_works() -> None:
    others = {p.pid for p in proc.live_children()}  # e.g. the session guest's QEMU

    def mine() -> list[int]:
        return [p.pid for p in proc.live_children() if p.pid not in others]

    g = start_guest(GuestConfig(name="started-twice"))
    try:
        device = DeviceControl(g)  # taken before the restart, used after it
        first = g.machine.pid if g.machine is not None else None
        with pytest.raises(GuestError, match="has a QEMU already"):
            g.start()
        assert g.machine is not None and g.machine.pid == first, "the same QEMU"
        assert mine() == [first], "no second QEMU"
        assert g.sh("echo ok").strip() == "ok", "the running guest is untouched"
        g.restart()
        assert g.machine is not None and g.machine.pid != first
        assert mine() == [g.machine.pid]
        assert g.sh("echo again").strip() == "again"
        # it held the first QEMU's injector ("QMP qom-get: not connected")
        device.push(7)
        assert device.wait_counters(lambda c: c.raised == 1, timeout=30).raised == 1
        log_dir = g.log_dir
        assert log_dir is not None and (log_dir / "console.log").is_file()
    finally:
        g.close()
    assert mine() == []
    assert g.log_dir == log_dir, "where its logs are, after close() too"
    with pytest.raises(GuestError, match="not running"):
        g.injector.counters()  # a closed guest's device is not there to ask


@pytest.mark.parametrize("how", ["with-start", "start-then-with"])
def test_a_with_block_of_a_started_guest_uses_it_and_closes_it(how: str) -> None:
    """``with Guest().start() as g`` (and ``g.start(); with g:``): __enter__ started it a
    second time, refused ("has a QEMU already"), and the QEMU started first ran on
    with no handle left to close it."""
    others = {p.pid for p in proc.live_children()}  # e.g. the session guest's QEMU

    def mine() -> list[int]:
        return [p.pid for p in proc.live_children() if p.pid not in others]

    config = GuestConfig(name="with-started")
    g = Guest(config).start() if how == "with-start" else Guest(config)
    try:
        if how == "start-then-with":
            g.start()
        first = g.machine.pid if g.machine is not None else None
        with g as entered:
            assert entered is g and g.machine is not None and g.machine.pid == first
            assert mine() == [first], "no second QEMU"
            assert g.sh("echo ok").strip() == "ok"
        assert g.machine is None, "the with block closed it"
        assert mine() == []
    finally:
        g.close()  # when the test failed before the with block closed it
