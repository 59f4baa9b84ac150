"""The guest agent in a booted guest, what its review found (the unit tests hold the
rest: tests/unit/test_agent_robustness.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from irqlab.testing.helpers import wait_until
from irqlab.vm import agent_client
from irqlab.vm.agent_client import AgentClient, AgentError
from irqlab.vm.guest import AGENT_LOG, Guest
from irqlab.vm.loadscale import scaled
from irqlab_agent.agent import STOP_CHECK_S
from irqlab_agent.daemon import TAKEOVER_JOIN_S

TIMEOUT = 30.0
# The takeover test's blocking read in the old session (the agent's longest, its
# MAX_WAIT_MS): the takeover must come well before it ends on its own.
STUCK_READ_MS = 60_000


def _fds(guest: Guest, pid: int) -> list[str]:
    """What the agent process has open (the targets of /proc/PID/fd)."""
    out = guest.sh(f"for f in /proc/{pid}/fd/*; do readlink $f; done", check=False)
    return sorted(line for line in out.splitlines() if line and not line.startswith("/proc"))


def _waits_in_poll(guest: Guest, pid: int, timeout_ms: int) -> bool:
    """Whether a thread of process *pid* is in poll(2) with *timeout_ms* (x86_64's
    syscall 7; /proc/PID/task/TID/syscall: number, then fds, nfds, timeout in hex).
    Other architectures have ppoll(2) only, whose timeout is a pointer: refused."""
    if guest.arch.name != "x86_64":
        pytest.fail(
            f"this check reads x86_64's poll(2) from /proc; the guest is {guest.arch.name}",
            pytrace=False,
        )
    out = guest.sh(f"cat /proc/{pid}/task/*/syscall", check=False)
    return any(
        line.split()[:1] == ["7"] and line.split()[3:4] == [hex(timeout_ms)]
        for line in out.splitlines()
    )


def _deliveries_ended(agent: AgentClient, want: dict[str, dict[str, int]]) -> None:
    """Wait until each path's counters have reached *want* (at least).

    After an event, before the next push: every delivery that event brings has ended
    (its drain's last read, the EAGAIN that ``eagain`` counts) first.  Pushed sooner,
    that read may take the next record, and the next signal finds nothing (spurious) or
    merges with one still pending (plain SIGIO is not queued): counts that are not a
    signal per event.  An asynchronous path's counters: ``signals``/``sigio_fallback``
    when the dispatcher hands it a signal, ``eagain`` when that drain ends."""
    wait_until(
        lambda: agent.stats()["paths"],
        lambda paths: all(
            paths[name][k] >= n for name, counts in want.items() for k, n in counts.items()
        ),
        TIMEOUT,
        f"the paths' deliveries ({want})",
    )


def test_failed_arms_leave_no_file_open(irqlab_guest: Guest, irqlab_agent: AgentClient) -> None:
    pid = irqlab_agent.ping()["pid"]
    before = _fds(irqlab_guest, pid)
    for i in range(50):
        r = irqlab_agent.request(
            "arm", path="read", dev="/dev/nonexistent", name=f"x{i}", check=False
        )
        assert r["ok"] is False and r["errno"] == "ENOENT", r
    assert _fds(irqlab_guest, pid) == before
    for i in range(5):
        r = irqlab_agent.request("arm", path="uio", name=f"u{i}", check=False)
        assert r["ok"] is False and "internal error" not in r["error"], r
    assert _fds(irqlab_guest, pid) == before
    # no irqlab node: /dev/zero's bytes were read as thousands of garbage events
    for kind in ("read", "poll", "sigio", "eventfd"):
        for dev, said in (
            ("/dev/zero", "/dev/zero is not an irqlab event node"),
            ("/etc/passwd", "/etc/passwd is not a character device"),
        ):
            r = irqlab_agent.request("arm", path=kind, dev=dev, check=False)
            assert r["ok"] is False and said in r["error"], r
    assert _fds(irqlab_guest, pid) == before
    irqlab_agent.arm("poll", dev=irqlab_guest.dev)  # a good arm after them works


def test_count_path_counts_refused_acks_as_errors(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    """ACKs of seqs the device never raised: refused, so ack_errors, not acks."""
    irqlab_agent.arm(
        "count", dev=irqlab_guest.count_dev, ack_dev=irqlab_guest.dev, ack_first_seq=100_000
    )
    irqlab_device.push(0x33)
    ev = irqlab_agent.expect(path="count", timeout=TIMEOUT)
    assert ev["count"] == 1 and ev["ack_latency_ns"] == [None], ev
    st = irqlab_agent.disarm("count")["count"]
    assert (st["counted"], st["acks"], st["ack_errors"]) == (1, 0, 1), st


def test_sigio_beside_setsig_is_no_signal_of_the_setsig_path(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.arm("sigio", name="s", dev=irqlab_guest.dev)
    irqlab_agent.arm("setsig", name="r", dev=irqlab_guest.dev, sig=1)
    for i in range(10):
        seq = irqlab_device.next_seq()
        irqlab_device.push(0x200 + i)
        irqlab_agent.expect(path="s", seq=seq, timeout=TIMEOUT)
        irqlab_agent.expect(path="r", seq=seq, timeout=TIMEOUT)
        # s: the plain SIGIO; r: its RT signal and that SIGIO (a fallback), each drained
        _deliveries_ended(
            irqlab_agent,
            {
                "s": {"signals": i + 1, "eagain": i + 1},
                "r": {"signals": i + 1, "sigio_fallback": i + 1, "eagain": 2 * (i + 1)},
            },
        )
    st = irqlab_agent.disarm()
    keys = ("events", "signals", "wakeups", "spurious", "sigio_fallback")
    assert {k: st["s"][k] for k in keys} == {
        "events": 10, "signals": 10, "wakeups": 10, "spurious": 0, "sigio_fallback": 0,
    }  # fmt: skip
    assert {k: st["r"][k] for k in keys} == {
        "events": 10, "signals": 10, "wakeups": 10, "spurious": 0, "sigio_fallback": 10,
    }  # fmt: skip


def test_no_request_blocks_the_session(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.request("open", name="blk", dev=irqlab_guest.dev, nonblock=False)
    r = irqlab_agent.request("read", name="blk", wait_ms=300, timeout=TIMEOUT)
    assert (r["errno"], r["nbytes"]) == ("ETIMEDOUT", None), r
    with pytest.raises(AgentError, match="never ran empty"):
        irqlab_agent.request("check", dev="/dev/zero", timeout=TIMEOUT)
    with pytest.raises(AgentError, match="'timeout_ms' must be a finite number in"):
        irqlab_agent.request("wait_blocked", name="x", timeout_ms=1e12, timeout=TIMEOUT)
    seq = irqlab_device.next_seq()
    irqlab_device.push(0x11)  # something queued: the blocking read takes it at once
    r = irqlab_agent.request("read", name="blk", timeout=TIMEOUT)
    assert [e["seq"] for e in r["events"]] == [seq], r


def test_a_read_longer_than_the_base_limit_is_waited_for(
    irqlab_guest: Guest,
    irqlab_agent: AgentClient,
    irqlab_device: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``read`` with ``wait_ms`` 35 000 and no timeout of the caller's: the client
    waits for it as long as the read may take (the 30 s it gave up after before made
    0.5 s here: the read ends by an event 1.5 s in)."""
    monkeypatch.setattr(agent_client, "REQUEST_TIMEOUT", 0.5)
    irqlab_agent.request("open", name="blk", dev=irqlab_guest.dev, nonblock=False)
    seq = irqlab_device.next_seq()
    timer = threading.Timer(1.5, irqlab_device.push, (0x35,))
    timer.start()
    try:
        r = irqlab_agent.request("read", name="blk", wait_ms=35_000)
    finally:
        timer.join()
    assert [e["seq"] for e in r["events"]] == [seq], r


def test_read_with_a_bad_as_consumes_nothing(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, irqlab_wait_stats: Any
) -> None:
    irqlab_agent.request("open", name="h", dev=irqlab_guest.dev)
    seq = irqlab_device.next_seq()
    irqlab_device.push(0x11, 0x22)
    irqlab_wait_stats("h", lambda st: st["queued"] >= 2)
    with pytest.raises(AgentError, match="'as' must be records, count or raw"):
        irqlab_agent.request("read", name="h", **{"as": "bogus"})
    r = irqlab_agent.request("read", name="h")
    assert [e["seq"] for e in r["events"]] == [seq, seq + 1], r


def test_kernel_clock_is_the_kernel_logs_time(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    """``kernel_clock``: what a failure's diagnostics put a test's start estimated by
    CLOCK_MONOTONIC onto the kernel log's stamps with; a line logged between two of its
    answers is stamped between their ``kernel_log_ns``."""
    before = irqlab_agent.request("kernel_clock")
    irqlab_guest.sh("echo '<6>irqlab-e2e: between two kernel_clock' > /dev/kmsg")
    after = irqlab_agent.request("kernel_clock")
    line = irqlab_guest.sh("dmesg | grep 'irqlab-e2e: between two kernel_clock'")
    stamp_ns = round(float(line.split("]")[0].strip("[ ")) * 1e9)
    assert before["kernel_log_ns"] <= stamp_ns <= after["kernel_log_ns"], (before, line, after)
    assert after["monotonic_ns"] > before["monotonic_ns"]


def test_reset_puts_the_tune_settings_back(irqlab_agent: AgentClient) -> None:
    r = irqlab_agent.request("tune", ack_first=False, switch_interval_s=0.001)
    assert r["ack_first"] is False
    irqlab_agent.request("reset")
    r = irqlab_agent.request("tune")
    assert (r["ack_first"], r["switch_interval_s"]) == (True, 0.005), r


def test_a_takeover_stops_a_session_stuck_in_a_request(
    irqlab_fresh_guest: Guest, irqlab_fresh_agent: AgentClient
) -> None:
    """The old session arms SIGIO and waits 60 s in a blocking read: the new session
    starts at once, the old request having lasted more than STUCK_REQUEST_S (not after
    the daemon's 10 s for a session to end, nor the read's 60 s), and gets every SIGIO
    on time."""
    g, old = irqlab_fresh_guest, irqlab_fresh_agent
    pid = old.ping()["pid"]
    old.arm("sigio", name="old_sigio", dev=g.dev)
    old.request("open", name="blk", dev=g.dev, nonblock=False)
    old.request("ioctl", name="blk", ioctl="SET_SOURCES", arg=0)  # it never gets a record
    old.request("tune", ack_first=False)
    old.submit("read", name="blk", wait_ms=STUCK_READ_MS)  # answered after the takeover
    wait_until(
        # it polls in slices of STOP_CHECK_S, looking whether its session was stopped
        lambda: _waits_in_poll(g, pid, round(STOP_CHECK_S * 1000)),
        bool,
        timeout=scaled(10.0),
        what="the old session's blocking read (a thread of the agent in poll(2))",
    )
    old.close(timeout=2)
    t0 = time.monotonic()
    new = g.agent  # a new session: the daemon takes over
    took = time.monotonic() - t0
    assert new.ping()["pid"] == pid
    # the old read has been waiting longer than STUCK_REQUEST_S: its agent is stopped
    # at once, not after the daemon's TAKEOVER_JOIN_S for a session to end nor at the
    # end of the read (the slack for a loaded host stretches, but stays short of it)
    assert took < min(scaled(5.0), TAKEOVER_JOIN_S - 1.0), took
    log = g.sh(f"cat {AGENT_LOG}")
    assert "the previous session has been in one request for" in log, log
    fds = _fds(g, pid)
    assert fds.count("anon_inode:[signalfd]") == 1, fds  # the new session's dispatcher alone
    assert new.request("tune")["ack_first"] is True  # the old session's tune is gone
    new.arm("sigio", name="new_sigio", dev=g.dev)
    inj = g.injector
    for i in range(20):
        inj.push(0x100 + i)
        new.expect(path="new_sigio", timeout=scaled(2.0))  # on time (stretched by load)
        _deliveries_ended(new, {"new_sigio": {"signals": i + 1, "eagain": i + 1}})
    st = new.disarm("new_sigio")["new_sigio"]
    assert (st["events"], st["signals"], st["spurious"]) == (20, 20, 0), st
