"""Two threads of a script reaching ``g.agent`` when its session must be replaced (a
request of it was interrupted) share one new session: both started one, the second
ending the first ("agent exited (end of output) (waiting for hello)"), and only one
thread's path stayed armed."""

from __future__ import annotations

import threading

from irqlab.vm.guest import Guest

PATHS = ("poll", "epoll-et")


def test_two_threads_arm_through_one_new_session(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    old = g.agent
    old.interrupted = "request 'read' was interrupted (KeyboardInterrupt)"  # as a Ctrl-C
    barrier = threading.Barrier(len(PATHS))
    errors: list[BaseException] = []

    def arm(path: str) -> None:
        barrier.wait(timeout=30)
        try:
            g.agent.arm(path)
        except BaseException as e:  # said by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=arm, args=(p,)) for p in PATHS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert g.agent is not old
    assert sorted(g.agent.stats()["paths"]) == sorted(PATHS)
