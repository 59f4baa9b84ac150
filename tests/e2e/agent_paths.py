"""The guest agent's paths the end-to-end tests cover, by name.

The host never imports the agent's classes: the agent's hello lists its paths, and
``test_paths_notify.py::test_hello_lists_exactly_the_paths_the_tests_cover`` checks
these names against it, so a path added to (or dropped from) the agent fails there
until the tests follow.
"""

from __future__ import annotations

# Paths that read event records from /dev/irqlabN (storm mode summarizes them).
RECORD_PATHS = (
    "read",
    "nonblock",
    "poll",
    "select",
    "epoll-lt",
    "epoll-et",
    "sigio",
    "setsig",
    "eventfd",
)
# The input device (a gpio-keys key on our gpiochip, described in the aarch64
# guest's device tree): test_dt_key.py, run where the aarch64 build exists.
EVDEV_PATHS = ("evdev-read", "evdev-poll", "evdev-sigio")
# The counting file, the GPIO character device, UIO and evdev (tests of their own).
OTHER_PATHS = ("count", "gpio-cdev", "uio", *EVDEV_PATHS)
