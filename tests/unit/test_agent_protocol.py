"""Guest agent: request parsing, responses, ABI decoding, signalfd records (no kernel driver)."""

from __future__ import annotations

import io
import json
import struct

import pytest

from irqlab_agent.abi import Abi, StructSpec
from irqlab_agent.agent import Agent
from irqlab_agent.checks import unused_ioctl
from irqlab_agent.protocol import ProtocolError, Writer, errno_name, error_id, parse_request
from irqlab_agent.sysio import decode_siginfo, encode_siginfo

# A made-up ABI for the agent's generic code paths, in the shape of the ABI artifact
# (abi.json). The real one comes from the uapi header (see test_agent_uapi.py); nothing
# here claims to be the driver's layout (this record is even unaligned).


def _struct(size: int, *fields: tuple[str, int, str]) -> dict[str, object]:
    return {
        "size": size,
        "fields": [
            {"name": n, "offset": off, "size": struct.calcsize("<" + code), "code": code}
            for n, off, code in fields
        ],
    }


FAKE_SPEC = {
    "schema": 3,
    "byteorder": "<",
    "ioc": {
        "nrshift": 0, "typeshift": 8, "sizeshift": 16, "dirshift": 30,
        "nrbits": 8, "typebits": 8, "sizebits": 14, "dirbits": 2,
        "none": 0, "write": 1, "read": 2,
    },
    "record": _struct(
        20,
        ("seq", 0, "I"), ("source", 4, "B"), ("line", 5, "B"), ("kind", 6, "B"),
        ("flags", 7, "B"), ("value", 8, "I"), ("raise_ns", 12, "Q"),
    ),
    "flags": {"DROPPED": 1, "OVERFLOW": 2},
    "ioctls": {
        "ACK": {
            "request": 0xC0104901,
            "arg": _struct(16, ("seq", 0, "I"), ("pad", 4, "I"), ("latency_ns", 8, "Q")),
        },
        "SET_EVENTFD": {"request": 0x40044902, "arg": _struct(4, ("fd", 0, "i"))},
        # what a record path's arm asks of a character device (a FIFO is let be)
        "GET_INFO": {"request": 0x80084904, "arg": _struct(8, ("version", 0, "Q"))},
    },
}  # fmt: skip


def fake_abi() -> Abi:
    return Abi(json.loads(json.dumps(FAKE_SPEC)))


def rec(seq: int, value: int = 0, flags: int = 0, source: int = 1, line: int = 0) -> bytes:
    return struct.pack("=IBBBBIQ", seq, source, line, 0, flags, value, 1000 * seq)


def test_parse_valid_request() -> None:
    r = parse_request(b'{"id": 3, "op": "arm", "path": "poll", "batch": 4}')
    assert (r.id, r.op) == (3, "arm")
    assert r.get_str("path") == "poll"
    assert r.get_int("batch", 1, lo=1) == 4
    assert r.get_bool("ack", True) is True


@pytest.mark.parametrize(
    ("line", "rid"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"op": "ping"}', None),
        (b'{"id": "7", "op": "ping"}', None),
        (b'{"id": true, "op": "ping"}', None),
        (b'{"id": 5}', 5),
        (b'{"id": 6, "op": 17}', 6),
        (b"\xff\xfe", None),
    ],
)
def test_malformed_requests_raise_with_best_id(line: bytes, rid: int | None) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_request(line)
    assert (ei.value.req_id if ei.value.req_id is not None else error_id(line)) == rid


def test_typed_getters_reject_wrong_types() -> None:
    r = parse_request(b'{"id": 1, "op": "arm", "batch": "x", "ack": 1, "n": 99, "f": true}')
    with pytest.raises(ProtocolError, match="batch"):
        r.get_int("batch")
    with pytest.raises(ProtocolError, match="ack"):
        r.get_bool("ack", True)
    with pytest.raises(ProtocolError, match="out of range"):
        r.get_int("n", hi=10)
    with pytest.raises(ProtocolError, match="f"):
        r.get_float("f", 1.0)


def test_errno_name() -> None:
    assert errno_name(11) == "EAGAIN"
    assert errno_name(25) == "ENOTTY"
    assert errno_name(99999) == "E99999"


def test_writer_emits_one_line_per_object() -> None:
    buf = io.BytesIO()
    w = Writer(buf)
    w.send({"id": 1, "ok": True})
    w.send({"type": "event", "seq": 2})
    lines = buf.getvalue().splitlines()
    assert [json.loads(x) for x in lines] == [{"id": 1, "ok": True}, {"type": "event", "seq": 2}]


def test_abi_decodes_records_with_flag_names() -> None:
    abi = fake_abi()
    assert abi.record_size == 20
    evs = abi.decode(rec(1, 10) + rec(2, 20, flags=3))
    assert [e["seq"] for e in evs] == [1, 2]
    assert evs[1]["value"] == 20
    assert evs[1]["raise_ns"] == 2000
    assert evs[1]["flag_names"] == ["DROPPED", "OVERFLOW"]
    assert evs[0]["flag_names"] == []


def test_abi_rejects_partial_records_and_bad_specs() -> None:
    with pytest.raises(ValueError, match="multiple"):
        fake_abi().decode(rec(1)[:-1])
    with pytest.raises(ValueError, match="overlaps"):
        StructSpec.from_json(_struct(8, ("a", 0, "I"), ("b", 2, "I")))
    with pytest.raises(ValueError, match="less than"):
        StructSpec.from_json(_struct(4, ("a", 0, "Q")))
    with pytest.raises(ValueError, match="schema"):
        Abi({**FAKE_SPEC, "schema": 2})


def test_structs_use_the_artifacts_offsets() -> None:
    s = StructSpec.from_json(_struct(16, ("a", 0, "B"), ("b", 8, "Q")))
    assert s.size == 16 and s.layout() == {"a": (0, "B"), "b": (8, "Q")}
    assert s.unpack(s.pack({"a": 1, "b": 2})) == {"a": 1, "b": 2}
    assert s.pack({"a": 1, "b": 2}) == b"\x01" + bytes(7) + (2).to_bytes(8, "little")


def test_ioctl_struct_roundtrip() -> None:
    io_ = fake_abi().ioctl("ACK")
    assert io_.arg is not None
    assert io_.arg.unpack(io_.arg.pack({"seq": 5, "latency_ns": 7})) == {
        "seq": 5,
        "pad": 0,
        "latency_ns": 7,
    }
    with pytest.raises(KeyError, match="no FLUSH"):
        fake_abi().ioctl("FLUSH")


def test_ioc_encodes_as_the_artifact_says() -> None:
    abi = fake_abi()
    assert abi.ioc("read|write", 0x49, 0x01, 16) == abi.ioctl("ACK").request
    assert abi.ioc("write", 0x49, 0x02, 4) == abi.ioctl("SET_EVENTFD").request
    assert abi.ioc_field(0xC0104901, "size") == 16 and abi.ioc_field(0xC0104901, "dir") == 3


def test_unused_ioctl_has_driver_type_and_free_nr() -> None:
    abi = fake_abi()
    bad = unused_ioctl(abi)
    assert (bad >> 8) & 0xFF == 0x49
    assert bad & 0xFF not in {1, 2}
    assert bad not in {io.request for io in abi.ioctls.values()}


def test_siginfo_roundtrip() -> None:
    info = decode_siginfo(encode_siginfo(35, code=1, fd=7, band=0x41))
    assert (info.signo, info.code, info.fd, info.band) == (35, 1, 7, 0x41)
    with pytest.raises(ValueError):
        decode_siginfo(b"\0" * 12)


def test_agent_answers_malformed_and_unknown_requests_and_keeps_going() -> None:
    out = io.BytesIO()
    agent = Agent(fake_abi(), Writer(out))
    assert agent.handle_line(b"{{{")["ok"] is False
    r = agent.handle_line(b'{"id": 9, "op": "frobnicate"}')
    assert r == {"id": 9, "ok": False, "error": "unknown op 'frobnicate'", "ops": r["ops"]}
    r = agent.handle_line(b'{"id": 10, "op": "arm", "path": "teleport"}')
    assert r["ok"] is False and "unknown path" in r["error"]
    r = agent.handle_line(b'{"id": 11, "op": "arm", "path": "read", "dev": "/nonexistent/x"}')
    assert r["ok"] is False and r["errno"] == "ENOENT"
    r = agent.handle_line(b'{"id": 12, "op": "arm", "path": "sigio", "dev": "/dev/null"}')
    assert r["ok"] is False and "dispatcher" in r["error"]
    r = agent.handle_line(b'{"id": 13, "op": "disarm", "name": "nothing"}')
    assert r["ok"] is False and "no armed path" in r["error"]
    assert agent.handle_line(b'{"id": 14, "op": "ping"}')["pong"] is True


def test_an_arm_option_the_path_does_not_take_is_refused_naming_them() -> None:
    """A misspelt option (interval_msec, bogus_opt=1) was ignored: the default ran."""
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    line = b'{"id": 20, "op": "arm", "path": "nonblock", "dev": "/dev/null", "interval_msec": 5}'
    r = agent.handle_line(line)
    assert r["ok"] is False, r
    assert r["error"].startswith("op 'arm': path 'nonblock' takes no interval_msec; its options: ")
    assert "interval_ms" in r["error"] and "lines" not in r["error"], r["error"]
    # a kind's own options are its own: gpio-cdev takes lines, read does not
    r = agent.handle_line(b'{"id": 21, "op": "arm", "path": "read", "lines": [1]}')
    assert r["ok"] is False and "takes no lines" in r["error"], r
    # the nonblock poller's and setsig's own options are theirs alone
    r = agent.handle_line(b'{"id": 22, "op": "arm", "path": "read", "max_polls": 5}')
    assert r["ok"] is False and "takes no max_polls" in r["error"], r
    r = agent.handle_line(b'{"id": 23, "op": "arm", "path": "poll", "sig": 2}')
    assert r["ok"] is False and "takes no sig" in r["error"], r
    assert agent.paths == {}


def test_every_arm_option_a_path_reads_is_one_the_arm_check_takes() -> None:
    """The allow-lists repeat the names the paths read: a name read but not listed
    would be refused at every arm (seen only in a booted guest)."""
    import re
    from pathlib import Path

    from irqlab_agent.agent import ALL_PATH_KINDS, ARM_OPTIONS

    agent_dir = Path(__file__).resolve().parents[2] / "harness" / "irqlab_agent"
    read = {
        name
        for path in agent_dir.glob("*.py")
        for name in re.findall(r"\b(?:params|p)\.get\(\s*\"([a-z_]+)\"", path.read_text())
    }
    assert {"ack_dev", "lines", "regs", "input"} <= read, read  # the scan still finds them
    taken = ARM_OPTIONS.union(*(cls.options for cls in ALL_PATH_KINDS.values()))
    assert read <= taken, f"read by a path but refused by arm: {sorted(read - taken)}"


def test_interrupt_takes_only_a_path_that_waits_in_read() -> None:
    """``interrupt``/``wait_blocked`` need a thread in read(2); stop() needs a signal for
    a thread the wake-up pipe cannot end.  Two flags: one meant both, so a path that
    sleeps in ppoll(2) would have been accepted by interrupt and then timed out."""
    from irqlab_agent.agent import ALL_PATH_KINDS
    from irqlab_agent.paths import NotificationPath

    in_read = {k for k, cls in ALL_PATH_KINDS.items() if cls.waits_in_read}
    assert in_read == {"read", "count", "uio", "evdev-read"}, in_read
    # waiting in read(2) is a wait only a signal ends
    assert all(ALL_PATH_KINDS[k].stopped_by_signal for k in in_read)
    assert not NotificationPath.waits_in_read and not NotificationPath.stopped_by_signal

    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    r = agent.handle_line(b'{"id": 30, "op": "interrupt", "name": "nothing"}')
    assert r["ok"] is False, r
    assert r["error"].startswith("no armed path named 'nothing': this takes a path that does")
    assert "read/count/uio/evdev-read" in r["error"], r["error"]

    class Sleeper(NotificationPath):  # armed, not in read(2): e.g. a ppoll(2) path
        kind = "ppoll"
        stopped_by_signal = True

    path = object.__new__(Sleeper)
    agent.paths["p"] = path
    r = agent.handle_line(b'{"id": 31, "op": "wait_blocked", "name": "p"}')
    assert r["ok"] is False, r
    assert r["error"].startswith("the ppoll path 'p' does not wait in read(2)"), r["error"]
