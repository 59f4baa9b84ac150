"""irqlab runs no Python code of its own in a child between fork and exec: each QEMU is
spawned with a preexec_fn (its parent-death signal), and CPython runs the
``os.register_at_fork(after_in_child=...)`` hooks in such a child before it.  irqlab's
hooks (which forgot the parent's socket directories and children, making a new lock)
ran there in a threaded process, where another thread may have held a lock at the fork.
The registries are now per process (by pid), with no hook: what a preexec_fn sees of
them in the child is the parent's, untouched."""

from __future__ import annotations

import os
import subprocess

from irqlab.vm import machine, proc

UNTOUCHED, TOUCHED = 0, 3  # the child's exit status: what it found


def test_a_child_between_fork_and_exec_finds_the_registries_untouched() -> None:
    sock_dir = machine.make_sock_dir("hooks")
    sleeper = proc.spawn(["sleep", "60"])
    try:
        dirs, live = set(machine._SOCK_DIRS), set(proc._live)

        def look() -> None:  # in the child, after the at-fork hooks ran
            same = set(machine._SOCK_DIRS) == dirs and set(proc._live) == live
            os._exit(UNTOUCHED if same else TOUCHED)

        # it exits in place of the exec: Popen sees no exec error, the status says
        child = subprocess.Popen(["true"], preexec_fn=look, close_fds=True)
        assert child.wait(30) == UNTOUCHED, "an at-fork hook changed them in the child"
        assert sock_dir in dirs and sleeper in live
    finally:
        proc.stop(sleeper)
        machine.remove_sock_dir(sock_dir)
