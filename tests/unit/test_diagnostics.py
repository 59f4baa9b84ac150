"""A failing test's guest diagnostics (irqlab.testing.diagnostics), with a stand-in guest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from irqlab.testing.diagnostics import GuestDiagnostics


def fake_guest(**kw: Any) -> Any:
    def counters() -> None:
        raise RuntimeError("no QMP here")

    machine = SimpleNamespace(is_running=lambda: True)
    return SimpleNamespace(
        fault=None,
        machine=machine,
        sh=lambda cmd, **_: "[    3.000000] a line of the test\n",
        injector=SimpleNamespace(counters=counters),
        **kw,
    )


def test_the_agents_messages_start_after_the_tests_own_reset(tmp_path: Path) -> None:
    rx = tmp_path / "agent.rx.jsonl"
    rx.write_text('{"type": "reply", "id": 1, "said": "the previous test"}\n')
    # the session guest's diagnostics start before the test's setup resets the agent
    d = GuestDiagnostics(fake_guest(), rx, rx.stat().st_size)
    with rx.open("a") as f:  # the reset's own reply, still the previous test's story
        f.write('{"type": "reply", "id": 2, "said": "the reset"}\n')
    d.mark(2_000_000_000)
    with rx.open("a") as f:
        f.write('{"type": "event", "said": "the test itself"}\n')
    text, files = d.collect(tmp_path / "test")
    agent = text.split("--- the agent's last messages", 1)[1]
    assert "the test itself" in agent, agent
    assert "the reset" not in agent and "the previous test" not in agent, agent
    assert [f.name for f in files] == ["dmesg.log"]


def test_a_guest_closed_at_the_tests_end_is_said_so(tmp_path: Path) -> None:
    g = fake_guest()
    g.machine = None
    text, files = GuestDiagnostics(g, None, 0).collect(tmp_path)
    assert text.startswith("the guest was stopped at the test's end"), text
    assert files == []


def test_a_tainted_guest_is_said_so_with_the_first_report(tmp_path: Path) -> None:
    g = fake_guest()
    log = "[    1.000000] WARNING: CPU: 0 PID: 9 at x.c:1 f+0x1/0x2\n[    3.000000] later\n"
    g.sh = lambda cmd, **_: log + "\n" + str((1 << 9) | (1 << 12))  # W and O
    d = GuestDiagnostics(g, None, 0)
    d.mark(2_000_000_000)  # the test started after the WARN: its slice has none of it
    text, _ = d.collect(tmp_path)
    assert "(since 2.000 s guest time: 1 lines" in text, text
    assert "--- the guest kernel is tainted: W (warning issued, bit 9)\n" in text, text
    assert "first report in its kernel log: [    1.000000] WARNING: CPU: 0" in text, text
    assert "out-of-tree" not in text  # expected: our module's
    g.sh = lambda cmd, **_: "[    3.000000] later\n\n" + str(1 << 12)
    assert "kernel is tainted" not in GuestDiagnostics(g, None, 0).collect(tmp_path)[0]


def test_a_slice_of_no_kernel_lines_is_an_empty_file(tmp_path: Path) -> None:
    """The failure's list of logs leaves out empty files: a dmesg.log of "\\n" was in it."""
    d = GuestDiagnostics(fake_guest(), None, 0)
    d.mark(9_000_000_000)  # after the guest's only line
    text, (log,) = d.collect(tmp_path)
    assert "0 lines" in text and log.read_bytes() == b""


OWN_GUEST_LOG = """\
[    0.000000] Linux version 6.1.0 (boot)
[    2.000000] irqlab-step-11-2.00
[    2.100000] irqlab: our driver, loaded at boot
[    3.000000] irqlab-step-extra-12-3.00
[    3.100000] mydrv 0000:00:04.0: mydrv v4 bound
[    5.500000] a line of the test
"""


def test_a_tests_own_guest_keeps_its_whole_log_and_reports_its_modules_load(
    tmp_path: Path,
) -> None:
    """A test's own guest: its dmesg.log and report had only the lines since the test
    began; its modules' load and probe, before the snapshot it restored, were nowhere
    (`mydrv 0000:00:04.0: mydrv v4 bound`).  The session guest's stay the test's."""
    guest = fake_guest(config=SimpleNamespace(extra_modules=["mydrv.ko"]))
    guest.sh = lambda cmd, **_: OWN_GUEST_LOG + "\n0\n"
    own = GuestDiagnostics(guest, None, 0, own=True)
    own.mark(5_000_000_000)
    text, (log,) = own.collect(tmp_path / "own")
    assert log.read_text() == "".join(
        f"{line}\n" for line in OWN_GUEST_LOG.splitlines() if "irqlab-step" not in line
    )
    load, _, since = text.partition("--- guest kernel log (since 5.000 s guest time")
    assert load == (
        f"--- guest kernel log: your modules' load (until the test began: 1 lines; {log})\n"
        "[    3.100000] mydrv 0000:00:04.0: mydrv v4 bound\n"
    )
    assert since.startswith(f": 1 lines; all of it since boot in {log})\n[    5.500000] a line")
    shared = GuestDiagnostics(guest, None, 0)
    shared.mark(5_000_000_000)
    text, (log,) = shared.collect(tmp_path / "shared")
    assert log.read_text() == "[    5.500000] a line of the test\n"
    assert text.startswith(f"--- guest kernel log (since 5.000 s guest time: 1 lines; {log})")


def test_a_start_estimated_by_the_agents_clock_is_put_onto_the_kernel_logs(
    tmp_path: Path,
) -> None:
    """A test that takes only its own guest (no agent reset marks its start): the
    start, estimated from the heartbeats by CLOCK_MONOTONIC, was compared with printk's
    stamps as it was.  In a guest whose printk clock ran 7.5 ms behind, the test's
    first kernel line (its rmmod's, 1.2 ms before the estimate by the stamps) was
    reported as the modules' load, and the test's own part said "(nothing)"."""
    log = OWN_GUEST_LOG.replace(
        "[    5.500000] a line of the test",
        "[    6.642803] hangexit: bye\n[    7.100000] irqlab-agent: kernel log clock calibration",
    )  # the agent's calibration line: written as it was asked, no line of the test's
    asked: list[str] = []

    def request(op: str, **_: Any) -> dict[str, Any]:
        asked.append(op)
        return {"ok": True, "monotonic_ns": 7_000_000_000, "kernel_log_ns": 6_992_500_000}

    guest = fake_guest(config=SimpleNamespace(extra_modules=["mydrv.ko"]))
    guest.sh = lambda cmd, **_: log + "\n0\n"
    guest._agent = SimpleNamespace(request=request)
    own = GuestDiagnostics(guest, None, 0, estimate=6.644, own=True)
    text, _ = own.collect(tmp_path)
    load, _, since = text.partition("--- guest kernel log (since 6.636 s guest time: 1 lines")
    assert "hangexit" not in load and "mydrv v4 bound" in load, text
    assert "[    6.642803] hangexit: bye" in since, text
    assert asked == ["kernel_clock"]
    # an agent that cannot say (an older one): the estimate as it is
    guest._agent = SimpleNamespace(request=lambda op, **_: {"ok": True, "monotonic_ns": 1})
    text, _ = GuestDiagnostics(guest, None, 0, estimate=6.644, own=True).collect(tmp_path)
    assert "--- guest kernel log (since 6.644 s guest time: 0 lines" in text, text


def test_a_modules_load_in_a_snapshot_without_its_mark_is_the_last_step_before_the_test() -> None:
    from irqlab.testing.diagnostics import module_load_lines

    old = OWN_GUEST_LOG.replace("irqlab-step-extra-", "irqlab-step-")  # an older snapshot's
    assert module_load_lines(old, 5.0) == []  # no guest of the user's modules: none
    assert module_load_lines(old, 5.0, last_step=True) == [
        "[    3.100000] mydrv 0000:00:04.0: mydrv v4 bound"
    ]
    assert module_load_lines(OWN_GUEST_LOG, None) == [
        "[    3.100000] mydrv 0000:00:04.0: mydrv v4 bound",
        "[    5.500000] a line of the test",
    ]


def test_a_taints_first_report_is_the_kernels_not_a_users_kmsg_line(tmp_path: Path) -> None:
    """A test's `echo '<4>WARNING: ...' > /dev/kmsg` (facility 1, user) before the
    kernel's own WARN was quoted as the taint's first report."""
    g = fake_guest()
    log = (
        "<12>[    1.000000] WARNING: CPU: 0 PID: 1 at a user's line\n"
        "<4>[    1.500000] WARNING: CPU: 0 PID: 9 at x.c:1 f+0x1/0x2\n"
    )
    g.sh = lambda cmd, **_: log + "\n" + str(1 << 9)
    text, (dmesg,) = GuestDiagnostics(g, None, 0).collect(tmp_path)
    assert "first report in its kernel log: [    1.500000] WARNING: CPU: 0 PID: 9" in text, text
    assert "[    1.000000] WARNING: CPU: 0 PID: 1 at a user's line\n" in dmesg.read_text()
    assert "<12>" not in text and "<4>" not in dmesg.read_text()
