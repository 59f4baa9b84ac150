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
