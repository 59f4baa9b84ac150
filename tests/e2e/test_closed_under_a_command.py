"""A guest closed (or restarted) by one thread while another runs a command in it: the
command said ``RunResult(rc=-1, out='', err='')`` as if it had run, or after a restart
"the connection closed ... (QEMU and the guest kernel are alive)", the new QEMU's."""

from __future__ import annotations

import threading
import time

import pytest

from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig, GuestError
from irqlab.vm.loadscale import timeout_scale
from irqlab.vm.ssh import SshClient

LONG = "touch /tmp/started; sleep 60"


def _run_aside(g: Guest) -> tuple[threading.Thread, list[object]]:
    """``g.run(LONG)`` in a thread of its own, once it runs in the guest; its outcome."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(g.run(LONG))
        except BaseException as e:  # the outcome under test
            outcome.append(e)

    assert g.ssh is not None
    g.sh("rm -f /tmp/started")
    # a second connection sees it start (a guest's commands run one at a time: g.sh
    # would wait for it to end)
    watcher = SshClient("127.0.0.1", g.ssh_port, user=g.ssh.user, key_path=g.ssh.key_path)
    watcher.connect(timeout=30)
    try:
        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 30 * timeout_scale()
        while watcher.run("test -e /tmp/started", timeout=30).rc != 0:
            assert time.monotonic() < deadline, "the command never started"
            assert t.is_alive(), outcome
    finally:
        watcher.close()
    return t, outcome


@pytest.mark.parametrize("how", ["close", "restart"])
def test_a_command_ended_by_another_threads_close_says_so(how: str) -> None:
    g = start_guest(GuestConfig(name=f"closed-under-{how}"))
    try:
        t, outcome = _run_aside(g)
        g.close() if how == "close" else g.restart()
        t.join(20 * timeout_scale())
        assert not t.is_alive(), "the command's wait did not end with the connection"
        assert len(outcome) == 1 and isinstance(outcome[0], GuestError), outcome
        said = str(outcome[0])
        assert said == (
            f"the guest 'closed-under-{how}' was closed (or restarted) by another thread "
            f"while running {LONG!r}"
        ), said
        if how == "restart":  # and the restarted guest is there for the next command
            assert g.sh("echo up") == "up\n"
    finally:
        g.close()


def test_nested_with_blocks_keep_the_guest_until_the_outermost_ends() -> None:
    """A helper's ``with g:`` inside the caller's closed the guest at its end: the
    caller's next command said "the guest is not connected"."""
    g = Guest(GuestConfig(name="nested-with"))
    with g:
        with g:
            assert g.sh("echo in") == "in\n"
        assert g.sh("echo still") == "still\n"
        machine = g.machine
    assert machine is not None and not machine.is_running()
