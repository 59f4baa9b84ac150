"""gpio-cdev in the bench: the device's burst generator toggling one GPIO line.

With the device's ``burst-line`` set, each burst step toggles the input of
:data:`LINE`; the agent requests that line for both edges through the GPIO v2
uapi, so every step is one edge, one device GPIO event (its own seq and raise
timestamp) and one ``gpio_v2_line_event``.  Line events carry no device seq:
the agent ACKs the event with request-wide ``seqno`` n as device seq
``first + n - 1`` (``ack_first_seq``, read just before arming:
``latency.arm_measured``).

That mapping is exact as long as every device event reaches gpiolib: the
driver passes each queued GPIO event on as one nested line interrupt (edges are
never merged), but its per-device queue towards gpiolib can overflow
(``gpio_lost`` of ``IRQLAB_IOC_GET_STATS``, not visible in ``seqno``, which
gpiolib assigns later).  A kernel line-event buffer overflow drops the oldest
events and leaves a ``seqno`` gap, which keeps the mapping right.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BUFFER",
    "LINE",
    "PATH",
    "arm_opts",
    "done",
    "driver_lost",
    "edge_problems",
    "prepare",
]

PATH = "gpio-cdev"
# A line no module parameter claims (the bench loads the driver without gpio_edges
# or key_line); the e2e suite uses other lines.
LINE = 0
# Kernel line-event buffer of the request (events): the largest the kernel allows
# (GPIO_V2_LINES_MAX * 16), so storms measure the path rather than a small buffer.
BUFFER = 1024


def prepare(inj: Any) -> None:
    """Before reading the first seq and arming: no burst running, :data:`LINE` low.

    Driving the line low while nobody detects it raises nothing; the burst's first
    edge is then a rising one, and the next raise of the device is the path's first
    event.  (Should a stale request still detect the line, its edge is raised here,
    before the first seq is read.)
    """
    inj.stop_burst()
    inj.drive_low(1 << LINE)


def arm_opts() -> dict[str, Any]:
    """The agent's gpio-cdev arm arguments (besides ``ack_dev``/``ack_first_seq``)."""
    return {"lines": [LINE], "edge": "both", "buffer": BUFFER}


def done(inj: Any) -> None:
    """Stop the burst and give the generator back to BURST events."""
    inj.stop_burst()
    inj.set_burst_line(None)


def driver_lost(guest: Any) -> int:
    """The driver's ``gpio_lost`` (device-wide, since it bound): events gpiolib never saw."""
    st = guest.agent.stats(dev=guest.dev).get("driver") or {}
    return int(st["gpio_lost"])


def edge_problems(evs: list[dict[str, Any]]) -> list[str]:
    """Events whose edge is not the one their seqno implies (rising first, alternating).

    A device event that never reached gpiolib would shift the seqno -> device seq
    mapping by one and flip the expected edge of every later event.
    """
    bad = [e["seqno"] for e in evs if e.get("edge") != ("rising" if e["seqno"] % 2 else "falling")]
    if not bad:
        return []
    return [f"{len(bad)} events with the wrong edge for their seqno (first: {bad[0]})"]
