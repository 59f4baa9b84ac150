"""Injector over a fake QMP runner: commands sent, client-side checks, error mapping, stats."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from irqlab.contract.regs import AT_START, NEVER, QOM, REGS
from irqlab.vm.qmp.errors import DeviceRejected, InvalidArgument, OutOfRange, QMPCommandError
from irqlab.vm.qmp.injector import DEVICE_ID, Injector, device_path, method_of
from irqlab.vm.qmp.stats import Counters, Histogram, StatsFormatError

COUNTERS = {
    QOM.COUNTER_RAISED: 5, QOM.COUNTER_DELIVERED: 4, QOM.COUNTER_ACKED: 3,
    QOM.COUNTER_COALESCED: 1, QOM.COUNTER_DROPPED: 0, QOM.COUNTER_FIFO_OVERFLOW: 0,
    QOM.COUNTER_EVQ_OVERFLOW: 0, QOM.COUNTER_ACK_INVALID: 2, QOM.COUNTER_EVQ_COUNT: 2,
    QOM.COUNTER_NEXT_SEQ: 6,
}  # fmt: skip
# The properties the injector sets and gets.
GPIO_SET, GPIO_CLEAR, GPIO_IN, GPIO_PULSE = (
    QOM.PROP_GPIO_SET, QOM.PROP_GPIO_CLEAR, QOM.PROP_GPIO_IN, QOM.PROP_GPIO_PULSE,
)  # fmt: skip
PUSH, PERIOD, LINE, COUNT = (
    QOM.PROP_FIFO_PUSH, QOM.PROP_BURST_PERIOD_NS, QOM.PROP_BURST_LINE, QOM.PROP_BURST_COUNT,
)  # fmt: skip


class FakeRunner:
    """Records commands; qom-get answers from ``props``; ``refuse`` maps property -> error."""

    def __init__(self, gpio_lines: int = 8) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []
        self.props: dict[str, object] = {QOM.PROP_GPIO_LINES: gpio_lines}
        self.refuse: dict[str, str] = {}

    def qmp(self, command: str, args: Mapping[str, object] | None = None, /) -> Any:
        a = dict(args or {})
        prop = str(a.get("property"))
        if prop in self.refuse:
            raise QMPCommandError(command, a, "GenericError", self.refuse[prop])
        if command == "qom-get":
            return self.props[prop]
        self.sent.append((command, a))
        return {}

    def sets(self) -> list[tuple[str, object]]:
        return [(str(a["property"]), a["value"]) for c, a in self.sent if c == "qom-set"]


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def inj(runner: FakeRunner) -> Injector:
    return Injector(runner, "irq0")


def test_path() -> None:
    assert device_path("irq0") == "/machine/peripheral/irq0"
    assert Injector(FakeRunner(), path="/machine/unattached/device[3]").path.endswith("[3]")


def test_gpio_commands(inj: Injector, runner: FakeRunner) -> None:
    inj.set_line(3, True)
    inj.set_line(3, 0)
    inj.set_lines(0b1010)
    inj.drive_high(0x81)
    inj.drive_low(0x80)
    inj.pulse(7)
    inj.pulse_mask(0x3)
    assert runner.sets() == [
        (GPIO_SET, 0x8), (GPIO_CLEAR, 0x8), (GPIO_IN, 0b1010), (GPIO_SET, 0x81),
        (GPIO_CLEAR, 0x80), (GPIO_PULSE, 0x80), (GPIO_PULSE, 0x3),
    ]  # fmt: skip
    assert all(a["path"] == "/machine/peripheral/irq0" for _, a in runner.sent)


def test_pulse_lines_checks_every_line_before_pulsing_any(
    inj: Injector, runner: FakeRunner
) -> None:
    with pytest.raises(OutOfRange, match=r"^line=8 out of range \[0, 7\]$"):
        inj.pulse_lines([1, 2, 8])
    assert runner.sets() == []
    inj.pulse_lines([1, 7, 1])
    assert runner.sets() == [(GPIO_PULSE, 0x2), (GPIO_PULSE, 0x80), (GPIO_PULSE, 0x2)]


def test_gpio_in_and_lines(inj: Injector, runner: FakeRunner) -> None:
    runner.props[GPIO_IN] = 0x5
    assert inj.gpio_in() == 5
    assert inj.gpio_lines == 8
    assert inj.line_mask == 0xFF


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i: i.set_line(8, True), r"line=8 out of range \[0, 7\]$"),
        (lambda i: i.set_line(-1, True), "out of range"),
        (lambda i: i.set_line(True, True), "line must be an int, not bool"),
        (lambda i: i.set_line(1, 2), "level must be"),
        (lambda i: i.pulse(1.0), "must be an int, not float"),
        (lambda i: i.set_lines(0x100), "mask 0x100 names lines beyond gpio-lines=8"),
        (lambda i: i.pulse_mask(1 << 32), r"mask=0x100000000 out of range \[0x0, 0xffffffff\]$"),
        (lambda i: i.drive_high("1"), "must be an int, not str"),
        (lambda i: i.push(1 << 32), "word=0x100000000 out of range"),
        (lambda i: i.push(-1), "out of range"),
        (lambda i: i.burst(1 << 32), r"count=4294967296 out of range \[0, 4294967295\]$"),
        (
            lambda i: i.burst(5, period_ns=0),
            r"^period_ns=0 ns out of range \[1000, 10000000000\] ns$",
        ),
        (
            lambda i: i.burst(5, period_ns=1 << 64),
            r"^period_ns=18446744073709551616 ns out of range \[1000, 10000000000\] ns$",
        ),
        (lambda i: i.set_burst_period(REGS.MIN_BURST_PERIOD_NS - 1), "out of range"),
        # above the spec's range: it reached the device, which refused it
        (lambda i: i.set_burst_period(REGS.MAX_BURST_PERIOD_NS + 1), "out of range"),
        (lambda i: i.burst(5, period_ns=10_000, line=8), r"line=8 out of range \[0, 7\]$"),
        (lambda i: i.burst(5, line=-1), "out of range"),
        (lambda i: i.burst(5, line=True), "line must be an int, not bool"),
        (lambda i: i.burst(0, line=8), "out of range"),
        (lambda i: i.set_burst_line(8), "out of range"),
        (lambda i: i.set_burst_line(REGS.BURST_LINE_NONE), "out of range"),
    ],
)
def test_client_side_validation_sends_nothing(
    inj: Injector, runner: FakeRunner, call: Any, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        call(inj)
    assert isinstance(info.value, ValueError)
    assert runner.sets() == []


def test_range_errors_keep_their_parts_for_the_callers_unit(inj: Injector) -> None:
    """A command line that took microseconds can say the error in microseconds."""
    with pytest.raises(OutOfRange) as info:
        inj.burst(10, period_ns=1)
    e = info.value
    assert (e.name, e.value, e.lo, e.hi, e.unit) == (
        "period_ns", 1, REGS.MIN_BURST_PERIOD_NS, REGS.MAX_BURST_PERIOD_NS, "ns"
    )  # fmt: skip
    assert e.in_unit("--period-us", "µs", 1000) == (
        "--period-us 0.001 µs out of range [1, 10000000] µs"
    )
    with pytest.raises(OutOfRange, match=r"^line=99 out of range \[0, 7\]$"):
        inj.pulse(99)


def test_fifo_and_burst(inj: Injector, runner: FakeRunner) -> None:
    inj.push(0xCAFEF00D)
    inj.burst(100, period_ns=50_000)
    inj.burst(3)
    inj.stop_burst()
    inj.reset_counters()
    none = REGS.BURST_LINE_NONE
    assert runner.sets() == [
        (PUSH, 0xCAFEF00D), (PERIOD, 50_000), (LINE, none),
        (COUNT, 100), (LINE, none), (COUNT, 3), (COUNT, 0),
        (QOM.PROP_RESET_COUNTERS, True),
    ]  # fmt: skip
    runner.props[COUNT] = 42
    runner.props[PERIOD] = 50_000
    assert inj.burst_remaining() == 42
    assert inj.burst_period() == 50_000


def test_burst_on_a_gpio_line(inj: Injector, runner: FakeRunner) -> None:
    inj.burst(500, period_ns=100_000, line=5)
    inj.burst(4, line=0)
    inj.stop_burst()
    inj.burst(0, line=7)  # a stop never touches burst-line (refused while one runs)
    inj.set_burst_line(3)
    inj.set_burst_line(None)
    none = REGS.BURST_LINE_NONE
    assert runner.sets() == [
        (PERIOD, 100_000), (LINE, 5), (COUNT, 500),
        (LINE, 0), (COUNT, 4), (COUNT, 0), (COUNT, 0),
        (LINE, 3), (LINE, none),
    ]  # fmt: skip
    runner.props[LINE] = 5
    assert inj.burst_line() == 5
    runner.props[LINE] = none
    assert inj.burst_line() is None
    runner.props[LINE] = "5"
    with pytest.raises(InvalidArgument, match="not an integer"):
        inj.burst_line()


def test_burst_line_refused_while_running_sends_no_count(inj: Injector, runner: FakeRunner) -> None:
    runner.refuse[LINE] = "irqlab: burst-line cannot change while a burst runs"
    with pytest.raises(DeviceRejected, match="while a burst runs"):
        inj.burst(10, line=2)
    assert runner.sets() == []  # the count that would have started a burst was not sent


def test_device_refusal_carries_qemu_text(inj: Injector, runner: FakeRunner) -> None:
    runner.refuse[GPIO_SET] = "irqlab: gpio-set mask 0x100 names lines beyond gpio-lines=8"
    with pytest.raises(DeviceRejected) as info:
        inj.set_line(0, 1)
    err = info.value
    assert err.desc == runner.refuse[GPIO_SET]
    assert "qom-set /machine/peripheral/irq0 gpio-set=1" in str(err)
    assert err.cause.error_class == "GenericError"


def test_counters(inj: Injector, runner: FakeRunner) -> None:
    runner.props[QOM.PROP_COUNTERS] = COUNTERS
    c = inj.counters()
    assert c == Counters(5, 4, 3, 1, 0, 0, 0, 2, 2, 6)
    assert c.minus(Counters(1, 1, 1, 1, 0, 0, 0, 0, 0, 1)).raised == 4


@pytest.mark.parametrize(
    "reply",
    [
        [1, 2],
        {k: v for k, v in COUNTERS.items() if k != QOM.COUNTER_ACKED},
        {**COUNTERS, QOM.COUNTER_RAISED: -1},
        {**COUNTERS, QOM.COUNTER_RAISED: "5"},
        {**COUNTERS, QOM.COUNTER_RAISED: True},
    ],
)
def test_counters_malformed(reply: object) -> None:
    with pytest.raises(StatsFormatError):
        Counters.from_qmp(reply)


def _hist(buckets: dict[int, int], **kw: int) -> dict[str, object]:
    b = [0] * REGS.HIST_BUCKETS
    for i, n in buckets.items():
        b[i] = n
    return {QOM.HISTOGRAM_COUNT: sum(b), QOM.HISTOGRAM_SUM_NS: kw.get("sum", 0),
            QOM.HISTOGRAM_MIN_NS: kw.get("min", 0), QOM.HISTOGRAM_MAX_NS: kw.get("max", 0),
            QOM.HISTOGRAM_BUCKETS: b}  # fmt: skip


def test_histogram(inj: Injector, runner: FakeRunner) -> None:
    # 90 latencies in [1024, 2048), 9 in [8192, 16384), 1 at 1_000_000 (bucket 19)
    runner.props[QOM.PROP_LATENCY_HISTOGRAM] = _hist(
        {10: 90, 13: 9, 19: 1}, sum=10**6, min=1100, max=10**6
    )
    h = inj.histogram()
    assert h.count == 100 and len(h.buckets) == REGS.HIST_BUCKETS
    assert h.mean_ns() == 10_000
    assert h.percentile_bucket(50) == 10
    assert h.percentile_bucket(90) == 10
    assert h.percentile_bucket(91) == 13
    assert h.percentile_bucket(100) == 19
    assert h.percentile_range(50) == (1100, 2047)  # tightened by min-ns
    assert h.percentile_range(100) == (1 << 19, 10**6)  # tightened by max-ns
    assert h.percentile_upper_ns(99) == (1 << 14) - 1


def test_histogram_buckets_and_empty() -> None:
    assert [Histogram.bucket_of(n) for n in (0, 1, 2, 3, 4, 1023, 1024)] == [0, 0, 1, 1, 2, 9, 10]
    assert Histogram.bucket_bounds(0) == (0, 2)
    assert Histogram.bucket_bounds(3) == (8, 16)
    h = Histogram.from_qmp(_hist({}), REGS.HIST_BUCKETS)
    assert h.mean_ns() is None and h.percentile_range(99) is None
    with pytest.raises(ValueError, match="percentile"):
        h.percentile_bucket(0)


def test_histogram_malformed() -> None:
    with pytest.raises(StatsFormatError, match="buckets"):
        Histogram.from_qmp(_hist({}), REGS.HIST_BUCKETS - 1)
    with pytest.raises(StatsFormatError, match="bad buckets"):
        Histogram.from_qmp({**_hist({}), QOM.HISTOGRAM_BUCKETS: [1, -1]})
    with pytest.raises(StatsFormatError, match="sum-ns"):
        Histogram.from_qmp({k: v for k, v in _hist({}).items() if k != QOM.HISTOGRAM_SUM_NS})


class PipeRunner(FakeRunner):
    """A FakeRunner that can pipeline: records each batch and its window."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.limits: list[dict[str, Any]] = []

    def qmp_many(
        self, commands: list[tuple[str, Mapping[str, object] | None]], *, window: int = 8, **kw: Any
    ) -> list[Any]:
        self.batches.append(window)
        self.limits.append(kw)
        return [self.qmp(c, a) for c, a in commands]


def test_push_many_pipelines_in_order() -> None:
    r = PipeRunner()
    Injector(r, "irq0").push_many([1, 2, 0xFFFF_FFFF], window=4)
    assert r.sets() == [(PUSH, 1), (PUSH, 2), (PUSH, 0xFFFF_FFFF)]
    assert r.batches == [4]


def test_push_many_passes_a_timeout_given_and_refuses_one_that_is_no_wait() -> None:
    """push_many(timeout=): the whole batch's limit; none given leaves the runner's own
    (which grows with the batch); a timeout that is no number of seconds > 0 is refused
    before anything is sent."""
    r = PipeRunner()
    inj = Injector(r, "irq0")
    inj.push_many([1, 2])
    inj.push_many([3], timeout=120)
    assert r.limits == [{}, {"timeout": 120}]
    for bad in (0, -1, float("nan"), "5"):
        with pytest.raises((ValueError, TypeError), match="timeout"):
            inj.push_many([4], timeout=bad)  # type: ignore[arg-type]
    assert r.sets() == [(PUSH, 1), (PUSH, 2), (PUSH, 3)]


def test_push_many_checks_every_word_before_sending() -> None:
    r = PipeRunner()
    with pytest.raises(InvalidArgument, match="word"):
        Injector(r, "irq0").push_many([1, 1 << 32])
    assert r.sent == [] and r.batches == []


def test_push_many_needs_a_pipelining_runner(inj: Injector, runner: FakeRunner) -> None:
    with pytest.raises(InvalidArgument, match="cannot pipeline"):
        inj.push_many([1])
    assert runner.sent == []


def test_push_many_maps_device_refusal() -> None:
    r = PipeRunner()
    r.refuse[PUSH] = "no"
    with pytest.raises(DeviceRejected, match="no"):
        Injector(r, "irq0").push_many([1])


def test_one_device_id_for_what_irqlab_starts(runner: FakeRunner) -> None:
    """The injector's default id is the one guests, the qtest fixtures and `irqlab inject`
    use, and the QMP examples of the README and the device's spec name its path."""
    from pathlib import Path

    from irqlab.cli.main import build_parser
    from irqlab.testing.plugin import QTEST_DEVICE
    from irqlab.vm.guest import GuestConfig

    assert DEVICE_ID == "irqlab0"
    assert Injector(runner).path == device_path(DEVICE_ID) == "/machine/peripheral/irqlab0"
    assert GuestConfig().device_id == DEVICE_ID
    assert QTEST_DEVICE == "irqlab,id=irqlab0"
    assert build_parser().parse_args(["inject", "pulse", "1"]).device_id == DEVICE_ID
    root = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "qemu-device/irqlab.rst"):
        text = (root / doc).read_text()
        paths = set(re.findall(r"/machine/peripheral/([A-Za-z0-9_<>-]+)", text))
        assert paths <= {DEVICE_ID, "<id>"}, (doc, paths)
        assert DEVICE_ID in paths, doc


# Arguments to call each method method_of names with (a value the device would take).
METHOD_ARGS: dict[str, tuple[int, ...]] = {
    "set_lines": (1,), "drive_high": (1,), "drive_low": (1,), "pulse": (0,), "push": (0,),
    "set_burst_period": (REGS.MIN_BURST_PERIOD_NS,), "burst": (1,), "set_burst_line": (0,),
}  # fmt: skip


class _GetRecorder(FakeRunner):
    """Records the properties read as well."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[str] = []
        self.props.update({QOM.PROP_COUNTERS: COUNTERS, QOM.PROP_LATENCY_HISTOGRAM: _hist({})})

    def qmp(self, command: str, args: Mapping[str, object] | None = None, /) -> Any:
        if command == "qom-get":
            self.got.append(str((args or {})["property"]))
        return super().qmp(command, args)


def test_method_of_names_the_method_that_sets_or_reads_each_property_once_it_runs() -> None:
    """The device_props check points a runtime control or a read-only property at the
    injector's method for it: each property the header does not mark start-time has one,
    which is the Injector's and sets (read-only: reads) that property, and a start-time
    property has none."""
    assert REGS.prop_when and set(REGS.prop_when) == set(QOM.with_prefix("PROP_").values())
    for prop, when in REGS.prop_when.items():
        said = method_of(prop)
        if when == AT_START:
            assert said is None, prop
            continue
        assert said is not None, f"no injector method named for {prop}"
        name, _, args = said.partition("(")
        assert args.endswith(")"), said
        runner = _GetRecorder()
        getattr(Injector(runner), name)(*METHOD_ARGS.get(name, ()))
        touched = runner.got if when == NEVER else [p for p, _ in runner.sets()]
        assert prop in touched, (prop, said, touched)
    assert method_of("nonesuch") is None
