"""gpio-cdev path without a gpio chip: line events decoded, each ACKed as its device seq.

GPIO v2 line events carry no device seq; with ``ack_dev`` + ``ack_first_seq`` the
event with request-wide ``seqno`` n is the device's event ``first + n - 1``, also
across a kernel buffer drop (a ``seqno`` gap).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_agent_protocol import fake_abi  # same directory (rootdir-relative import)

from irqlab_agent.hwpaths import (
    _LINEEVENT,
    GPIO_V2_LINE_EVENT_FALLING_EDGE,
    GPIO_V2_LINE_EVENT_RISING_EDGE,
    GpioCdevPath,
)
from irqlab_agent.paths import PathOptions, SeqAcker


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
    # The fake ABI has no SET_SOURCES ioctl: the acker cannot give its fd an empty
    # source mask, so it refuses (and closes the fd) rather than ACK from a file
    # that would queue records of its own.
    with pytest.raises(KeyError, match="SET_SOURCES"):
        p.setup()
    assert p.acker is None
