"""Bad input, malformed agent requests, unbind/unload/reload with a blocked reader."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0


def test_bad_input_gives_the_documented_errnos(guest: Guest, agent: AgentClient) -> None:
    res = agent.request("check", dev=guest.dev, count_dev=guest.count_dev)["results"]
    assert res == {
        "nonblock_empty_read": "EAGAIN",
        "short_read": "EINVAL",
        "zero_read": "EINVAL",
        "bad_ioctl": "ENOTTY",
        "write_short": "EINVAL",
        "set_eventfd_negative": "EINVAL",
        "set_eventfd_not_eventfd": "EINVAL",
        "set_eventfd_bad_fd": "EBADF",
        "ack_null_arg": "EFAULT",
        "ack_bad_flags": "EINVAL",
        "ack_unknown_seq": "ENOENT",
        "set_sources_bad_mask": "EINVAL",
        "count_nonblock_empty_read": "EAGAIN",
        "count_short_read": "EINVAL",
    }


def test_agent_rejects_malformed_requests_and_keeps_running(
    guest: Guest, agent: AgentClient, device: Any
) -> None:
    agent.arm("poll", dev=guest.dev)
    for junk in (b"garbage", b"{}", b"[]", b'{"id": "x", "op": "ping"}'):
        agent.send_raw(junk)
    bad = agent.request("arm", path="no-such-path", check=False)
    assert bad["ok"] is False and "unknown path" in bad["error"]
    bad = agent.request("frobnicate", check=False)
    assert bad["ok"] is False and "unknown op" in bad["error"]
    bad = agent.request("arm", path="read", dev="/dev/irqlab99", check=False)
    assert bad["ok"] is False and bad["errno"] == "ENOENT"
    seq = device.next_seq()
    device.push(1)
    agent.expect(path="poll", seq=seq, timeout=TIMEOUT)
    assert agent.ping()["pong"] is True


def test_rmmod_refused_while_a_reader_is_blocked(
    guest: Guest, agent: AgentClient, device: Any
) -> None:
    agent.arm("read", dev=guest.dev)
    agent.request("wait_blocked", name="read")
    assert guest.ssh is not None
    r = guest.ssh.run(f"rmmod {guest.module_name()}")
    # The open file holds a module reference: the kernel refuses, EBUSY for kmod's
    # rmmod ("in use"), EWOULDBLOCK for busybox's (O_NONBLOCK delete_module).
    assert r.rc != 0, r
    assert "in use" in r.err or "temporarily unavailable" in r.err, r
    assert guest.sh(f"grep -c '^{guest.module_name()} ' /proc/modules").strip() == "1"
    agent.request("wait_blocked", name="read")  # still blocked, unharmed
    seq = device.next_seq()
    device.push(3)
    assert agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == 3


@pytest.mark.parametrize("path", ["read", "poll", "epoll-et", "sigio", "eventfd", "count"])
def test_unbind_wakes_blocked_reader_with_enodev_then_reload(
    guest: Guest, agent: AgentClient, device: Any, path: str
) -> None:
    dev = guest.count_dev if path == "count" else guest.dev
    agent.arm(path, dev=dev)
    if path in ("read", "count"):
        agent.request("wait_blocked", name=path)
    guest.unbind()
    err = agent.expect(type="path_error", path=path, timeout=TIMEOUT)
    assert err["errno"] == "ENODEV", err
    agent.disarm(path)  # closes the file: the module is no longer in use
    guest.unload_module()
    guest.load_module()
    agent.arm(path, dev=dev)
    device.push(11)
    ev = agent.expect(path=path, timeout=TIMEOUT)
    if path == "count":
        assert ev["count"] == 1
    else:
        assert ev["value"] == 11


def test_guest_records_its_start_phases_in_order(guest: Guest) -> None:
    p = guest.phases
    if guest.restored:  # the session guest starts from the ready-state snapshot
        assert list(p) == ["restored", "ssh", "agent_ready"], p
        assert 0 < p["restored"] <= p["ssh"] <= p["agent_ready"] < 300, p
        assert guest.boot_seconds == p["restored"]
        return
    phases = ["console_ready", "ssh", "module", "agent_ready"]
    assert list(p) in (phases, [*phases, "snapshot_saved"]), p
    assert 0 < p["console_ready"] <= p["ssh"] <= p["module"] <= p["agent_ready"] < 300, p
    assert guest.boot_seconds == p["console_ready"]
