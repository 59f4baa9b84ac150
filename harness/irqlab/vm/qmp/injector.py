"""Typed interrupt injection into the irqlab device over QMP (``qom-set``/``qom-get``).

>>> inj = Injector(machine)        # -device irqlab,id=irqlab0 (DEVICE_ID, as irqlab starts it)
>>> inj.pulse(3); inj.push(0xcafe); inj.burst(1000, period_ns=50_000)
>>> inj.burst(500, period_ns=100_000, line=5)    # 500 edges on GPIO line 5
>>> inj.counters().raised

Arguments are checked here first (:class:`InvalidArgument`, nothing sent);
what the device refuses comes back as :class:`DeviceRejected` with QEMU's
message.  Nothing is measured here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, Unpack

from irqlab.contract.regs import QOM, REGS
from irqlab.errors import hide_frame
from irqlab.vm.loadscale import check_timeout
from irqlab.vm.qmp.errors import DeviceRejected, InvalidArgument, OutOfRange, QMPCommandError
from irqlab.vm.qmp.stats import Counters, Histogram

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "DEVICE_ID",
    "DEVICE_TYPE",
    "U32_MAX",
    "U64_MAX",
    "Counters",
    "Histogram",
    "Injector",
    "QMPRunner",
    "device_path",
    "method_of",
]

DEVICE_TYPE = "irqlab"  # the QOM type: -device irqlab,...
# The id irqlab gives the device it starts (GuestConfig.device_id, `irqlab inject
# --device-id`, the plugin's qtest machines), hence the QOM path device_path(DEVICE_ID).
DEVICE_ID = "irqlab0"
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


class QMPRunner(Protocol):
    """Anything with ``qmp(command, args)`` (e.g. :class:`irqlab.vm.machine.Machine`)."""

    def qmp(self, command: str, args: Mapping[str, object] | None = None, /) -> Any: ...


def device_path(device_id: str) -> str:
    """QOM path of a device created with ``-device irqlab,id=<device_id>``."""
    return f"/machine/peripheral/{device_id}"


def method_of(prop: str) -> str | None:
    """The :class:`Injector` method that sets (or reads) the device's property *prop*
    once it runs, with its arguments (``push(word)`` for fifo-push), for a message that
    points there; None for a start-time property (the header's marks say which: a unit
    test holds this table to them)."""
    return {
        QOM.PROP_GPIO_IN: "set_lines(levels)",
        QOM.PROP_GPIO_SET: "drive_high(mask)",
        QOM.PROP_GPIO_CLEAR: "drive_low(mask)",
        QOM.PROP_GPIO_PULSE: "pulse(line)",
        QOM.PROP_FIFO_PUSH: "push(word)",
        QOM.PROP_BURST_PERIOD_NS: "set_burst_period(period_ns)",
        QOM.PROP_BURST_COUNT: "burst(count, period_ns)",
        QOM.PROP_BURST_LINE: "set_burst_line(line)",
        QOM.PROP_COUNTERS: "counters()",
        QOM.PROP_LATENCY_HISTOGRAM: "histogram()",
        QOM.PROP_RESET_COUNTERS: "reset_counters()",
    }.get(prop)


class _Style(TypedDict, total=False):
    unit: str  # of a duration
    hexadecimal: bool  # masks and data words


def _int(name: str, value: object, lo: int, hi: int | None, **style: Unpack[_Style]) -> int:
    """*value* checked to be an int in [*lo*, *hi*] (*hi* None: the u64 maximum, not
    named in the error); the error says it in decimal (lines, counts, durations, in
    their unit) or in hex (masks, data words): :class:`OutOfRange`."""
    __tracebackhide__ = hide_frame
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise InvalidArgument(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if not lo <= value <= (U64_MAX if hi is None else hi):
        raise OutOfRange(name, value, lo, hi, **style)
    return value


class Injector:
    """The runtime QMP control surface of one irqlab device."""

    def __init__(
        self, runner: QMPRunner, device_id: str = DEVICE_ID, *, path: str | None = None
    ) -> None:
        self._runner = runner
        self.path = path if path is not None else device_path(device_id)
        self._gpio_lines: int | None = None

    def __repr__(self) -> str:
        """``<Injector /machine/peripheral/irqlab0 of guest 'g' <Machine qemu pid ...>>``:
        the device and the QEMU it drives (a print said only ``<... object at 0x...>``)."""
        return f"<Injector {self.path} of {self._runner!r}>"

    # -- plumbing --------------------------------------------------------------

    def get(self, prop: str) -> Any:
        """``qom-get`` of one property (raises :class:`DeviceRejected`)."""
        __tracebackhide__ = hide_frame
        try:
            return self._runner.qmp("qom-get", {"path": self.path, "property": prop})
        except QMPCommandError as e:
            raise DeviceRejected(f"qom-get {self.path} {prop}", e.desc, e) from e

    def set(self, prop: str, value: object) -> None:
        """``qom-set`` of one property (raises :class:`DeviceRejected`)."""
        __tracebackhide__ = hide_frame
        try:
            self._runner.qmp("qom-set", {"path": self.path, "property": prop, "value": value})
        except QMPCommandError as e:
            raise DeviceRejected(f"qom-set {self.path} {prop}={value!r}", e.desc, e) from e

    def _get_uint(self, prop: str) -> int:
        __tracebackhide__ = hide_frame
        value = self.get(prop)
        if type(value) is not int:
            raise InvalidArgument(f"{prop}: device returned {value!r}, not an integer")
        return value

    @property
    def gpio_lines(self) -> int:
        """Number of GPIO lines of this device (read once from its ``gpio-lines`` property)."""
        __tracebackhide__ = hide_frame
        if self._gpio_lines is None:
            self._gpio_lines = self._get_uint(QOM.PROP_GPIO_LINES)
        return self._gpio_lines

    @property
    def line_mask(self) -> int:
        """A mask with a bit for each of the device's GPIO input lines."""
        __tracebackhide__ = hide_frame
        return (1 << self.gpio_lines) - 1

    def _line(self, line: object) -> int:
        __tracebackhide__ = hide_frame
        return _int("line", line, 0, self.gpio_lines - 1)

    def _mask(self, mask: object) -> int:
        __tracebackhide__ = hide_frame
        m = _int("mask", mask, 0, U32_MAX, hexadecimal=True)
        if m & ~self.line_mask:
            raise InvalidArgument(
                f"mask {m:#x} names lines beyond {QOM.PROP_GPIO_LINES}={self.gpio_lines} "
                f"(valid bits {self.line_mask:#x})"
            )
        return m

    # -- GPIO --------------------------------------------------------------------

    def gpio_in(self) -> int:
        """All input line levels (bit n = line n)."""
        __tracebackhide__ = hide_frame
        return self._get_uint(QOM.PROP_GPIO_IN)

    def set_lines(self, levels: int) -> None:
        """Drive every line at once to the bits of *levels* (edges per changed bit)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_GPIO_IN, self._mask(levels))

    def drive_high(self, mask: int) -> None:
        """Drive the lines of *mask* high (a rising edge on each that was low)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_GPIO_SET, self._mask(mask))

    def drive_low(self, mask: int) -> None:
        """Drive the lines of *mask* low (a falling edge on each that was high)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_GPIO_CLEAR, self._mask(mask))

    def set_line(self, line: int, level: bool | int) -> None:
        """Drive GPIO input *line* to *level* (0/1; an edge if it changes)."""
        __tracebackhide__ = hide_frame
        bit = 1 << self._line(line)
        if type(level) not in (bool, int) or level not in (0, 1):
            raise InvalidArgument(f"level must be 0/1 or a bool, not {level!r}")
        self.set(QOM.PROP_GPIO_SET if level else QOM.PROP_GPIO_CLEAR, bit)

    def pulse(self, line: int) -> None:
        """Toggle *line* and back (two edges)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_GPIO_PULSE, 1 << self._line(line))

    def pulse_lines(self, lines: Sequence[int]) -> None:
        """:meth:`pulse` each of *lines* in order (a line given twice is pulsed twice);
        every line is checked before the first pulse."""
        __tracebackhide__ = hide_frame
        for bit in [1 << self._line(line) for line in lines]:
            self.set(QOM.PROP_GPIO_PULSE, bit)

    def pulse_mask(self, mask: int) -> None:
        """Toggle every line in *mask* and back."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_GPIO_PULSE, self._mask(mask))

    # -- FIFO ----------------------------------------------------------------------

    def push(self, word: int) -> None:
        """Push one 32-bit word (one FIFO event; dropped and counted if the FIFO is full)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_FIFO_PUSH, _int("word", word, 0, U32_MAX, hexadecimal=True))

    def push_many(
        self, words: Sequence[int], *, window: int = 8, timeout: float | None = None
    ) -> None:
        """Push *words* in order with pipelined ``qom-set``s, up to *window* in flight.

        The same events as calling :meth:`push` per word, without waiting for
        each reply before sending the next (needs a runner with ``qmp_many``,
        e.g. :class:`irqlab.vm.machine.Machine`).  Every word is checked before
        anything is sent.

        *timeout*: seconds for the whole batch.  None (the default) allows the QMP
        session's timeout (30 s) plus 10 ms per word
        (:func:`irqlab.vm.qmp.client.pipelined_limit`; a word takes about 0.7 ms under
        TCG, so 100000 words about 70 s); past it the push stops with an error saying
        how many words were answered."""
        __tracebackhide__ = hide_frame
        if timeout is not None:
            check_timeout(timeout)
        checked = [_int("word", w, 0, U32_MAX, hexadecimal=True) for w in words]
        qmp_many = getattr(self._runner, "qmp_many", None)
        if qmp_many is None:
            raise InvalidArgument(f"{type(self._runner).__name__} cannot pipeline (no qmp_many)")
        cmds = [
            ("qom-set", {"path": self.path, "property": QOM.PROP_FIFO_PUSH, "value": w})
            for w in checked
        ]
        # a runner of one's own without timeout= is given none unless asked for one
        limit = {} if timeout is None else {"timeout": timeout}
        try:
            qmp_many(cmds, window=window, **limit)
        except QMPCommandError as e:
            raise DeviceRejected(
                f"qom-set {self.path} {QOM.PROP_FIFO_PUSH} (pipelined)", e.desc, e
            ) from e

    # -- burst generator -------------------------------------------------------------

    def burst_period(self) -> int:
        """The burst generator's period, ns (the next burst's, or the running one's)."""
        return self._get_uint(QOM.PROP_BURST_PERIOD_NS)

    def set_burst_period(self, period_ns: int) -> None:
        """Set the burst generator's period, ns (:class:`OutOfRange` outside the
        device's limits)."""
        self.set(
            QOM.PROP_BURST_PERIOD_NS,
            _int(
                "period_ns",
                period_ns,
                REGS.MIN_BURST_PERIOD_NS,
                REGS.MAX_BURST_PERIOD_NS,
                unit="ns",
            ),
        )

    def burst(self, count: int, period_ns: int | None = None, *, line: int | None = None) -> None:
        """Start a burst of *count* steps (0 stops), at *period_ns* if given, else the current.

        *line* None: each step raises a BURST event.  *line* n: each step toggles GPIO
        input line n (the device's ``burst-line``), so the burst is a train of
        alternating edges that the line's edge/level detection turns into GPIO events,
        as for a host-driven change; steps of an edge detection the guest did not
        enable raise nothing.  A stop (*count* 0) leaves ``burst-line`` alone.
        """
        __tracebackhide__ = hide_frame
        n = _int("count", count, 0, U32_MAX)
        target = REGS.BURST_LINE_NONE if line is None else self._line(line)
        if period_ns is not None:
            self.set_burst_period(period_ns)
        if n:
            self.set(QOM.PROP_BURST_LINE, target)
        self.set(QOM.PROP_BURST_COUNT, n)

    def burst_line(self) -> int | None:
        """The GPIO line bursts toggle, None if they raise BURST events."""
        value = self.get(QOM.PROP_BURST_LINE)
        if type(value) is not int:
            raise InvalidArgument(
                f"{QOM.PROP_BURST_LINE}: device returned {value!r}, not an integer"
            )
        return None if value == REGS.BURST_LINE_NONE else value

    def set_burst_line(self, line: int | None) -> None:
        """Set the line of the next burst (None: BURST events); refused while one runs."""
        self.set(QOM.PROP_BURST_LINE, REGS.BURST_LINE_NONE if line is None else self._line(line))

    def burst_remaining(self) -> int:
        """The steps the running burst has still to make (0: none runs)."""
        return self._get_uint(QOM.PROP_BURST_COUNT)

    def stop_burst(self) -> None:
        """Stop the burst generator (the steps not made yet are dropped)."""
        self.set(QOM.PROP_BURST_COUNT, 0)

    # -- statistics --------------------------------------------------------------------

    def counters(self) -> Counters:
        """The device's event counters (raised, delivered, acked, dropped, ...)."""
        __tracebackhide__ = hide_frame
        return Counters.from_qmp(self.get(QOM.PROP_COUNTERS))

    def histogram(self) -> Histogram:
        """The device's raise -> ACK latency histogram (log2 buckets, device clock)."""
        __tracebackhide__ = hide_frame
        return Histogram.from_qmp(self.get(QOM.PROP_LATENCY_HISTOGRAM), REGS.HIST_BUCKETS)

    def reset_counters(self) -> None:
        """Zero the counters and the histogram (not the event queue)."""
        __tracebackhide__ = hide_frame
        self.set(QOM.PROP_RESET_COUNTERS, True)
