"""A child spawned from a short-lived thread outlives the thread (irqlab.vm.proc).

Linux sends the parent-death signal when the *thread* that forked exits; guests
started from a thread pool (several at once) must not die with their thread."""

from __future__ import annotations

import subprocess
import threading

import pytest

from irqlab.vm import proc


def test_a_child_started_from_a_thread_lives_on_after_the_thread_ended() -> None:
    started: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(
        target=lambda: started.append(proc.spawn(["sh", "-c", "read x"], stdin=subprocess.PIPE))
    )
    t.start()
    t.join()
    (child,) = started
    try:
        # Without the spawner thread the kernel SIGKILLs it as the thread exits.
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
        assert child.stdin is not None
        child.stdin.write(b"done\n")
        child.stdin.close()
        assert child.wait(timeout=10) == 0
    finally:
        proc.stop(child)


def test_the_main_thread_still_spawns_directly() -> None:
    child = proc.spawn(["true"])
    try:
        assert child.wait(timeout=10) == 0
    finally:
        proc.stop(child)
