"""qtest protocol client against a socketpair whose far end holds QEMU's scripted replies."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from irqlab.vm.qtest import IrqEvent, QTest, QTestError


@pytest.fixture
def pair() -> Iterator[tuple[QTest, socket.socket]]:
    a, b = socket.socketpair()
    qt = QTest(a, timeout=2.0)
    b.settimeout(2.0)
    yield qt, b
    qt.close()
    b.close()


def _sent(peer: socket.socket) -> list[str]:
    return peer.recv(65536).decode().splitlines()


def test_read_write_and_wire_format(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.sendall(b"OK 0x00000000deadbeef\nOK\nOK 0x0042\n")
    assert qt.readl(0xFE000010) == 0xDEADBEEF
    qt.writew(0x1000, 0xABCD)
    assert qt.inw(0xCFC) == 0x42
    assert _sent(peer) == ["readl 0xfe000010", "writew 0x1000 0xabcd", "inw 0xcfc"]


def test_irq_notices_before_ok_are_recorded(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.sendall(b"IRQ raise 16\nIRQ lower 16\nIRQ raise 17\nOK\n" + b"OK little\n" * 3)
    qt.outl(0xCF8, 0x80000000)
    assert qt.take_irq_events() == [IrqEvent(16, True), IrqEvent(16, False), IrqEvent(17, True)]
    assert qt.take_irq_events() == []
    assert qt.raised_lines() == {17}
    assert IrqEvent(3, False).edge == "lower"


def test_clock(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.sendall(b"OK 1000\nOK 5000\nOK 5000\n")
    assert qt.clock_step(1000) == 1000
    assert qt.clock_set(5000) == 5000
    assert qt.clock() == 5000
    assert _sent(peer) == ["clock_step 1000", "clock_set 5000", "clock_step 0"]
    with pytest.raises(ValueError):
        qt.clock_step(-1)


def test_memory_helpers(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.sendall(b"OK 0x0102ff\nOK\nOK\n")
    assert qt.memread(0x2000, 3) == b"\x01\x02\xff"
    qt.memwrite(0x2000, b"\xaa\x00")
    qt.memset(0x3000, 16, 0)
    assert _sent(peer) == ["read 0x2000 0x3", "write 0x2000 0x2 0xaa00", "memset 0x3000 0x10 0x0"]


def test_fail_and_protocol_errors(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.sendall(b"FAIL Unknown command 'bogus'\n")
    with pytest.raises(QTestError, match="Unknown command 'bogus'"):
        qt.command("bogus")
    peer.sendall(b"WHAT\n")
    with pytest.raises(QTestError, match="unexpected reply"):
        qt.sync()


def test_value_range_checked_before_sending(pair: tuple[QTest, socket.socket]) -> None:
    qt, _ = pair
    with pytest.raises(ValueError, match="does not fit in 1 bytes"):
        qt.outb(0x80, 0x100)
    with pytest.raises(ValueError):
        qt.writel(0, -1)


def test_eof_is_reported(pair: tuple[QTest, socket.socket]) -> None:
    qt, peer = pair
    peer.close()
    with pytest.raises(QTestError, match=r"closed the qtest socket|cannot send"):
        qt.readl(0)


def test_timeout_is_reported() -> None:
    a, b = socket.socketpair()
    qt = QTest(a, timeout=0.05)
    with pytest.raises(QTestError, match="timeout"):
        qt.readl(0)
    qt.close()
    b.close()
    with pytest.raises(QTestError, match="closed"):
        qt.readl(0)
