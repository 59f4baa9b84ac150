"""``irqlab shell``, ``irqlab run`` and ``irqlab inject``: a guest by hand.

``shell`` and ``run`` start a guest (restored from its ready-state snapshot when one
exists) configured by the same options; ``shell`` opens an interactive SSH session
in the terminal (paramiko, the local tty in raw mode: no OpenSSH client needed) and
exposes a second QMP socket for ``qmp-shell`` or ``irqlab inject``; ``run`` runs one
command and exits with its status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shlex
import signal
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irqlab.cli.argtypes import UsageError, finite, guest_arch, integer, positive
from irqlab.errors import IrqlabError
from irqlab.vm.exit_signal import ExitSignal, exit_signal

if TYPE_CHECKING:
    import paramiko  # annotations only: `irqlab kdir` builds this parser, and needs none

__all__ = [
    "RUN_DESCRIPTION",
    "SHELL_EXAMPLES",
    "QmpSocket",
    "UsageError",
    "add_guest_parsers",
    "bridge",
    "cmd_inject",
    "cmd_run",
    "cmd_shell",
    "died_lines",
    "force_accel",
    "forwarded_stdin",
    "guest_config",
    "in_option_words",
    "not_a_file",
    "parse_assignments",
    "raw_tty",
    "remote_command",
    "say_on_own_line",
    "shell_hint",
]


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict (values stay strings: QEMU and modprobe parse them); a
    key given twice is a usage error (the last one silently won).  A module
    parameter's ``-`` and ``_`` are one character, as the kernel matches them."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        same = key.replace("-", "_") if option == "--module-param" else key
        if same in seen:
            raise UsageError(
                f"{option} {item!r}: {key} is given twice (also {option} {seen[same]!r}); "
                "give it once"
            )
        seen[same] = item
        out[key] = value
    return out


def not_a_file(path: Path, kind: str) -> str | None:
    """What keeps *path* from being *kind* (``"a file"``): ``no such file``, ``is a
    directory, not a file``, ...; None when it is a file."""
    if path.is_file():
        return None
    if not path.exists():
        return "no such file"
    return f"is a directory, not {kind}" if path.is_dir() else f"is not {kind}"


def parse_puts(items: list[str] | None) -> dict[str, Path]:
    """``--put FILE`` (to /root/<name>) or ``--put FILE:/guest/path``; each guest path
    once."""
    out: dict[str, Path] = {}
    given: dict[str, str] = {}  # the guest paths (normalised) and the --put that gave it
    for item in items or []:
        local, sep, remote = item.partition(":")
        path = Path(local)
        problem = not_a_file(path, "a file") if local else "an empty path: give a file"
        if problem:
            raise UsageError(f"--put {local or repr(local)}: {problem}")
        if sep and not remote.startswith("/"):
            raise UsageError(f"--put {item!r}: the guest path must be absolute")
        dest = remote if sep else f"/root/{path.name}"
        if os.path.normpath(dest) in given:  # the second silently won
            raise UsageError(
                f"--put {item!r}: the guest path {dest} is given twice (also by --put "
                f"{given[os.path.normpath(dest)]!r}): one file a path"
            )
        given[os.path.normpath(dest)] = item
        out[dest] = path
    return out


def force_accel(value: str | None) -> None:
    """``--accel VALUE``: into $IRQLAB_ACCEL, which the guest reads, with the option
    named as its cause (``kvm forced by --accel kvm``, not by $IRQLAB_ACCEL)."""
    from irqlab.vm import accel

    if value:
        os.environ[accel.ENV_VAR] = value
        os.environ[accel.SOURCE_ENV] = f"--accel {value}"


# GuestConfig's fields as the options of shell and run that set them: the library's
# messages name the fields (its users write them), the command's name the options
FIELD_OPTIONS = {
    "extra_files": "--put",
    "extra_modules": "--module",
    "extra_module_params": "--module",
    "extra_devices": "--qemu-device",
    "module_params": "--module-param",
}
_FIELD_CALL = re.compile(r"GuestConfig\((\w+)=\[?(.*?)\]?\): ")
_FIELD_PREFIX = re.compile(r"(\w+): ")
MODULE_TIMEOUT_OPTION = "--module-timeout"
_TIMEOUT_FIELD = "GuestConfig.module_load_timeout"


def in_option_words(message: str) -> str:
    """A GuestConfigError's *message* as the command line says it: the GuestConfig
    field it starts with (``extra_files: ...``, ``GuestConfig(extra_devices=['']):
    ...``) as the option (``--put: ...``, ``--qemu-device '': ...``), and no Python
    (``g.sh``); a message of another kind as it is."""
    if message.startswith(_TIMEOUT_FIELD):  # check_timeout's words
        return MODULE_TIMEOUT_OPTION + message.removeprefix(_TIMEOUT_FIELD)
    call = _FIELD_CALL.match(message)
    prefix = _FIELD_PREFIX.match(message)
    if call is not None and call[1] in FIELD_OPTIONS:
        message = f"{FIELD_OPTIONS[call[1]]} {call[2]}: {message[call.end() :]}"
    elif prefix is not None and prefix[1] in FIELD_OPTIONS:
        message = f"{FIELD_OPTIONS[prefix[1]]}: {message[prefix.end() :]}"
    else:
        return message
    return message.replace("with g.sh once the guest runs", "with a command once the guest runs")


def check_env_kmod(arch: Any = None) -> None:
    """$IRQLAB_KMOD, when set, names a build of our driver for *arch*, else a usage error
    naming the variable (a missing file exited 1, after the command had begun)."""
    from irqlab.vm.guest import PrerequisiteMissing, env_kmod

    try:
        env_kmod(arch)
    except PrerequisiteMissing as e:
        raise UsageError(
            f"{e} (IRQLAB_KMOD names a build of the irqlab driver to use instead of ours: "
            "correct it, or unset it)"
        ) from None


def guest_config(args: argparse.Namespace, name: str) -> Any:
    """The GuestConfig the options describe (``--accel`` goes to $IRQLAB_ACCEL)."""
    from irqlab.build.arch import by_name, selected
    from irqlab.build.boot import MAX_VCPUS
    from irqlab.vm.guest import (
        BUILD_MODULE,
        GuestConfig,
        GuestConfigError,
        PrerequisiteMissing,
        check_device_props,
        check_module_arch,
        module_specs,
    )

    force_accel(args.accel)
    try:
        arch = by_name(args.arch) if args.arch else selected(os.environ)
    except ValueError as e:  # $IRQLAB_ARCH names none
        raise UsageError(str(e)) from None
    most = MAX_VCPUS[arch.name]
    if args.smp > most:  # QEMU started, then refused it
        raise UsageError(
            f"--smp {args.smp}: the {arch.name} guest's machine takes at most {most} vCPUs"
            + (" (QEMU needs KVM's x2APIC beyond that)" if arch.name == "x86_64" else "")
        )
    check_env_kmod(arch)
    if args.no_irqlab and args.module_param:  # accepted, and a cold boot for nothing
        raise UsageError(
            "--module-param sets our driver's parameters, and --no-irqlab does not load it "
            "(your module's: --module 'my.ko k=v')"
        )
    try:
        modules, module_params = module_specs(args.module or [])
    except ValueError as e:
        raise UsageError(f"--module {e}") from None
    for m in modules:
        problem = not_a_file(m, "a .ko file")
        if problem:
            hint = "" if m.exists() else f" (build it with {BUILD_MODULE})"
            raise UsageError(f"--module {m}: {problem}{hint}")
        try:  # a kernel module, of the guest's architecture
            check_module_arch(m, arch, "--module")
        except PrerequisiteMissing as e:
            raise UsageError(str(e)) from None
    device_props = parse_assignments(args.device_prop, "--device-prop")
    try:
        check_device_props(device_props, "--device-prop")
    except GuestConfigError as e:
        raise UsageError(str(e)) from None
    puts = parse_puts(args.put)
    try:
        return GuestConfig(
            name=name,
            arch=arch.name,
            device_props=device_props,
            module_params=parse_assignments(args.module_param, "--module-param"),
            smp=args.smp,
            extra_modules=modules,
            extra_module_params=module_params,
            extra_files=puts,
            load_irqlab=not args.no_irqlab,
            snapshot=not args.cold,
            extra_devices=tuple(args.qemu_device or ()),
            **({} if args.module_timeout is None else {"module_load_timeout": args.module_timeout}),
        )
    except GuestConfigError as e:  # e.g. --put x:/proc/y, refused before any boot
        raise UsageError(in_option_words(str(e))) from None


@contextlib.contextmanager
def raw_tty(fd: int) -> Iterator[None]:
    """The terminal *fd* in raw mode while the block runs, its modes restored however
    the block ends (a return, Ctrl-C, SIGTERM); a terminal that hung up (SIGHUP) has no
    modes left to restore."""
    import termios
    import tty

    old = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


def bridge(
    chan: paramiko.Channel,
    stdin_fd: int | None,
    stdout_fd: int,
    stderr_fd: int,
    *,
    wakeup: tuple[int, Callable[[], None]] | None = None,
    last: bytearray | None = None,
) -> int:
    """Copy *stdin_fd* to the channel (its EOF, or a read error such as a hung-up
    terminal's, becomes the channel's EOF) and the channel's stdout/stderr to ours
    until it closes; return its exit status (-1 if the connection dropped).  Without
    *stdin_fd* the channel's input ends at once.

    Input is sent as the channel's window allows, never blocking on it: a command that
    does not read its stdin neither stalls its output nor keeps us once it exits.
    *wakeup* ``(fd, call)``: when *fd* becomes readable it is drained and *call* runs
    here, between sends (a signal handler's work that must not interrupt one).
    *last* is set to the last byte written to either stream (a line irqlab prints
    after them starts on a line of its own: see :func:`say_on_own_line`)."""
    pending = b""  # read from stdin, not yet taken by the channel
    stdin_open = stdin_fd is not None
    if not stdin_open:
        chan.shutdown_write()
    while True:
        watched: list[Any] = [chan]
        if stdin_open and not pending:
            watched.append(stdin_fd)
        if wakeup is not None:
            watched.append(wakeup[0])
        # with input waiting for the window to open, look again soon: select does not
        # say when it does
        ready, _, _ = select.select(watched, [], [], 0.05 if pending else None)
        if wakeup is not None and wakeup[0] in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wakeup[0], 4096)
            wakeup[1]()
        if chan in ready:
            got = False
            while chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                os.write(stderr_fd, data)
                if last is not None and data:
                    last[:] = data[-1:]
                got = True
            if chan.recv_ready():
                data = chan.recv(65536)
                os.write(stdout_fd, data)
                if last is not None and data:
                    last[:] = data[-1:]
            elif not got and (chan.eof_received or chan.closed):
                break  # EOF ends both streams
        if stdin_fd is not None and stdin_fd in ready:
            try:
                pending = os.read(stdin_fd, 65536)
            except OSError:
                pending = b""
            if not pending:
                stdin_open = False
                with contextlib.suppress(OSError, EOFError):
                    chan.shutdown_write()
        try:
            while pending and chan.send_ready():
                pending = pending[chan.send(pending) :]
        except OSError:  # the channel closed: the command takes no more input
            pending, stdin_open = b"", False
    # waits for the exit status; -1 when the connection dropped (the channel closed)
    return chan.recv_exit_status()


def say_on_own_line(last: bytes | bytearray, *lines: str) -> None:
    """*lines* on stderr, the first on a line of its own: after output that did not end
    one (*last*, its last byte: a shell's prompt, ``printf x``) a newline comes first
    ("irqlab: the guest died" was printed after the guest's prompt)."""
    fresh = "" if last in (b"", b"\n") else "\n"
    print(fresh + "\n".join(lines), file=sys.stderr, flush=True)


def died_lines(g: Any, fault: Any, first: str) -> list[str]:
    """*first*, then where the guest's logs are (console, QEMU's output, the agent's
    log), when the guest ran: every death says it (a panic's and a killed QEMU's did
    not)."""
    logs = (fault.log_dir if fault is not None else "") or g.log_dir
    return [first, *([f"irqlab: logs: {logs}"] if logs else [])]


def _session(guest: Any) -> paramiko.Channel:
    if guest.ssh is None:
        raise IrqlabError("the guest is not connected")
    chan: paramiko.Channel = guest.ssh.transport.open_session()
    return chan


def interactive_shell(guest: Any, last: bytearray | None = None) -> tuple[int, ExitSignal | None]:
    """An interactive shell in the guest on this terminal (raw mode, window size kept
    in sync); without a terminal, the shell reads our stdin.  Its exit status (as
    :func:`bridge`) and the signal that killed it, if one did; *last*: as bridge's."""
    chan = _session(guest)
    return _shell(chan, last), exit_signal(chan)


def _shell(chan: paramiko.Channel, last: bytearray | None = None) -> int:
    tty = sys.stdin.isatty()
    if not tty:
        chan.exec_command("sh")
        return bridge(chan, sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno(), last=last)
    cols, rows = os.get_terminal_size(sys.stdout.fileno())
    chan.get_pty(term=os.environ.get("TERM", "vt100"), width=cols, height=rows)
    chan.invoke_shell()

    def resize() -> None:
        with contextlib.suppress(Exception):
            c, r = os.get_terminal_size(sys.stdout.fileno())
            chan.resize_pty(width=c, height=r)

    # The handler only wakes the bridge, which resizes between its sends: resize_pty
    # from the handler could wait for paramiko's send lock held by the very send the
    # signal interrupted (a deadlock).
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)

    def on_winch(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(wake, b"w")

    old = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with raw_tty(sys.stdin.fileno()):
            return bridge(
                chan,
                sys.stdin.fileno(),
                sys.stdout.fileno(),
                sys.stdout.fileno(),
                wakeup=(woken, resize),
                last=last,
            )
    finally:
        signal.signal(signal.SIGWINCH, old)
        os.close(woken)
        os.close(wake)


COLD_WHY_OPTION = "--cold: no snapshot is restored or saved"
COLD_WHY_DEVICES = "--qemu-device: a guest with another device has no snapshot"
COLD_WHY_NONE = "no snapshot of this configuration yet"
COLD_WHY_DAMAGED = "the snapshot of this configuration is damaged"
# A start missing its snapshot takes the boot lock first, and waits there for another
# process's cold boot of the same configuration, then restores what it saved.
_MAY_WAIT = (COLD_WHY_NONE, COLD_WHY_DAMAGED)


def cold_boot_line(why: str) -> str:
    """What is said before a start that *why* (:func:`cold_boot_reason`) boots cold.
    One that may wait for another process's boot says so: two `irqlab run` at the same
    instant both said "booting the guest cold", and the second then waited for the
    first's boot and restored its snapshot (the wait itself is said when it begins:
    :func:`irqlab.build.cache.take_lock`)."""
    if why in _MAY_WAIT:
        return (
            f"irqlab: {why}: booting the guest cold to save one, unless another process "
            "is doing so (then its snapshot is restored); later starts restore it"
        )
    return f"irqlab: booting the guest cold ({why})"


def cold_boot_reason(g: Any) -> str | None:
    """Why the prepared guest *g* will boot cold (seconds to minutes under TCG, where
    a restore takes about one), or None when it restores its snapshot."""
    from irqlab.vm import snapshot

    if not g.config.snapshot:
        return COLD_WHY_OPTION
    if g.config.extra_devices:
        return COLD_WHY_DEVICES
    found = snapshot.lookup(g.snapshot_key())
    if found is not None and snapshot.intact(found):
        return None
    # its own missing or damaged (the start says so, removes it and saves a new one):
    # the guest without --module restores, and the module then loads
    base_key = g.base_snapshot_key()
    base = snapshot.lookup(base_key) if base_key is not None else None
    if base is not None and snapshot.intact(base):
        return None
    return COLD_WHY_NONE if found is None else COLD_WHY_DAMAGED


def ready_how(restored: bool, extras_after: bool) -> str:
    """How a started guest got ready, for "guest ready (...)": *restored* (its own
    snapshot, or that of the guest without --module), *extras_after* (the --module
    loaded after the guest without it was ready: :attr:`Guest.phases` has "extras").
    A cold boot of the guest without --module, then the module, was said "restored
    from the snapshot without --module" after "no snapshot ...: booting the guest cold"."""
    if not extras_after:
        return "restored from the snapshot" if restored else "cold boot"
    if restored:
        return "restored from the snapshot without --module, then loaded it"
    return "cold boot without --module (saved as a snapshot), then loaded it"


@contextlib.contextmanager
def _running_guest(config: Any, started: float | None = None) -> Iterator[Any]:
    """A started guest for the block, stopped however it ends.  One ``try`` from the
    start on: a signal that lands between the start and the caller's own ``try`` (as
    soon as "guest ready" is out, under load) would otherwise leave QEMU to the
    parent-death signal and its socket folder behind.  A cold boot is said before it
    begins (it was 11 s of silence); *started*: when the command started
    (``time.monotonic()``), for the time until the guest was ready."""
    import time

    from irqlab.vm.guest import Guest, GuestConfigError, UnusableModule

    started = time.monotonic() if started is None else started
    g = Guest(config)
    g.fault_notice = False  # shell and run say a fault once, when the command ends
    try:
        try:  # a --module built for another kernel is found once the image is
            g.prepare()
        except UnusableModule as e:
            raise UsageError(str(e).replace("extra module", "--module", 1)) from None
        except GuestConfigError as e:  # --module twice, or before one it needs
            raise UsageError(in_option_words(str(e))) from None
        why = cold_boot_reason(g)
        if why is not None:
            print(cold_boot_line(why), file=sys.stderr, flush=True)
        g.start()
        how = ready_how(g.restored, "extras" in g.phases)
        took = g.phases.get("extras", g.phases.get("agent_ready", 0))
        total = time.monotonic() - started
        print(
            f"irqlab: guest ready ({how}, {took:.2f} s; {total:.2f} s since irqlab started)",
            file=sys.stderr,
        )
        yield g
    finally:
        g.close()


# What `irqlab shell` suggests to inject, one command a line: (arguments, what it
# does, the driver parameter it needs or "").  Each raises interrupts in a shell started
# without options but those that name a parameter: pulse needs the line's GPIO edge
# detection, which the driver leaves off by default.
PULSE_LINE = 3
SHELL_EXAMPLES = (
    ("push 0x42", "a FIFO interrupt", ""),
    ("burst 1000 --period-us 100", "1000 interrupts, 100 us apart", ""),
    ("counters", "the device's counters", ""),
    (f"pulse {PULSE_LINE}", f"edges on GPIO line {PULSE_LINE}", f"gpio_edges={1 << PULSE_LINE:#x}"),
)


def _has_param(needs: str, params: Mapping[str, str]) -> bool:
    """Whether the driver parameters *params* set the bits *needs* (``gpio_edges=0x8``)
    names."""
    key, _, bits = needs.partition("=")
    try:
        return int(params[key], 0) & int(bits, 0) == int(bits, 0)
    except (KeyError, ValueError):
        return False


def shell_hint(
    qmp: Path, *, irqlab_loaded: bool = True, module_params: Mapping[str, str] | None = None
) -> str:
    """The lines ``irqlab shell`` prints before the prompt: the QMP socket and the
    commands that use it, one a line, each with what it does after a ``#`` (and the
    driver parameter it needs, unless *module_params*, the shell's, set it).  Without
    our driver (``--no-irqlab``, *irqlab_loaded* False) the commands still drive the
    device, but nothing of ours handles its interrupts: no ``/proc/interrupts`` line
    of ours to watch, and no parameter of our driver to suggest."""
    width = max(len(a) for a, _, _ in SHELL_EXAMPLES) + len("irqlab inject ")
    given = module_params or {}
    examples = [
        f"  {'irqlab inject ' + a:{width}}  # {what}"
        + (
            f", if the shell has --module-param {needs}"
            if needs and irqlab_loaded and not _has_param(needs, given)
            else ""
        )
        for a, what, needs in SHELL_EXAMPLES
    ]
    arrive = (
        ["in the guest, grep irqlab /proc/interrupts shows them arrive"]
        if irqlab_loaded
        else [
            "the irqlab driver is not loaded (--no-irqlab): the device's interrupts are "
            "the guest's to handle (e.g. by your own --module)"
        ]
    )
    lines = [
        f"QMP socket {qmp}",
        "to inject interrupts, from another terminal:",
        f"  export IRQLAB_QMP={shlex.quote(str(qmp))}",
        *examples,
        f"  qmp-shell {shlex.quote(str(qmp))}",
        *arrive,
        "exit the shell to stop the guest",
    ]
    return "\n".join(f"irqlab: {line}" for line in lines)


def cmd_shell(args: argparse.Namespace) -> int:
    config = guest_config(args, "shell")
    from irqlab.vm.machine import make_sock_dir, remove_sock_dir

    sock_dir = make_sock_dir("shell")
    qmp = config.qmp_socket = sock_dir / "qmp.sock"
    try:
        with _running_guest(config, getattr(args, "started", None)) as g:
            hint = shell_hint(
                qmp, irqlab_loaded=not args.no_irqlab, module_params=config.module_params
            )
            print(hint, file=sys.stderr, flush=True)
            mark = g.console_mark()  # an oops printed meanwhile (vs. a crash of its own)
            last = bytearray()
            rc, killed = interactive_shell(g, last)
            # the connection dropped under the shell: the watch's verdict comes a moment
            # later (it ended with status 255 and not a word when QEMU was killed)
            fault = g.fault_after(rc, killed, console_mark=mark)
            if fault is not None:
                cause = f"irqlab: the guest died: {fault.describe()}"
                say_on_own_line(last, *died_lines(g, fault, cause))
                return 1
            if rc < 0:
                cause = "irqlab: the shell did not finish: the SSH connection dropped"
                say_on_own_line(last, *died_lines(g, None, cause))
                return 255
            if killed is not None:
                print(f"irqlab: the shell was {killed.describe()}", file=sys.stderr)
            return rc
    finally:
        remove_sock_dir(sock_dir)


def forwarded_stdin() -> int | None:
    """Our stdin, to forward to ``irqlab run``'s command as ``ssh`` does; None when
    there is none (closed) or when it is the terminal of a shell that put us in the
    background (reading it would stop us with SIGTTIN): the command gets EOF at once."""
    if sys.stdin is None:
        return None
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):  # replaced in-process by an object without a descriptor
        return None
    if os.isatty(fd):
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                return None
        except OSError:  # not our controlling terminal: no job control on it
            pass
    return fd


def cmd_run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not "".join(cmd).strip():  # `irqlab run -- ''` booted a guest for nothing
        raise UsageError("run: no command (irqlab run [options] -- CMD ...)")
    # The guest is this command's own: Ctrl-C, SIGTERM or a closed stdout stop it with
    # the command (no kill in the guest first: on a frozen guest that waited for nothing).
    with _running_guest(guest_config(args, "run"), getattr(args, "started", None)) as g:
        chan = _session(g)
        mark = g.console_mark()  # an oops printed while it ran (vs. its own crash)
        chan.exec_command(remote_command(cmd))
        stdin = None if args.no_stdin else forwarded_stdin()
        last = bytearray()
        rc = bridge(chan, stdin, sys.stdout.fileno(), sys.stderr.fileno(), last=last)
        killed = exit_signal(chan)
        if rc < 0 or killed is not None:
            fault = g.fault_after(rc, killed, console_mark=mark)
            if fault is not None or killed is None:
                cause = fault.describe() if fault is not None else "the SSH connection dropped"
                first = f"irqlab: the command did not finish: {cause}"
                say_on_own_line(last, *died_lines(g, fault, first))
                return 255
            # as a shell says it of its child (ssh said nothing, with status 255)
            say_on_own_line(last, f"irqlab: the command was {killed.describe()}")
        return rc


class QmpSocket:
    """A QMP connection to a socket QEMU listens on, as the injector's runner."""

    def __init__(self, path: Path, timeout: float = 10.0, *, given: str = "--qmp") -> None:
        """*given*: where the path came from, as the errors say it (``--qmp``, or
        ``$IRQLAB_QMP=`` when it came from the environment)."""
        from irqlab.vm.qmp.client import SyncQMP

        said = f"--qmp {path}" if given == "--qmp" else f"{given}{path}"
        if not path.exists():
            raise UsageError(f"{said}: no such socket (is `irqlab shell` running?)")
        if not stat.S_ISSOCK(path.stat().st_mode):  # QEMU's refusal said "Connection refused"
            raise UsageError(f"{said}: not a socket (`irqlab shell` prints its QMP socket)")
        self._qmp = SyncQMP("inject", timeout=timeout)
        try:
            self._qmp.connect(path)
        except BaseException:
            self._qmp.close()
            raise

    def qmp(self, command: str, args: Any = None, /) -> Any:
        return self._qmp.execute(command, args)

    def qmp_many(
        self,
        commands: Sequence[tuple[str, Mapping[str, object] | None]],
        *,
        window: int = 8,
        timeout: float | None = None,
    ) -> list[Any]:
        """*commands* pipelined (:meth:`SyncQMP.execute_many`), for
        :meth:`Injector.push_many`."""
        return self._qmp.execute_many(commands, window=window, timeout=timeout)

    def close(self) -> None:
        self._qmp.close()


def _vcpus(text: str) -> int:
    n = integer(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a guest needs at least 1 vCPU")
    return n


def cmd_inject(args: argparse.Namespace) -> int:
    from irqlab.vm.qmp.errors import InvalidArgument, OutOfRange
    from irqlab.vm.qmp.injector import Injector

    path = args.qmp or os.environ.get("IRQLAB_QMP")
    if not path:
        raise UsageError("inject: no QMP socket: pass --qmp PATH (printed by irqlab shell)")
    conn = QmpSocket(Path(path), given="--qmp" if args.qmp else "$IRQLAB_QMP=")
    try:
        inj = Injector(conn, args.device_id)
        if args.action == "pulse":
            inj.pulse_lines(args.lines)  # every line checked before the first is pulsed
        elif args.action == "set-lines":
            inj.set_lines(args.levels)
        elif args.action == "push":
            inj.push_many(args.words)  # every word checked before the first is pushed
        elif args.action == "burst":
            period = None if args.period_us is None else round(args.period_us * 1000)
            try:
                inj.burst(args.count, period, line=args.line)
            except OutOfRange as e:
                if e.name != "period_ns":
                    raise
                # in the option's own unit (it said "period_ns=0 ns is below ..."); the
                # device's range, as push's and pulse's: status 1, not a usage error's 2
                raise InvalidArgument(
                    e.in_unit("--period-us", "µs", 1000, args.period_us)
                ) from None
            if args.counters and args.count > 0:
                _wait_burst_done(inj, args.count)
        if args.action == "counters" or args.counters:
            print(json.dumps(asdict(inj.counters()), indent=1))
    finally:
        conn.close()
    return 0


BURST_MARGIN_S = 10.0  # beyond its steps' own time, before a burst's wait gives up
BURST_POLL_S = 0.02  # how often the wait reads the steps left (QMP)


def _wait_burst_done(inj: Any, count: int) -> None:
    """``inject burst N --counters``: wait for the burst's last step, so the counters
    printed are its result (they were read right after it started: "raised": 17 of a
    burst of 1000).  The device's steps run on QEMU's clock: their count times the
    period, plus :data:`BURST_MARGIN_S`, stretched by the host's load, bounds the wait;
    beyond it, an error says how many steps are left."""
    import time

    from irqlab.vm.loadscale import scaled

    limit = scaled(count * inj.burst_period() / 1e9 + BURST_MARGIN_S)
    deadline = time.monotonic() + limit
    while (left := inj.burst_remaining()) > 0:
        if time.monotonic() > deadline:
            raise IrqlabError(
                f"inject burst: {left} of its {count} steps still to come after {limit:.0f} s "
                "(is the guest's QEMU stopped?); the counters now: "
                + json.dumps(asdict(inj.counters()))
            )
        time.sleep(BURST_POLL_S)


def _guest_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--device-prop", action="append", metavar="K=V", help="a property of the irqlab device"
    )
    s.add_argument(
        "--module-param", action="append", metavar="K=V", help="a parameter of our driver"
    )
    s.add_argument(
        "--module",
        action="append",
        metavar="'KO [PARAM=VALUE ...]'",
        help="your own module: insmod it, with those parameters (repeatable; quote the "
        "whole as one argument, as insmod takes it: --module 'mydrv.ko tag=x')",
    )
    s.add_argument(
        MODULE_TIMEOUT_OPTION,
        type=positive,
        metavar="SECONDS",
        help="how long a module's load may take before it is said as a hang, with where "
        "its insmod waits in the kernel (default 60)",
    )
    s.add_argument(
        "--no-irqlab", action="store_true", help="do not load our driver (leave the device unbound)"
    )
    s.add_argument(
        "--qemu-device",
        action="append",
        metavar="SPEC",
        help="one more QEMU device, a -device spec (repeatable; e.g. edu for a driver of "
        "QEMU's edu device); such a guest boots cold",
    )
    s.add_argument(
        "--put",
        action="append",
        metavar="FILE[:GUEST_PATH]",
        help="copy a file into the guest (default /root/<name>)",
    )
    from irqlab.vm.accel import CHOICES

    s.add_argument("--accel", choices=CHOICES, help="default: $IRQLAB_ACCEL or auto")
    s.add_argument(
        "--arch",
        type=guest_arch,
        help="the guest architecture: x86_64 or aarch64 (default $IRQLAB_ARCH, else x86_64)",
    )
    s.add_argument("--smp", type=_vcpus, default=1, metavar="N", help="vCPUs (default 1)")
    s.add_argument("--cold", action="store_true", help="boot cold, not from the snapshot")


RUN_DESCRIPTION = """\
Starts a fresh guest (restored from its snapshot when one exists), runs one command
in it and exits with the command's status (128 + N when signal N killed it, as a
shell says; 255, as ssh, when it did not finish: the guest died or the connection
dropped, the cause and the logs are said; 130 or 143 when Ctrl-C or SIGTERM stopped
irqlab, the guest with it).  Its stdout and stderr
stream here, and irqlab's stdin is forwarded to it as ssh does (the command reads EOF
at its end; -n gives it an empty stdin, as ssh -n does, e.g. in a `while read` loop).

The guest's shell runs the command, so the quoting decides what it expands:
  one argument:  a command line, as typed at the guest's prompt
                   irqlab run -- 'ls /dev/irqlab*; dmesg | tail -n 3'
  several:       quoted one by one (shlex.join): the guest's shell expands nothing
                   irqlab run -- ls /dev/irqlab0      (ls of that file)
                   irqlab run -- ls '/dev/irqlab*'    (looks for a file named so: fails)
"""


def remote_command(cmd: list[str]) -> str:
    """The command line ``irqlab run -- CMD...`` gives the guest's shell: a single
    argument as it is (a command line), several quoted one by one (see
    :data:`RUN_DESCRIPTION`)."""
    return cmd[0] if len(cmd) == 1 else shlex.join(cmd)


def add_guest_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "shell",
        help="start a guest and open a shell in it; prints a QMP socket for irqlab inject",
        description="Starts a guest (restored from its snapshot when one exists), opens an "
        "interactive SSH session in this terminal and offers a QMP socket (printed) for "
        "`irqlab inject` or `qmp-shell` while it runs. Exiting the shell stops the guest. In "
        "a terminal, Ctrl-C goes to the guest's shell, as over ssh; SIGTERM to irqlab stops "
        "the guest (exit status 143).",
    )
    _guest_options(s)
    s.set_defaults(func=cmd_shell)

    s = sub.add_parser(
        "run",
        help="run one command in a fresh guest; exit with its status",
        usage="irqlab run [options] -- CMD [ARG...]",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _guest_options(s)
    s.add_argument(
        "-n",
        "--no-stdin",
        action="store_true",
        help="the command's stdin is empty: irqlab's own is not read (as ssh -n)",
    )
    s.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments"
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "inject",
        help="inject interrupts into a running guest's device over its QMP socket",
        description="Talks to the QMP socket `irqlab shell` prints (or $IRQLAB_QMP).",
    )
    _inject_options(s, defaults=True)
    # the same options after the action too (`inject push 1 --counters`); there they
    # have no defaults, so that they override only what they are given for
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _inject_options(common, defaults=False)
    acts = s.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = acts.add_parser(name, help=help, parents=[common])
        return a

    from irqlab.contract.regs import REGS, HeaderParseError

    try:
        last = f"{REGS.MAX_GPIO_LINES - 1}"
    except HeaderParseError:  # the help still shows; a command that reads it says why not
        last = "IRQLAB_MAX_GPIO_LINES - 1"
    lines = f"0 to the device's gpio-lines - 1 (gpio-lines defaults to {last} + 1)"
    numbers = "decimal, or hex with 0x"
    a = action("pulse", "pulse GPIO input lines (rising then falling edge)")
    a.add_argument(
        "lines", type=integer, nargs="+", metavar="LINE", help=f"a GPIO line: {lines}; {numbers}"
    )
    a = action("set-lines", "drive the GPIO inputs to a bit mask of levels")
    a.add_argument(
        "levels", type=integer, metavar="MASK", help=f"bit n: line n high; {numbers} (0x8: line 3)"
    )
    a = action("push", "push words into the device's FIFO")
    a.add_argument(
        "words",
        type=integer,
        nargs="+",
        metavar="WORD",
        help=f"a 32-bit word, 0 to 0xffffffff; {numbers}",
    )
    a = action("burst", "start the in-device burst generator")
    a.add_argument(
        "count", type=integer, metavar="COUNT", help="steps of the burst; 0 stops a running one"
    )
    a.add_argument(
        "--period-us",
        metavar="US",
        type=finite,
        help="period in microseconds (its range: the device's; default: the device's "
        "current burst-period-ns, 1 ms unless set)",
    )
    a.add_argument("--line", type=integer, help="toggle this GPIO line instead of BURST events")
    action("counters", "print the device counters (JSON)")
    s.set_defaults(func=cmd_inject)


def _device_id(text: str) -> str:
    """An argparse type: ``--device-id``, not empty (``''`` was QOM's "Property
    'container.counters' not found")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty id: give the device's QEMU id")
    return text


def _inject_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``irqlab inject``'s options, before the action (*defaults*) or after it."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument(
        "--qmp", metavar="SOCKET", default=default(None), help="QMP socket (default: $IRQLAB_QMP)"
    )
    from irqlab.vm.qmp.injector import DEVICE_ID

    p.add_argument(
        "--device-id",
        metavar="ID",
        type=_device_id,
        default=default(DEVICE_ID),
        help=f"the device's id (default {DEVICE_ID})",
    )
    p.add_argument(
        "--counters",
        action="store_true",
        default=default(False),
        help="print the device counters afterwards (after burst: once its last step is made)",
    )
