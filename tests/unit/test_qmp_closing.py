"""A QMP client whose QEMU is being stopped logs the connection's loss as no error."""

from __future__ import annotations

import logging

import pytest

from irqlab.vm.qmp.client import SyncQMP


def test_a_stopped_qemus_lost_connection_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """After a frozen guest was replaced, the next test's report showed "Captured log
    setup: ERROR qemu.qmp.protocol.e2e ... Task.Reader: ConnectionResetError": the old
    QEMU's reader dying as it was killed."""
    old, new = SyncQMP("e2e"), SyncQMP("e2e")  # the replacement: the same logger's name
    try:
        caplog.set_level(logging.DEBUG)
        old.closing()
        old._client.logger.error("Task.%s: %s", "Reader", "ConnectionResetError: reset")
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert errors == [], errors
        assert any("Task.Reader: ConnectionResetError" in r.getMessage() for r in caplog.records)
        new._client.logger.error("Task.%s: %s", "Reader", "a real error")  # not hidden
        (error,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert error.name == "qemu.qmp.protocol.e2e" and "a real error" in error.getMessage()
    finally:
        old.close()
        new.close()
