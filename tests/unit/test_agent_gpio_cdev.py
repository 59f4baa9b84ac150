"""gpio-cdev path without a gpio chip: line events decoded, each ACKed as its device seq.

GPIO v2 line events carry no device seq; with ``ack_dev`` + ``ack_first_seq`` the
event with request-wide ``seqno`` n is the device's event ``first + n - 1``, also
across a kernel buffer drop (a ``seqno`` gap).
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import pytest
from test_agent_protocol import fake_abi  # same directory (rootdir-relative import)

from irqlab_agent.acks import SeqAcker
from irqlab_agent.gpio_cdev import (
    _LINEEVENT,
    GPIO_V2_LINE_EVENT_FALLING_EDGE,
    GPIO_V2_LINE_EVENT_RISING_EDGE,
    GpioCdevPath,
)
from irqlab_agent.paths import PathOptions


class FakeAcker(SeqAcker):
    """Answers ack_nth(n) like the device would: latency 1000 * seq, None if rejected."""

    def __init__(self, first_seq: int, reject: frozenset[int] = frozenset()) -> None:
        self.first_seq = first_seq
        self.reject = reject
        self.acked: list[int] = []
        self.closed = False

    def ack_nth(self, n: int) -> int | None:
        seq = (self.first_seq + n - 1) & 0xFFFF_FFFF
        self.acked.append(seq)
        return None if seq in self.reject else 1000 * seq

    def close(self) -> None:
        self.closed = True


def line_event(seqno: int, *, rising: bool, offset: int = 5, ts: int = 0) -> bytes:
    ev_id = GPIO_V2_LINE_EVENT_RISING_EDGE if rising else GPIO_V2_LINE_EVENT_FALLING_EDGE
    return _LINEEVENT.pack(ts or 100 * seqno, ev_id, offset, seqno, seqno, 0, 0, 0, 0, 0, 0)


def _path(acker: SeqAcker | None) -> tuple[GpioCdevPath, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []
    p = GpioCdevPath("gpio-cdev", fake_abi(), PathOptions(dev="/dev/null"), out.append)
    p.acker = acker
    return p, out


def test_struct_size_is_the_kernels() -> None:
    assert _LINEEVENT.size == 48  # sizeof(struct gpio_v2_line_event)


def test_each_event_acks_its_device_seq_across_a_seqno_gap() -> None:
    acker = FakeAcker(first_seq=41)
    p, out = _path(acker)
    seqnos = [1, 2, 5, 6, 7]  # the kernel dropped 3 and 4 from its buffer
    data = b"".join(line_event(n, rising=n % 2 == 1) for n in seqnos)
    assert p.report_line_events(data, wake=123) == 5
    assert acker.acked == [41, 42, 45, 46, 47]
    assert [e["dev_seq"] for e in out] == [41, 42, 45, 46, 47]
    assert [e["ack_latency_ns"] for e in out] == [41_000, 42_000, 45_000, 46_000, 47_000]
    assert [e["edge"] for e in out] == ["rising", "falling", "rising", "falling", "rising"]
    assert [e["seqno"] for e in out] == seqnos
    assert all(e["wake_ns"] == 123 and e["offset"] == 5 for e in out)
    assert (p.stats.events, p.stats.acks, p.stats.ack_errors, p.stats.last_seq) == (5, 5, 0, 47)


def test_rejected_ack_is_counted_and_reported_as_none() -> None:
    p, out = _path(FakeAcker(first_seq=1, reject=frozenset({2})))
    p.report_line_events(line_event(1, rising=True) + line_event(2, rising=False), wake=1)
    assert [e["ack_latency_ns"] for e in out] == [1000, None]
    assert (p.stats.acks, p.stats.ack_errors) == (1, 1)


def test_seq_wraps_like_the_device() -> None:
    p, out = _path(FakeAcker(first_seq=0xFFFF_FFFF))
    p.report_line_events(line_event(1, rising=True) + line_event(2, rising=False), wake=1)
    assert [e["dev_seq"] for e in out] == [0xFFFF_FFFF, 0]


def test_without_acker_no_ack_fields() -> None:
    p, out = _path(None)
    data = line_event(1, rising=True) + b"\0" * 7  # a short tail is ignored
    assert p.report_line_events(data, wake=9) == 1
    assert "ack_latency_ns" not in out[0] and "dev_seq" not in out[0]
    assert p.stats.acks == 0 and p.stats.last_seq is None


@pytest.mark.parametrize(
    "params",
    [{"ack_dev": "/dev/null"}, {"ack_first_seq": 3}, {"ack_dev": "/dev/null", "ack_first_seq": 0}],
)
def test_ack_options_go_together(params: dict[str, Any]) -> None:
    p, _ = _path(None)
    p.opts.params = params
    with pytest.raises(ValueError, match="go together"):
        p.setup()
    assert p.acker is None


def test_teardown_closes_the_acker() -> None:
    acker = FakeAcker(first_seq=1)
    p, _ = _path(acker)
    p.teardown()
    assert acker.closed


def test_ack_first_seq_is_parsed_from_the_arm_request() -> None:
    p, _ = _path(None)
    p.opts.params = {"ack_dev": "/dev/null", "ack_first_seq": 7}
    # The fake ABI has no SET_SOURCES ioctl: the ACK node is used as it is (as the
    # record paths' ACK node is, see acks.open_ack_node); /dev/null takes no ACK ioctl.
    p.setup()
    try:
        assert p.acker is not None and p.acker.first_seq == 7
        assert p.acker.ack_nth(1) is None
    finally:
        p.teardown()


# -- storm mode (summarize): counts per read buffer, one write(2) of the device seqs --------


def _summary_path(
    ack: str = "write", first_seq: int = 41, interval_s: float = 0.25
) -> tuple[GpioCdevPath, list[dict[str, Any]], int]:
    """A summarizing path whose acker writes to a pipe; (path, messages, pipe read end)."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    acker = FakeAcker(first_seq=first_seq)
    acker.fd = w
    out: list[dict[str, Any]] = []
    opts = PathOptions(dev="/dev/null", ack=ack, summarize=frozenset({0}))
    opts.summary_interval_s = interval_s
    p = GpioCdevPath("gpio-cdev", fake_abi(), opts, out.append)
    p.acker = acker
    p.setup_summary()
    return p, out, r


def _written(fd: int) -> list[int]:
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return []
    return [s for (s,) in struct.iter_unpack("=I", data)]


def test_summary_counts_gaps_and_out_of_order() -> None:
    p, out, _r = _summary_path()
    # buffer 1: seqnos 1, 2, then the kernel dropped 3 and 4; buffer 2: 5, 6, a stale 2
    assert p.count_line_events(b"".join(line_event(n, rising=True) for n in (1, 2)), 10) == 2
    assert p.count_line_events(b"".join(line_event(n, rising=True) for n in (5, 6, 2)), 20) == 3
    assert out == []  # nothing sent per event
    p.flush_summary()
    (s,) = out
    assert s["type"] == "summary" and s["path"] == "gpio-cdev" and s["summary"] == 1
    assert (s["records"], s["first"], s["last"]) == (5, 1, 2)
    assert (s["in_order"], s["out_of_order"]) == (4, 1)
    assert (s["ack"], s["acks"], s["ack_errors"], s["reads"]) == ("write", 5, 0, 0)
    assert (s["first_wake_ns"], s["last_wake_ns"]) == (10, 20)
    # the next summary covers only what came since; order is kept across summaries
    p.count_line_events(line_event(4, rising=False) + line_event(7, rising=True), 30)
    p.flush_summary()
    p.flush_summary()  # nothing pending: no message
    assert len(out) == 2
    assert (out[1]["records"], out[1]["in_order"], out[1]["out_of_order"]) == (2, 1, 1)
    assert (out[1]["first"], out[1]["last"]) == (4, 7)
    assert (p.stats.events, p.stats.summaries, p.stats.acks) == (7, 2, 7)
    assert p.stats.last_seq == 47


def test_summary_acks_each_buffer_in_one_write() -> None:
    p, _out, r = _summary_path(first_seq=0xFFFF_FFFE)
    assert isinstance(p.acker, FakeAcker)
    p.count_line_events(b"".join(line_event(n, rising=True) for n in (1, 2, 3, 6)), 1)
    # one write(2) of the device seqs first + seqno - 1 (wrapping like the device)
    assert _written(r) == [0xFFFF_FFFE, 0xFFFF_FFFF, 0, 3]
    assert p.acker.acked == []  # no ioctl per event
    p.count_line_events(line_event(7, rising=True), 2)
    assert _written(r) == [4]


def test_summary_without_ack() -> None:
    p, out, r = _summary_path(ack="none")
    p.count_line_events(line_event(1, rising=True), 1)
    p.flush_summary()
    assert _written(r) == []
    assert (out[0]["ack"], out[0]["acks"], out[0]["records"]) == ("none", 0, 1)


def test_summary_loop_sends_on_interval_and_at_stop() -> None:
    p, out, _r = _summary_path(interval_s=0.05)
    lr, lw = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)  # the line fd
    p.fd = lr
    try:
        p.start()
        os.write(lw, b"".join(line_event(n, rising=True) for n in (1, 2, 3)))
        deadline = time.monotonic() + 5
        while not out and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out and out[0]["records"] == 3 and out[0]["reads"] >= 1
        os.write(lw, line_event(4, rising=False))
        time.sleep(0.01)
        p.stop()  # the rest is sent at disarm, before stop() returns
    finally:
        os.close(lw)
    assert sum(s["records"] for s in out) == 4 and out[-1]["last"] == 4
    assert p.stats.errors == 0
