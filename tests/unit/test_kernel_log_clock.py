"""The kernel log's clock against CLOCK_MONOTONIC (irqlab_agent.kclock): the marker's
record found among /dev/kmsg's (a pipe stands in); the whole measurement in a guest:
tests/e2e/test_failure_report.py (a WARN in a test's last milliseconds)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from irqlab_agent import kclock


def test_the_markers_stamp_is_found_among_other_records() -> None:
    # a record per read, as /dev/kmsg gives them
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with r, w:
        r.setblocking(False)
        w.send(b"6,100,1234,-;another line")
        w.send(b"4,101,3194619,-;" + kclock.MARKER)
        assert kclock._find(r.fileno(), time.monotonic() + 2) == 3194619
        assert kclock._find(r.fileno(), time.monotonic() + 0.1) is None  # none: gives up


def test_no_kmsg_no_offset(tmp_path: Path) -> None:
    assert kclock.measure(str(tmp_path / "missing")) is None


def test_the_offset_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each measurement is a line in the guest's kernel log: once per agent, not per
    reset (every test)."""
    calls: list[str] = []
    monkeypatch.setattr(kclock, "_offset", [])
    monkeypatch.setattr(kclock, "measure", lambda kmsg: calls.append(kmsg) or 15_800_000)
    assert [kclock.printk_offset_ns() for _ in range(3)] == [15_800_000] * 3
    assert calls == ["/dev/kmsg"]
