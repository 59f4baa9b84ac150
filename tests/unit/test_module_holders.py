"""Who holds the driver, from ``ls -l /proc/[0-9]*/fd`` as busybox prints it: the error
of an rmmod that failed names them (it said only "Resource temporarily unavailable")."""

from __future__ import annotations

from irqlab.vm.guest import HELD_NODES, holders_of

LS = """\
/proc/1/fd:
lrwx------    1 root     root            64 Dec  6 20:31 0 -> /dev/console
lrwx------    1 root     root            64 Dec  6 20:31 1 -> /dev/console

/proc/130/fd:
lr-x------    1 root     root            64 Dec  6 20:31 0 -> /dev/null
lrwx------    1 root     root            64 Dec  6 20:31 7 -> /dev/irqlab0
lrwx------    1 root     root            64 Dec  6 20:31 8 -> /dev/irqlab0
lrwx------    1 root     root            64 Dec  6 20:31 9 -> /dev/irqlab0-count
lrwx------    1 root     root            64 Dec  6 20:31 10 -> anon_inode:gpio-line
lrwx------    1 root     root            64 Dec  6 20:31 11 -> socket:[4711]

/proc/142/fd:
lr-x------    1 root     root            64 Dec  6 20:31 0 -> /dev/uio0

/proc/150/fd:
lr-x------    1 root     root            64 Dec  6 20:31 3 -> /tmp/irqlab0.txt
"""


def test_the_processes_with_a_driver_file_open_are_found_each_file_once() -> None:
    assert holders_of(LS, HELD_NODES) == {
        130: ["/dev/irqlab0", "/dev/irqlab0-count", "anon_inode:gpio-line"],
        142: ["/dev/uio0"],
    }


def test_nothing_held_is_an_empty_answer() -> None:
    assert holders_of("", HELD_NODES) == {}
    assert holders_of("/proc/self/fd:\n... 0 -> /dev/irqlab0\n", HELD_NODES) == {}
