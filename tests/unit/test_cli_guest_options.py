"""The options of irqlab shell/run/inject, without a guest."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_irqlab_kmod import _fake_ko  # same directory (rootdir-relative import)

from irqlab.cli.guestcmd import UsageError, parse_assignments, parse_puts
from irqlab.cli.main import build_parser, main
from irqlab.contract.regs import QOM, REGS
from irqlab.errors import IrqlabError


def test_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="], "--o") == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError, match=r"--o 'novalue': expected KEY=VALUE"):
        parse_assignments(["novalue"], "--o")


def test_a_key_given_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A repeated --device-prop NAME=... silently kept the last."""
    with pytest.raises(UsageError, match=r"--o 'a=2': a is given twice \(also --o 'a=1'\)"):
        parse_assignments(["a=1", "b=1", "a=2"], "--o")
    with pytest.raises(UsageError, match=r"wakeup-mode is given twice"):  # the kernel's match
        parse_assignments(["wakeup_mode=x", "wakeup-mode=y"], "--module-param")
    assert main(["run", "--device-prop", "x=1", "--device-prop", "x=2", "--", "true"]) == 2
    assert "irqlab: --device-prop 'x=2': x is given twice" in capsys.readouterr().err


def test_a_guest_path_given_twice_is_a_usage_error(tmp_path: Path) -> None:
    """Two --put to one guest path: the second silently won."""
    a, b = tmp_path / "a", tmp_path / "sub" / "a"
    b.parent.mkdir()
    a.write_text("a")
    b.write_text("b")
    with pytest.raises(UsageError, match=r"the guest path /root/a is given twice"):
        parse_puts([str(a), str(b)])
    with pytest.raises(UsageError, match=r"the guest path /etc//x is given twice"):
        parse_puts([f"{a}:/etc/x", f"{b}:/etc//x"])
    assert parse_puts([str(a), f"{b}:/root/b"]) == {"/root/a": a, "/root/b": b}


def test_puts(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    assert parse_puts([str(f), f"{f}:/etc/x"]) == {"/root/f.bin": f, "/etc/x": f}
    with pytest.raises(UsageError, match="missing: no such file"):
        parse_puts([str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="must be absolute"):
        parse_puts([f"{f}:rel/x"])


@pytest.mark.parametrize("where", ["/proc/y", "/sys/kernel/y", "/tmp/../proc/y", "//proc/y"])
def test_a_file_put_where_none_can_be_made_is_refused_before_any_boot(
    tmp_path: Path, where: str
) -> None:
    """``--put x:/proc/y`` cold-booted a guest (the path is part of the snapshot's key)
    to fail on the copy."""
    from irqlab.cli.guestcmd import guest_config
    from irqlab.vm.guest import GuestConfig, GuestConfigError

    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    with pytest.raises(GuestConfigError, match=f"extra_files: {re.escape(where)}: no file can"):
        GuestConfig(extra_files={where: f})
    args = build_parser().parse_args(["run", "--put", f"{f}:{where}", "--", "true"])
    with pytest.raises(UsageError, match="no file can be made under /"):
        guest_config(args, "t")
    with pytest.raises(GuestConfigError, match="'rel/x' is not absolute"):
        GuestConfig(extra_files={"rel/x": f})
    assert GuestConfig(extra_files={"/process/y": f, "/system/y": f}).extra_files


def test_inject_parses_every_action() -> None:
    p = build_parser()
    a = p.parse_args(["inject", "--qmp", "s", "burst", "1000", "--period-us", "100"])
    assert (a.action, a.count, a.period_us) == ("burst", 1000, 100.0)
    assert p.parse_args(["inject", "push", "0x42", "7"]).words == [0x42, 7]
    assert p.parse_args(["inject", "pulse", "3"]).lines == [3]


@pytest.mark.parametrize(
    "argv",
    [
        ["--qmp", "S", "--device-id", "d", "--counters", "push", "1"],
        ["--qmp", "S", "push", "1", "--counters", "--device-id", "d"],
        ["push", "1", "--qmp", "S", "--device-id", "d", "--counters"],
        ["--device-id", "x", "push", "--qmp", "S", "1", "--counters", "--device-id", "d"],
    ],
)
def test_inject_options_go_before_or_after_the_action(argv: list[str]) -> None:
    a = build_parser().parse_args(["inject", *argv])
    assert (a.qmp, a.device_id, a.counters, a.action, a.words) == ("S", "d", True, "push", [1])


def test_inject_options_default_wherever_they_are_not_given() -> None:
    for argv in (["counters"], ["burst", "5", "--line", "2"]):
        a = build_parser().parse_args(["inject", *argv])
        assert (a.qmp, a.device_id, a.counters) == (None, "irqlab0", False)


def test_run_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Status 2, as argparse's usage errors (an unknown option): it was 1."""
    assert main(["run"]) == 2
    assert "no command" in capsys.readouterr().err
    assert main(["run", "--module", "mydrv.ko"]) == 2
    assert "irqlab: run: no command" in capsys.readouterr().err
    for blank in (["--", ""], ["--", " ", ""]):  # booted a guest for nothing, exit 0
        assert main(["run", "-n", *blank]) == 2
        assert "irqlab: run: no command" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "shell"])
def test_device_prop_name_with_a_comma_is_refused_before_a_guest_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    cmd = ["--", "true"] if command == "run" else []
    assert main([command, "--device-prop", "irq-mode,id=evil=msi", *cmd]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "irqlab: --device-prop 'irq-mode,id': a property name cannot contain ',' or '=' "
        "(QEMU's -device option syntax has no escape for them in a name)"
    )


@pytest.mark.parametrize("name", ["id", "bus", "driver"])
def test_device_prop_the_harness_sets_itself_is_refused_before_a_guest_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """``id=mine`` gave QEMU a second id (refused, or the harness looked for
    ``irqlab0`` and found nothing); the message says what to use instead."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    assert main(["run", "--device-prop", f"{name}=mine", "--", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"irqlab: --device-prop {name!r}: the device's "), err
    assert "\n" not in err


@pytest.mark.parametrize("command", ["run", "shell"])
def test_device_prop_of_the_running_device_is_refused_before_a_guest_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """``--device-prop fifo-push=1`` is refused as GuestConfig(device_props=) refuses
    it, before a guest starts (QEMU refused it only once started)."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    cmd = ["--", "true"] if command == "run" else []
    assert main([command, "--device-prop", f"{QOM.PROP_FIFO_PUSH}=1", *cmd]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"irqlab: --device-prop {QOM.PROP_FIFO_PUSH!r}: acts on a running device (a runtime "
        "control); set it after the start with the injector"
    ), err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("assignment", "said"),
    [
        (f"{QOM.PROP_IRQ_MODE}=MSIX", f"{QOM.PROP_IRQ_MODE!r}: 'MSIX' is not one of its values: "
         "intx, msi, msix (the header's IRQLAB_IRQ_MODE_*, irqlab-regs.h)"),
        (f"{QOM.PROP_BROKEN_INTX_DISABLE}=maybe", f"{QOM.PROP_BROKEN_INTX_DISABLE!r}: 'maybe' is "
         "not a bool: it takes True or False, or QEMU's words for one: on, yes, true, y; "
         "off, no, false, n"),
    ],
)  # fmt: skip
def test_device_prop_value_the_device_refuses_is_refused_before_a_guest_starts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, assignment: str, said: str
) -> None:
    """QEMU refused them after "booting the guest cold", exit 1."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    assert main(["run", "--device-prop", assignment, "--", "true"]) == 2
    assert capsys.readouterr().err.strip() == f"irqlab: --device-prop {said}"


def test_device_prop_value_with_a_comma_is_one_value(tmp_path: Path) -> None:
    from irqlab.cli.guestcmd import guest_config
    from irqlab.vm.guest import device_arg

    # a string property (every PCI device's ROM file): its value is the device's to judge
    args = build_parser().parse_args(["run", "--device-prop", "romfile=x,id=evil", "--", "x"])
    config = guest_config(args, "t")
    assert config.device_props == {"romfile": "x,id=evil"}
    assert device_arg(config.device_id, config.device_props).endswith(",romfile=x,,id=evil")


def test_bad_module_param_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--module-param", "oops", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "irqlab: --module-param 'oops': expected KEY=VALUE"


class _Guest:
    """What cmd_shell needs of a guest that ran and was left (its QMP socket gone);
    ``fails`` makes its start fail."""

    fault = None
    restored = True
    phases: dict[str, float] = {}  # noqa: RUF012 (read only)
    fails = False
    closed = 0

    def __init__(self, config: object) -> None:
        self.config = config

    def prepare(self) -> _Guest:
        return self

    def snapshot_key(self) -> str:
        return "no-such-snapshot"

    def base_snapshot_key(self) -> str | None:
        return None

    def start(self) -> _Guest:
        if self.fails:
            raise IrqlabError("no guest today")
        return self

    def close(self) -> None:
        _Guest.closed += 1

    def console_mark(self) -> int:
        return 0

    def fault_after(self, rc: int, signal: object = None, *, console_mark: int | None) -> None:
        assert console_mark == 0  # a crash of its own waits for an oops line briefly only
        return None


@pytest.mark.parametrize("starts", [True, False], ids=["normal-exit", "start-fails"])
def test_shell_leaves_no_socket_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, starts: bool
) -> None:
    from irqlab.cli import guestcmd

    monkeypatch.setattr("irqlab.vm.machine.sock_parent", lambda: tmp_path)
    monkeypatch.setattr("irqlab.vm.guest.Guest", _Guest)
    monkeypatch.setattr(_Guest, "fails", not starts)
    monkeypatch.setattr(_Guest, "closed", 0)
    monkeypatch.setattr(guestcmd, "interactive_shell", lambda g, last=None: (0, None))
    assert main(["shell"]) == (0 if starts else 1)
    assert list(tmp_path.iterdir()) == []
    assert _Guest.closed == 1  # the guest is stopped however the shell ends


def test_run_quoting_is_as_its_help_says() -> None:
    from irqlab.cli.guestcmd import remote_command
    from irqlab.cli.main import command_parser

    assert remote_command(["ls /dev/irqlab*; dmesg"]) == "ls /dev/irqlab*; dmesg"
    assert remote_command(["ls", "/dev/irqlab*"]) == "ls '/dev/irqlab*'"
    assert remote_command(["sh", "-c", "echo $0"]) == "sh -c 'echo $0'"
    text = command_parser("run")[0].format_help()
    assert "irqlab run -- 'ls /dev/irqlab*; dmesg | tail -n 3'" in text
    assert "irqlab run -- ls '/dev/irqlab*'" in text
    assert "stdin is forwarded" in text


def test_shell_hint_one_command_a_line() -> None:
    from irqlab.cli.guestcmd import SHELL_EXAMPLES, shell_hint

    sock = Path("/tmp/irqlab-1-shellx/qmp.sock")
    lines = shell_hint(sock).splitlines()
    assert all(ln.startswith("irqlab: ") for ln in lines)
    assert f"irqlab:   export IRQLAB_QMP={sock}" in lines
    injects = [ln for ln in lines if ln.startswith("irqlab:   irqlab inject ")]
    assert len(injects) == len(SHELL_EXAMPLES)
    for line, (args, _, needs) in zip(injects, SHELL_EXAMPLES, strict=True):
        command, _, note = line.removeprefix("irqlab:   ").partition("  # ")
        assert command.strip() == f"irqlab inject {args}" and "|" not in command
        assert (f"--module-param {needs}" in note) == bool(needs)
    # the README's command-line section shows the same examples
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for args, _, needs in SHELL_EXAMPLES:
        assert f"irqlab inject --qmp SOCKET {args}" in readme
        assert not needs or f"--module-param {needs}" in readme


@pytest.mark.parametrize("no_irqlab", [False, True], ids=["irqlab", "no-irqlab"])
def test_shell_hint_without_our_driver_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_irqlab: bool,
) -> None:
    """With --no-irqlab nothing of ours handles the device's interrupts: the banner said
    to watch /proc/interrupts for them and to give our driver a --module-param."""
    from irqlab.cli import guestcmd

    monkeypatch.setattr("irqlab.vm.machine.sock_parent", lambda: tmp_path)
    monkeypatch.setattr("irqlab.vm.guest.Guest", _Guest)
    monkeypatch.setattr(guestcmd, "interactive_shell", lambda g, last=None: (0, None))
    assert main(["shell", *(["--no-irqlab"] if no_irqlab else [])]) == 0
    err = capsys.readouterr().err
    assert "irqlab:   export IRQLAB_QMP=" in err  # the device is still driven over QMP
    injects = [ln for ln in err.splitlines() if ln.startswith("irqlab:   irqlab inject ")]
    assert len(injects) == len(guestcmd.SHELL_EXAMPLES)
    assert ("/proc/interrupts" in err) == (not no_irqlab)
    assert ("--module-param" in err) == (not no_irqlab)
    assert ("the irqlab driver is not loaded" in err) == no_irqlab


@pytest.mark.parametrize("command", ["run", "shell"])
@pytest.mark.parametrize("smp", ["0", "-1"])
def test_smp_below_one_is_refused(
    capsys: pytest.CaptureFixture[str], command: str, smp: str
) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--smp", smp, "--", "true"])
    assert e.value.code == 2
    assert f"argument --smp: '{smp}': a guest needs at least 1 vCPU" in capsys.readouterr().err
    assert build_parser().parse_args([command, "--smp", "2"]).smp == 2


@pytest.mark.parametrize("smp", [0, -2, 1.5, True, "2"])
def test_guest_config_refuses_a_vcpu_count_below_one(smp: object) -> None:
    from irqlab.vm.guest import GuestConfig, GuestConfigError

    with pytest.raises(GuestConfigError, match=r"GuestConfig\(smp=.*\): the number of vCPUs"):
        GuestConfig(smp=smp)  # type: ignore[arg-type]
    assert GuestConfig(smp=4).smp == 4


def test_module_specs_as_insmod_takes_them(tmp_path: Path) -> None:
    from irqlab.cli.guestcmd import guest_config
    from irqlab.vm.guest import parse_module_spec

    assert parse_module_spec("mydrv.ko") == ("mydrv.ko", {})
    assert parse_module_spec("'my drv.ko' tag=x mode='a b'") == (
        "my drv.ko",
        {"tag": "x", "mode": "a b"},
    )
    for bad, said in (
        ("", "empty"),
        ("a.ko =x", "'=x' is not PARAM=VALUE"),
        ("'a", "quot"),
        # the kernel took the last silently; - and _ are one character to it
        ("a.ko line=3 line=4", "parameter line given twice"),
        ("a.ko my-line=3 my_line=4", "parameter my_line given twice"),
    ):
        with pytest.raises(ValueError, match=said):
            parse_module_spec(bad)
    ko = _fake_ko(tmp_path / "my-drv.ko", "my_drv")
    args = build_parser().parse_args(
        ["run", "--module", f"{ko} tag=x", "--module", str(ko), "--", "true"]
    )
    config = guest_config(args, "t")
    assert config.name == "t"  # not the module's path (it named the log directory)
    assert config.extra_modules == [ko, ko]
    assert config.extra_module_params == {"my_drv": {"tag": "x"}}  # by module name
    spaced = tmp_path / "my dir" / "x.ko"  # an existing file as it stands: no parameters
    spaced.parent.mkdir()
    _fake_ko(spaced, "x")
    assert parse_module_spec(str(spaced)) == (str(spaced), {})
    args = build_parser().parse_args(
        ["run", "--module", str(spaced), "--module", f"'{spaced}' tag=y", "--", "true"]
    )
    config = guest_config(args, "t")  # the path as it stands wins; quoted, it takes params
    assert config.extra_modules == [spaced, spaced]
    assert config.extra_module_params == {"x": {"tag": "y"}}
    args = build_parser().parse_args(["run", "--module", f"{ko} =x", "--", "true"])
    with pytest.raises(UsageError, match=r"--module .*'=x' is not PARAM=VALUE"):
        guest_config(args, "t")
    # a bare name: a bool parameter, set (as insmod takes it)
    args = build_parser().parse_args(["run", "--module", f"{ko} verbose", "--", "true"])
    assert guest_config(args, "t").extra_module_params == {"my_drv": {"verbose": None}}


@pytest.mark.parametrize("option", ["--module", "--put"])
@pytest.mark.parametrize("what", ["missing", "directory"])
def test_a_module_or_file_that_is_not_one_says_what_it_is(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    what: str,
) -> None:
    """A directory was "no such file"; the build hint lacked `M=$PWD modules`."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    path = tmp_path / "mydrv.ko"
    if what == "directory":
        path.mkdir()
    assert main(["run", option, str(path), "--", "true"]) == 2
    said = {
        (
            "--module",
            "missing",
        ): "no such file (build it with make -C $(irqlab kdir) M=$PWD modules)",
        ("--module", "directory"): "is a directory, not a .ko file",
        ("--put", "missing"): "no such file",
        ("--put", "directory"): "is a directory, not a file",
    }[option, what]
    assert capsys.readouterr().err == f"irqlab: {option} {path}: {said}\n"


class _Qmp:
    """What ``irqlab inject`` connects to, in place of QEMU's QMP socket: records the
    commands sent (one by one or pipelined); ``qom-get`` of ``gpio-lines`` says 8."""

    sent: list[tuple[str, dict[str, object]]] = []  # noqa: RUF012 (reset per test)
    connections = 0

    def __init__(self, path: Path, timeout: float = 10.0, *, given: str = "--qmp") -> None:
        _Qmp.connections += 1

    def qmp(self, command: str, args: dict[str, object] | None = None, /) -> object:
        if command == "qom-get":
            assert args is not None and args["property"] == QOM.PROP_GPIO_LINES
            return 8
        _Qmp.sent.append((command, dict(args or {})))
        return {}

    def qmp_many(
        self, commands: list[tuple[str, dict[str, object] | None]], *, window: int = 8
    ) -> list[object]:
        return [self.qmp(c, a) for c, a in commands]

    def close(self) -> None:
        pass


@pytest.fixture
def qmp(monkeypatch: pytest.MonkeyPatch) -> type[_Qmp]:
    from irqlab.cli import guestcmd

    monkeypatch.setattr(guestcmd, "QmpSocket", _Qmp)
    monkeypatch.setattr(_Qmp, "sent", [])
    monkeypatch.setattr(_Qmp, "connections", 0)
    return _Qmp


def _pushed(q: type[_Qmp]) -> list[object]:
    return [a["value"] for c, a in q.sent if c == "qom-set" and a["property"] == QOM.PROP_FIFO_PUSH]


def test_inject_push_checks_every_word_before_pushing_any(
    qmp: type[_Qmp], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inject", "--qmp", "S", "push", "1", "2", "0x1ffffffff", "4"]) == 1
    assert qmp.sent == [], "nothing is pushed when a word is out of range"
    assert "word=0x1ffffffff out of range" in capsys.readouterr().err
    assert main(["inject", "--qmp", "S", "push", "1", "2", "0xffffffff", "4"]) == 0
    assert _pushed(qmp) == [1, 2, 0xFFFF_FFFF, 4]  # in order, each once


def test_inject_pulse_checks_every_line_before_pulsing_any(
    qmp: type[_Qmp], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inject", "--qmp", "S", "pulse", "1", "2", "8"]) == 1  # the device has 8
    assert qmp.sent == [], "no line is pulsed when one is out of range"
    assert "line=8 out of range [0, 7]" in capsys.readouterr().err
    assert main(["inject", "--qmp", "S", "pulse", "1", "7", "1"]) == 0
    pulsed = [a["value"] for c, a in qmp.sent if a["property"] == QOM.PROP_GPIO_PULSE]
    assert pulsed == [1 << 1, 1 << 7, 1 << 1]  # one pulse a line, in order


@pytest.mark.parametrize("period", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_inject_burst_period_not_a_finite_number_is_a_usage_error(
    qmp: type[_Qmp], capsys: pytest.CaptureFixture[str], period: str
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["inject", "--qmp", "S", "burst", "10", f"--period-us={period}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: irqlab inject burst ") and "Traceback" not in err
    assert f"error: argument --period-us: {period!r}: not a finite number" in err
    assert qmp.connections == 0, "QEMU is not even asked"


@pytest.mark.parametrize(("us", "ns"), [("2.5", 2500), ("1.001", 1001), ("abc", None)])
def test_inject_burst_period_in_microseconds(qmp: type[_Qmp], us: str, ns: int | None) -> None:
    """To the nearest nanosecond: 1.001 µs was 1000 ns (1.001 * 1000 is 1000.999...)."""
    if ns is None:  # not a number: a usage error
        with pytest.raises(SystemExit):
            build_parser().parse_args(["inject", "burst", "10", "--period-us", us])
        return
    assert main(["inject", "--qmp", "S", "burst", "10", "--period-us", us]) == 0
    sets = [(a["property"], a["value"]) for c, a in qmp.sent if c == "qom-set"]
    assert (QOM.PROP_BURST_PERIOD_NS, ns) in sets and (QOM.PROP_BURST_COUNT, 10) in sets
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["inject", "burst", "10", "--period-us", "abc"])
    assert e.value.code == 2


def test_inject_to_what_is_no_socket_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory or a file given as --qmp gave "Connection refused"."""
    for path in (tmp_path, tmp_path / "file"):
        if path != tmp_path:
            path.write_text("")
        assert main(["inject", "--qmp", str(path), "push", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"irqlab: --qmp {path}: not a socket (`irqlab shell` prints its QMP socket)"


def test_inject_names_where_a_gone_socket_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A $IRQLAB_QMP of a shell that has exited was blamed on --qmp, never given."""
    gone = tmp_path / "qmp.sock"
    monkeypatch.setenv("IRQLAB_QMP", str(gone))
    assert main(["inject", "push", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"irqlab: $IRQLAB_QMP={gone}: no such socket (is `irqlab shell` running?)"


def test_module_param_without_our_driver_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was accepted, and cost a cold boot for a driver that is not loaded."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    assert main(["run", "--no-irqlab", "--module-param", "gpio_edges=8", "--", "true"]) == 2
    assert "--no-irqlab does not load it" in capsys.readouterr().err


def test_usage_errors_name_the_program_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """They said "irqlab: irqlab run: ..."."""
    assert main(["run"]) == 2
    assert capsys.readouterr().err.startswith("irqlab: run: no command")
    monkeypatch.delenv("IRQLAB_QMP", raising=False)
    assert main(["inject", "push", "1"]) == 2
    assert capsys.readouterr().err.startswith("irqlab: inject: no QMP socket")


@pytest.mark.parametrize(
    ("argv", "usage", "said"),
    [
        (
            ["run", "--modules", "x.ko", "--", "true"],
            "usage: irqlab run [options] -- CMD",
            "irqlab run: error: unrecognized arguments: --modules (did you mean --module?)",
        ),
        (
            ["shell", "--no-irqlb"],
            "usage: irqlab shell ",
            "irqlab shell: error: unrecognized arguments: --no-irqlb (did you mean --no-irqlab?)",
        ),
        (
            ["inject", "push", "1", "--bogus"],
            "usage: irqlab inject push ",
            "irqlab inject push: error: unrecognized arguments: --bogus\n",
        ),
        (
            ["inject", "--cunters", "push", "1"],
            "usage: irqlab inject ",
            "irqlab inject: error: unrecognized arguments: --cunters (did you mean --counters?)",
        ),
        (
            ["regs", "A", "B"],
            "usage: irqlab regs ",
            "irqlab regs: error: unrecognized arguments: B",
        ),
        (
            ["--bogus", "regs"],
            "usage: irqlab [-h]",
            "irqlab: error: unrecognized arguments: --bogus",
        ),
    ],
)
def test_an_unknown_option_is_said_by_its_subcommand(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str, said: str
) -> None:
    """It was the top level's usage (`irqlab [-h] [--version] COMMAND ...`), which names
    none of the subcommand's options."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and said in err, err


def test_run_takes_every_argument_after_the_dashes_as_the_command() -> None:
    a = build_parser().parse_args(["run", "-n", "--", "sh", "-c", "echo $0", "--modules", "-n"])
    assert a.no_stdin and a.cmd[-5:] == ["sh", "-c", "echo $0", "--modules", "-n"]


def test_regs_with_a_prefix_nothing_has_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regs", "NOPE"]) == 1
    assert capsys.readouterr().err.strip() == "irqlab: regs: no name starts with 'NOPE'"
    assert main(["regs", "REG_"]) == 0
    short = capsys.readouterr().out
    assert main(["regs", "IRQLAB_REG_"]) == 0  # the whole name's start works too
    assert capsys.readouterr().out == short
    for prefix in ("reg_", "irqlab_Reg_"):  # in any case ("no name starts with 'reg_'")
        assert main(["regs", prefix]) == 0
        assert capsys.readouterr().out == short


MIN_US = f"{REGS.MIN_BURST_PERIOD_NS / 1000:.15g}"  # the device's burst periods
MAX_US = f"{REGS.MAX_BURST_PERIOD_NS / 1000:.15g}"


def test_inject_burst_period_below_the_minimum_is_said_in_microseconds(
    qmp: type[_Qmp], capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "period_ns=0 ns is below the minimum, 1000 ns" of an option in µs.  The
    device's range, as push's and pulse's (the README's status 1): no usage error."""
    assert main(["inject", "--qmp", "S", "burst", "10", "--period-us", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"irqlab: --period-us 0 µs out of range [{MIN_US}, {MAX_US}] µs", err
    # as given, not as rounded to whole ns (it said "0 µs" of 0.0004)
    assert main(["inject", "--qmp", "S", "burst", "10", "--period-us", "0.0004"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"irqlab: --period-us 0.0004 µs out of range [{MIN_US}, {MAX_US}] µs", err
    # above the spec's range (10 s): it reached the device, which refused it
    assert main(["inject", "--qmp", "S", "burst", "10", "--period-us", "2e7"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"irqlab: --period-us 2e+07 µs out of range [{MIN_US}, {MAX_US}] µs", err


def test_module_specs_give_files_and_parameters_by_module_name(tmp_path: Path) -> None:
    """One reading of module specs for --module and the marker's modules=: each spec's
    file found by the caller's rule (the marker's: beside the test file)."""
    from irqlab.vm.guest import module_specs

    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "b.ko").write_bytes(b"\x7fELF")
    files, params = module_specs(
        ["my-drv.ko tag=x verbose", Path("c.ko"), "my dir/b.ko"], lambda n: tmp_path / n
    )
    assert files == [tmp_path / "my-drv.ko", tmp_path / "c.ko", tmp_path / "my dir" / "b.ko"]
    assert params == {"my_drv": {"tag": "x", "verbose": None}}  # by module name
    assert module_specs(["a.ko"]) == ([Path("a.ko")], {})  # default: as given
    with pytest.raises(ValueError, match="'=x' is not PARAM=VALUE"):
        module_specs(["a.ko", "b.ko =x"])


@pytest.mark.parametrize(
    ("given", "conditional"),
    [
        ({}, True),
        ({"gpio_edges": "0x8"}, False),
        ({"gpio_edges": "0xff"}, False),
        ({"gpio_edges": "0x1"}, True),
        ({"gpio_edges": "x"}, True),
    ],
)
def test_shell_hint_drops_the_condition_the_shell_meets(
    given: dict[str, str], conditional: bool
) -> None:
    """A shell started with --module-param gpio_edges=0x8 was told to need it."""
    from irqlab.cli.guestcmd import PULSE_LINE, shell_hint

    hint = shell_hint(Path("/q.sock"), module_params=given)
    (pulse,) = [ln for ln in hint.splitlines() if f"inject pulse {PULSE_LINE}" in ln]
    assert ("if the shell has --module-param gpio_edges=0x8" in pulse) == conditional, pulse


def test_a_module_that_is_no_kernel_module_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text file named by --module failed with status 1 after the build, as an
    'extra module'."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    text = tmp_path / "f.txt"
    text.write_text("not a module\n")
    assert main(["run", "--module", str(text), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err == f"irqlab: --module {text} is not a kernel module: not an ELF file\n"


def test_run_and_shell_take_the_guest_architecture() -> None:
    """`irqlab run --arch aarch64` was "unrecognized arguments: --arch"; arm64 is
    aarch64, as everywhere; another name is a usage error naming the known ones."""
    from irqlab.cli.guestcmd import guest_config
    from irqlab.cli.main import build_parser

    parser = build_parser()
    for cmd in ("run", "shell"):
        extra = ["--", "true"] if cmd == "run" else []
        args = parser.parse_args([cmd, "--arch", "arm64", *extra])
        assert args.arch == "aarch64"
        assert guest_config(args, "t").arch == "aarch64"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["run", "--arch", "riscv64", "--", "true"])
    assert e.value.code == 2


def test_qemu_device_reaches_the_guest_config_and_a_bad_one_is_a_usage_error() -> None:
    from irqlab.cli.guestcmd import guest_config

    args = build_parser().parse_args(["run", "--qemu-device", "edu", "--", "true"])
    assert guest_config(args, "t").extra_devices == ("edu",)
    args = build_parser().parse_args(["run", "--qemu-device=irqlab,id=x", "--", "true"])
    with pytest.raises(UsageError, match="the irqlab device is the guest's own"):
        guest_config(args, "t")


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (
            [],
            "no snapshot of this configuration yet: booting the guest cold to save one, "
            "unless another process is doing so (then its snapshot is restored); later "
            "starts restore it",
        ),
        (["--cold"], "booting the guest cold (--cold: no snapshot is restored or saved)"),
        (
            ["--qemu-device", "edu"],
            "booting the guest cold (--qemu-device: a guest with another device has no snapshot)",
        ),
    ],
)
def test_a_cold_boot_is_said_before_it_begins(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    why: str,
) -> None:
    """A cold boot printed nothing for 11 s, then "guest ready (cold boot, 7.55 s)": it
    is said (and why) before the guest starts, and the ready line gives the time since
    irqlab started too.  One that may wait for another process's boot of the same
    configuration says so (two `irqlab run` at once both said "booting the guest cold";
    the second waited for the first's boot and restored its snapshot)."""
    from irqlab.cli import guestcmd

    said_before_start: list[str] = []

    class Cold(_Guest):
        restored = False
        phases = {"agent_ready": 7.5}  # noqa: RUF012 (read only)

        def start(self) -> _Guest:
            said_before_start.append(capsys.readouterr().err)
            return self

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))  # no snapshot in it
    monkeypatch.setattr("irqlab.vm.guest.Guest", Cold)
    config = guestcmd.guest_config(build_parser().parse_args(["run", *options, "true"]), "run")
    with guestcmd._running_guest(config, time.monotonic() - 12):
        pass
    assert said_before_start == [f"irqlab: {why}\n"]
    ready = capsys.readouterr().err
    assert re.fullmatch(
        r"irqlab: guest ready \(cold boot, 7\.50 s; 12\.\d\d s since irqlab started\)\n", ready
    )


@pytest.mark.parametrize(
    ("restored", "phases", "how"),
    [
        (True, {"agent_ready": 1.2}, "restored from the snapshot, 1.20 s"),
        (False, {"agent_ready": 7.5}, "cold boot, 7.50 s"),
        (
            True,
            {"agent_ready": 1.2, "extras": 1.9},
            "restored from the snapshot without --module, then loaded it, 1.90 s",
        ),
        (
            False,
            {"agent_ready": 7.5, "extras": 8.3},
            "cold boot without --module (saved as a snapshot), then loaded it, 8.30 s",
        ),
    ],
)
def test_the_ready_line_says_how_the_guest_started_with_or_without_module(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored: bool,
    phases: dict[str, float],
    how: str,
) -> None:
    """`irqlab run --module` with no snapshot at all said "booting the guest cold",
    then "guest ready (restored from the snapshot without --module, then loaded it"
    although it had booted cold: the wording followed the module's late load alone."""
    from irqlab.cli import guestcmd

    class Started(_Guest):
        def start(self) -> _Guest:
            self.restored, self.phases = restored, phases  # type: ignore[misc]
            return self

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("irqlab.vm.guest.Guest", Started)
    config = guestcmd.guest_config(build_parser().parse_args(["run", "true"]), "run")
    with guestcmd._running_guest(config, time.monotonic() - 12):
        pass
    ready = capsys.readouterr().err.splitlines()[-1]
    assert ready.startswith(f"irqlab: guest ready ({how}; "), ready


def test_a_guest_with_its_snapshot_says_nothing_before_it_starts(tmp_path: Path) -> None:
    from irqlab.build import outputs
    from irqlab.cli import guestcmd
    from irqlab.cli.guestcmd import cold_boot_reason
    from irqlab.vm import snapshot

    guest = SimpleNamespace(
        config=SimpleNamespace(snapshot=True, extra_devices=()),
        snapshot_key=lambda: "k",
        base_snapshot_key=lambda: None,
    )
    assert cold_boot_reason(guest) is not None
    found = tmp_path / "snapshot-k"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(snapshot, "lookup", lambda key: found if key == "k" else None)
        m.setattr(outputs, "damage", lambda recipe, d: "")
        assert cold_boot_reason(guest) is None
        # with --module: its own missing, the guest's without it restores (no cold boot)
        with_module = SimpleNamespace(
            config=guest.config, snapshot_key=lambda: "m", base_snapshot_key=lambda: "k"
        )
        assert cold_boot_reason(with_module) is None
        with_module.base_snapshot_key = lambda: "none-either"
        assert cold_boot_reason(with_module) == guestcmd.COLD_WHY_NONE
        # a damaged one is not "no snapshot yet" (said before the start named it)
        m.setattr(outputs, "damage", lambda recipe, d: f"{d}/state.mig is 0 bytes")
        assert cold_boot_reason(guest) == guestcmd.COLD_WHY_DAMAGED
        # with --module, its own damaged: the intact one without it restores
        m.setattr(snapshot, "lookup", lambda key: tmp_path / f"snapshot-{key}")
        m.setattr(outputs, "damage", lambda recipe, d: "" if d.name == "snapshot-k" else "bad")
        with_module.base_snapshot_key = lambda: "k"
        assert cold_boot_reason(with_module) is None
        with_module.base_snapshot_key = lambda: "also-bad"
        assert cold_boot_reason(with_module) == guestcmd.COLD_WHY_DAMAGED


@pytest.mark.parametrize(
    ("arch", "most", "why"),
    [("x86_64", 255, " (QEMU needs KVM's x2APIC beyond that)"), ("aarch64", 512, "")],
)
def test_more_vcpus_than_the_machine_takes_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arch: str,
    most: int,
    why: str,
) -> None:
    """`--smp 1000` started QEMU, which then refused it (status 1); under TCG q35's
    limit is 255, not its machine's 288."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    assert main(["run", "--arch", arch, "--smp", str(most + 1), "--", "true"]) == 2
    said = f"irqlab: --smp {most + 1}: the {arch} guest's machine takes at most {most} vCPUs{why}\n"
    assert capsys.readouterr().err == said
    args = build_parser().parse_args(["run", "--arch", arch, "--smp", str(most), "true"])
    from irqlab.cli.guestcmd import guest_config

    assert guest_config(args, "run").smp == most


def test_a_module_built_for_another_kernel_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found once the guest's image is (prepare()), before QEMU starts: it exited 1
    where a module of another architecture exits 2, and named an 'extra module'."""
    from irqlab.vm.guest import UnusableModule

    ko = _fake_ko(tmp_path / "wrongver.ko", "wrongver")

    class Prepared(_Guest):
        def prepare(self) -> _Guest:
            raise UnusableModule(f"extra module {ko} is built for kernel 5.10.0, but ...")

        def start(self) -> _Guest:
            raise AssertionError("started")

    monkeypatch.setattr("irqlab.vm.guest.Guest", Prepared)
    assert main(["run", "--module", str(ko), "--", "true"]) == 2
    assert capsys.readouterr().err == f"irqlab: --module {ko} is built for kernel 5.10.0, but ...\n"


@pytest.mark.parametrize("command", [["run", "--", "true"], ["shell"], ["build-image"]])
def test_an_irqlab_kmod_that_names_no_file_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """IRQLAB_KMOD=/nonexist.ko exited 1 once the command had begun."""
    monkeypatch.setattr("irqlab.vm.guest.Guest", None)  # a guest started would fail loudly
    monkeypatch.setattr("irqlab.build.kmod.ensure_style_tools", None)  # nor a build
    gone = tmp_path / "nonexist.ko"
    monkeypatch.setenv("IRQLAB_KMOD", str(gone))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"irqlab: $IRQLAB_KMOD={gone} does not exist (IRQLAB_KMOD names a ")
    assert err.count("\n") == 1


class _Chan:
    def exec_command(self, command: str) -> None:
        pass


@pytest.mark.parametrize(
    ("fault_logs", "said"),
    [
        ("/logs/fault", "guest kernel panic: sysrq"),
        ("", "guest kernel panic: sysrq"),  # the guest's own directory then
        (None, "the SSH connection dropped"),
    ],
)
@pytest.mark.parametrize("output", [b"prompt# ", b"done\n"])
def test_a_guest_that_died_under_run_says_where_its_logs_are(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    fault_logs: str | None,
    said: str,
    output: bytes,
) -> None:
    """`irqlab run -- 'echo c > /proc/sysrq-trigger'` and a killed QEMU printed the
    console but no logs directory; "the guest died" followed the command's last line
    when that ended with no newline (a prompt)."""
    from irqlab.cli import guestcmd
    from irqlab.vm.health import Fault

    fault = None if fault_logs is None else Fault(said, "", log_dir=fault_logs)

    class Died(_Guest):
        log_dir = "/logs/guest"

        def fault_after(self, *args: object, **kw: object) -> Fault | None:
            return fault

    def bridge(*args: object, last: bytearray, **kw: object) -> int:
        os.write(1, output)
        last[:] = output[-1:]
        return -1

    monkeypatch.setattr("irqlab.vm.guest.Guest", Died)
    monkeypatch.setattr(guestcmd, "_session", lambda g: _Chan())
    monkeypatch.setattr(guestcmd, "bridge", bridge)
    assert main(["run", "-n", "--", "true"]) == 255
    err = capfd.readouterr().err
    # after a prompt (no newline at its end) irqlab's lines start on a line of their own
    fresh = "\n" if output == b"prompt# " else ""
    assert err.endswith(
        f"since irqlab started)\n{fresh}irqlab: the command did not finish: {said}\n"
        f"irqlab: logs: {fault_logs or '/logs/guest'}\n"
    ), err


def test_guest_config_errors_name_the_option_not_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's errors named GuestConfig's fields ("extra_files: ... write to them
    with g.sh", "extra_modules: a module mydrv is listed twice",
    "GuestConfig(extra_devices=[''])"); the library's own messages stay as they are."""
    from irqlab.vm.guest import GuestConfig, GuestConfigError

    afile = tmp_path / "x"
    afile.write_text("")
    ko = str(_fake_ko(tmp_path / "mydrv.ko", "mydrv"))
    cases = [
        (["--put", f"{afile}:/proc/x"], "--put: /proc/x: no file can be made under /proc"),
        (["--module", ko, "--module", ko], "--module: a module mydrv is listed twice"),
        (["--qemu-device", ""], "--qemu-device '': "),
    ]
    for options, said in cases:
        assert main(["run", "-n", *options, "--", "true"]) == 2, options
        err = capsys.readouterr().err
        assert err.startswith(f"irqlab: {said}"), err
        assert "g.sh" not in err and "GuestConfig" not in err and "extra_" not in err
        assert err.count("\n") == 1
    with pytest.raises(GuestConfigError, match=r"^extra_files: /proc/x: .*with g\.sh"):
        GuestConfig(extra_files={"/proc/x": afile})


def test_module_timeout_sets_the_guests_module_load_timeout() -> None:
    """`irqlab run --module mydrv.ko` with an init that hangs waited a fixed 60 s: no
    option changed it."""
    from irqlab.cli import guestcmd

    def config(*options: str) -> Any:
        args = build_parser().parse_args(["run", *options, "true"])
        return guestcmd.guest_config(args, "run")

    assert config("--module-timeout", "5").module_load_timeout == 5
    assert config().module_load_timeout == 60
    with pytest.raises(UsageError, match=r"^--module-timeout must be more than 0 and at most"):
        config("--module-timeout", "1e9")
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--module-timeout", bad, "true"])
