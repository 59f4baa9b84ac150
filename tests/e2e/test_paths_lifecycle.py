"""Bad input, malformed agent requests, unbind/unload/reload with a blocked reader."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0


def test_bad_input_gives_the_documented_errnos(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    res = irqlab_agent.request("check", dev=irqlab_guest.dev, count_dev=irqlab_guest.count_dev)[
        "results"
    ]
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
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.arm("poll", dev=irqlab_guest.dev)
    for junk in (b"garbage", b"{}", b"[]", b'{"id": "x", "op": "ping"}'):
        irqlab_agent.send_raw(junk)
    bad = irqlab_agent.request("arm", path="no-such-path", check=False)
    assert bad["ok"] is False and "unknown path" in bad["error"]
    bad = irqlab_agent.request("frobnicate", check=False)
    assert bad["ok"] is False and "unknown op" in bad["error"]
    bad = irqlab_agent.request("arm", path="read", dev="/dev/irqlab99", check=False)
    assert bad["ok"] is False and bad["errno"] == "ENOENT"
    seq = irqlab_device.next_seq()
    irqlab_device.push(1)
    irqlab_agent.expect(path="poll", seq=seq, timeout=TIMEOUT)
    assert irqlab_agent.ping()["pong"] is True


def test_rmmod_refused_while_a_reader_is_blocked(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.arm("read", dev=irqlab_guest.dev)
    irqlab_agent.request("wait_blocked", name="read")
    assert irqlab_guest.ssh is not None
    r = irqlab_guest.ssh.run(f"rmmod {irqlab_guest.module_name()}")
    # The open file holds a module reference: the kernel refuses, EBUSY for kmod's
    # rmmod ("in use"), EWOULDBLOCK for busybox's (O_NONBLOCK delete_module).
    assert r.rc != 0, r
    assert "in use" in r.err or "temporarily unavailable" in r.err, r
    assert irqlab_guest.sh(f"grep -c '^{irqlab_guest.module_name()} ' /proc/modules").strip() == "1"
    irqlab_agent.request("wait_blocked", name="read")  # still blocked, unharmed
    seq = irqlab_device.next_seq()
    irqlab_device.push(3)
    assert irqlab_agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == 3


@pytest.mark.parametrize("path", ["read", "poll", "epoll-et", "sigio", "eventfd", "count"])
def test_unbind_wakes_blocked_reader_with_enodev_then_reload(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, path: str
) -> None:
    dev = irqlab_guest.count_dev if path == "count" else irqlab_guest.dev
    irqlab_agent.arm(path, dev=dev)
    if path in ("read", "count"):
        irqlab_agent.request("wait_blocked", name=path)
    irqlab_guest.unbind()
    err = irqlab_agent.expect(type="path_error", path=path, timeout=TIMEOUT)
    assert err["errno"] == "ENODEV", err
    irqlab_agent.disarm(path)  # closes the file: the module is no longer in use
    irqlab_guest.unload_module()
    irqlab_guest.load_module()
    irqlab_agent.arm(path, dev=dev)
    irqlab_device.push(11)
    ev = irqlab_agent.expect(path=path, timeout=TIMEOUT)
    if path == "count":
        assert ev["count"] == 1
    else:
        assert ev["value"] == 11


def test_guest_records_its_start_phases_in_order(irqlab_guest: Guest) -> None:
    p = irqlab_guest.phases
    if irqlab_guest.restored:  # the session guest starts from the ready-state snapshot
        assert list(p) == ["restored", "reseeded", "ssh", "agent_ready"], p
        assert 0 < p["restored"] <= p["reseeded"] <= p["ssh"] <= p["agent_ready"] < 300, p
        assert irqlab_guest.boot_seconds == p["restored"]
        return
    phases = ["console_ready", "ssh", "module", "agent_ready"]
    assert list(p) in (phases, [*phases, "snapshot_saved"]), p
    assert 0 < p["console_ready"] <= p["ssh"] <= p["module"] <= p["agent_ready"] < 300, p
    assert irqlab_guest.boot_seconds == p["console_ready"]
