"""A booted guest ready for end-to-end tests: QEMU + console + SSH + module + agent.

:class:`Guest` composes the pieces other modules provide:

* the QEMU build (:func:`irqlab.build.qemu.find_qemu`) and the guest image
  (:func:`irqlab.build.image.ensure_image`, which bakes the agent package, its
  uapi parser and the header into the initramfs),
* :class:`irqlab.vm.machine.Machine` (QEMU with QMP and the serial console),
* :class:`irqlab.vm.ssh.SshClient` (through the forwarded port),
* the kernel module (``modprobe`` of the image's module),
* :class:`irqlab.vm.agent_client.AgentClient` running ``python3 -m irqlab_agent``,
* :class:`irqlab.vm.qmp.injector.Injector` on the device's QOM path.

One guest serves a whole test session; :meth:`Guest.reset` puts it back to a
clean state between tests (no armed paths or open files, device counters zero).

Every missing prerequisite raises :class:`PrerequisiteMissing` naming it and
the command that builds it: the e2e tests fail with that message, never skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import logging
import math
import os
import posixpath
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Never, NoReturn, TypeVar

from irqlab import cancel, notice
from irqlab.build import imagekind
from irqlab.build.arch import build_module_command
from irqlab.build.image import DEFAULT_EXTRA_PACKAGES
from irqlab.contract.regs import AT_RUN, AT_START, NEVER, PREFIX, QOM, REGS, props_when
from irqlab.errors import ConfigError, IrqlabError, hide_frame
from irqlab.paths import cache_description, log_dir, prune_logs
from irqlab.vm import logplace, proc
from irqlab.vm.agent_client import (
    COUNT_DEVICE,
    DEVICE,
    AgentClient,
    AgentError,
    AgentFault,
    AgentRefused,
    AgentTimeout,
)
from irqlab.vm.exit_signal import ExitSignal, signal_status
from irqlab.vm.health import (
    CONSOLE_FAULTS,
    EXIT_AFTER_LOST_QMP_S,
    GRACE,
    OOM_KILL,
    SSH_GREETING_S,
    Fault,
    GuestFault,
    HealthWatch,
    console_view,
    exited_cause,
    file_tail,
    printable,
    ssh_greets,
)
from irqlab.vm.paramiko_import import paramiko
from irqlab.vm.qmp.errors import DeviceRejected, InjectionError, InvalidArgument, OutOfRange
from irqlab.vm.qmp.injector import DEVICE_ID, DEVICE_TYPE

if TYPE_CHECKING:
    from irqlab.build.arch import Arch
    from irqlab.build.boot import GuestImage
    from irqlab.build.qemu import QemuInstall
    from irqlab.vm.accel import AccelChoice
    from irqlab.vm.console import Console
    from irqlab.vm.machine import Machine
    from irqlab.vm.qmp.injector import Injector
from irqlab.vm.guestfile import check_put, put_command, put_failure
from irqlab.vm.loadscale import check_timeout
from irqlab.vm.ssh import (
    NO_LOCAL_PORT_S,
    CommandError,
    RemoteProcess,
    RemoteWriteError,
    RunResult,
    SshClient,
    SshError,
    SshTimeout,
    SshUnreachable,
    channel_files,
    file_mode,
    no_local_port,
)

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

# The errors a Guest's methods raise are importable from here, beside Guest (their
# homes: irqlab.errors, irqlab.vm.health, irqlab.vm.agent_client, irqlab.vm.ssh; its
# injector's, irqlab.vm.qmp.errors).
__all__ = [  # the public API (the README's); the harness's own helpers are imported by name
    "AGENT_LOG",
    "FAULT_VERDICT",
    "AgentError",
    "AgentFault",
    "AgentRefused",
    "AgentTimeout",
    "CommandError",
    "DeviceRejected",
    "Fault",
    "Guest",
    "GuestConfig",
    "GuestConfigError",
    "GuestError",
    "GuestFault",
    "GuestTimeout",
    "GuestWriteError",
    "InjectionError",
    "InvalidArgument",
    "IrqlabError",
    "ModuleLoadError",
    "OutOfRange",
    "PrerequisiteMissing",
    "RemoteWriteError",
    "RunResult",
    "SshError",
    "SshTimeout",
    "SshUnreachable",
    "UnusableModule",
    "ensure_snapshot",
    "find_kmod",
]

_T = TypeVar("_T")
log = logging.getLogger(__name__)
# how the start's phases (Guest.phases) are said in the log
PHASE_NAMES = {
    "console_ready": "console ready",
    "ssh": "ssh up",
    "module": "module loaded",
    "agent_ready": "agent ready",
    "restored": "snapshot restored",
    "reseeded": "RNG reseeded",
    "snapshot_saved": "snapshot saved",
    "extras": "extra files and modules installed",
}
EXTRA_DIR = "/root/irqlab-extra"  # where GuestConfig.extra_modules go in the guest
AGENT_PORT = 7707  # the agent daemon listens on the guest's loopback, reached by SSH forward
AGENT_LOG = "/run/irqlab-agent.log"  # the daemon's stderr in the guest
FAULT_VERDICT = 2.0  # s a broken connection waits for the health watch's verdict
# The signals the kernel kills a task with when it oopses under it (die()); a command
# they end waits this long for the watch's verdict on the console (an oops's verdict
# comes GRACE after its line), other signals (ABRT, TERM, ...) not at all.
KERNEL_KILLS = frozenset({"SEGV", "KILL"})
OOPS_VERDICT = GRACE + 0.6
CONSOLE_LAG = 0.2  # s the console may trail a command's end (another path to the host)
BOOT_PROGRESS_S = 30.0  # a cold boot still waiting for its ready marker says so this often
# s a module load or unload (modprobe, insmod, rmmod) may take before it is killed and
# said as a hang (a module's init or exit that never returns): the default of
# GuestConfig.module_load_timeout
KERNEL_STEP_TIMEOUT_S = 60.0
# The kernel lines a hung load's error shows at most (those since the load began)
HANG_KMSG_LINES = 40
# Before each stuck module command's stack in a hung load's probe output
HANG_PID_MARK = "--- irqlab: stuck pid"
HANG_KMSG_MARK = "--- irqlab: kernel log"
ALIVE_PROBE_S = 5.0  # s (x load) a guest has to answer a command after such a hang
STEP_GREET_EVERY = 1.0  # s between two looks at whether a starting guest's SSH greets
# s a broken SSH connection of a running QEMU waits for the watch's verdict before it is
# replaced (a killed QEMU's exit is seen a moment after the connection's reset: a tick)
RECONNECT_VERDICT = 0.5
_KERNEL_KILL_STATUSES = frozenset(signal_status(name) for name in KERNEL_KILLS)
HEARTBEAT_MS = 1000  # the agent's heartbeat period (the health watch's freeze detection)
SILENT_AGENT_S = 3 * HEARTBEAT_MS / 1000  # s without a heartbeat: no goodbye at close
SILENT_CLOSE_S = 0.2  # s such an agent's readers get to end, at close
# s without a heartbeat after which an agent wait that timed out waits for the verdict
SILENT_BEAT_S = 1.5 * HEARTBEAT_MS / 1000
CLOCK_BOOTS = 3  # cold boots a start makes at most for a guest whose clock runs right


class PrerequisiteMissing(IrqlabError, RuntimeError):
    """Something the guest needs was not built; the message says what and how."""


class UnusableModule(PrerequisiteMissing):
    """A module given to the guest (an extra module, ``$IRQLAB_KMOD``) cannot be loaded
    by it: not found, not a kernel module, built for another architecture or kernel.
    Raised before anything boots; a :class:`PrerequisiteMissing`, as before."""


class GuestError(IrqlabError, RuntimeError):
    """A guest could not do what was asked: it does not run (not started, closed, or
    restarted: take ``g.agent``/``g.injector`` again), a step of its start failed (the
    message names it), a command another thread's ``close()``/``restart()`` ended, a
    file :meth:`Guest.get` will not read.  The base of :class:`GuestTimeout`,
    :class:`GuestConfigError` and :class:`ModuleLoadError`."""


class GuestTimeout(GuestError, TimeoutError):
    """A wait of the guest's ran out of time: the boot's ready marker (boot_timeout), the
    agent's start, a device node, an unplug's DEVICE_DELETED; a TimeoutError too."""


class ModuleLoadError(GuestError, CommandError):
    """A kernel module did not load (or unload) in the guest; the message has the
    command's words and the kernel's messages meanwhile.  Also a :class:`CommandError`
    (an ``SshError``), what a failed modprobe raised before, with its ``result``."""

    def __init__(self, message: str, result: RunResult) -> None:
        RuntimeError.__init__(self, message)
        self.result = result


class GuestWriteError(GuestError, RemoteWriteError):
    """A file could not be written in the guest (``extra_files``, ``--put``, a module's
    copy); the message has the path and the guest's words.  Also a
    :class:`RemoteWriteError` (what :meth:`SshClient.put_bytes` raises) and so a
    :class:`CommandError` (an ``SshError``), what a failed copy raised before."""


# Between a failed command's stderr and the kernel's messages since it began.
KMSG_MARK = "--- irqlab: kernel messages since the command began"
# Before KMSG_MARK: which of the step's commands failed (its index).
STEP_MARK = "--- irqlab: failed command"
# The kernel lines a failed step's error shows at most (the last of those since it began)
STEP_KMSG_LINES = 40
# After KMSG_MARK: the step's own mark is gone from the kernel log (more came since it
# began than the log's ring holds), so what follows is the log's last lines
KMSG_WRAPPED = "--- irqlab: the kernel log wrapped since the command began"
# Written to the kernel log as a step script begins (then its pid and uptime): where
# the step's own kernel messages start.
STEP_KMSG_MARK = "irqlab-step-"
# The same mark of a step that loads the user's own modules (install_extras): where a
# test's own guest's log has their load and probe messages, though they came before
# its snapshot (a STEP_KMSG_MARK too: every filter of those leaves it out).
EXTRA_KMSG_MARK = STEP_KMSG_MARK + "extra-"


# The files of our driver whose holders keep it loaded: its nodes, UIO's, the gpio
# chip's and a gpio line request's (an anonymous inode).
HELD_NODES = ("/dev/irqlab", "/dev/uio", "/dev/gpiochip", "anon_inode:gpio")


def holders_of(ls_fds: str, prefixes: Sequence[str]) -> dict[int, list[str]]:
    """From ``ls -l /proc/[0-9]*/fd`` output: pid -> the files it has open whose path
    starts with one of *prefixes* (each once)."""
    held: dict[int, list[str]] = {}
    pid = None
    for line in ls_fds.splitlines():
        if line.startswith("/proc/") and line.endswith("/fd:"):
            pid = int(line.split("/")[2]) if line.split("/")[2].isdigit() else None
        elif pid is not None and " -> " in line:
            target = line.rpartition(" -> ")[2].strip()
            if target.startswith(tuple(prefixes)) and target not in held.get(pid, []):
                held.setdefault(pid, []).append(target)
    return held


def _shell_command(cmd: object) -> str:
    """*cmd* as a guest shell command: a str without NUL.  ``b"echo hi"`` ran the text
    ``b'echo hi'`` (exit 127), and ``"echo a\0b"`` ran ``echo a``: both said nothing."""
    if not isinstance(cmd, str):
        raise TypeError(f"a guest command is a str, not {type(cmd).__name__}: {cmd!r}")
    if "\0" in cmd:
        raise ValueError(
            f"a guest command cannot hold a NUL character (the shell ends it there): {cmd!r}"
        )
    return cmd


def _kernel_step(commands: Sequence[str], then: str = "", mark: str = STEP_KMSG_MARK) -> str:
    """A guest shell script running *commands* (modprobe, insmod, rmmod) in turn; at the
    first that fails, STEP_MARK and its index, then KMSG_MARK and the kernel's messages
    since the script began follow on stderr, and the script exits with its status; else
    *then* runs.  The start is a line of our own in the kernel's log (*mark*, then the
    script's pid and uptime; at debug level: not on the console), so a full ring buffer
    does not lose the messages; one the command's own messages overran (a module that
    logs more than the ring holds as it fails) has lost the mark: then KMSG_WRAPPED and
    the log's last lines follow (nothing did: the cause, its last lines, was lost)."""
    n = STEP_KMSG_LINES
    failed = (
        "rc=$?; if [ $rc -ne 0 ]; then echo {mark} {i} >&2; "
        f"echo {shlex.quote(KMSG_MARK)} >&2; "
        f"""if dmesg | grep -qF "$m"; then dmesg | sed -n "/$m/,\\$p" | tail -n +2 """
        f"| tail -n {n}; else echo {shlex.quote(KMSG_WRAPPED)}; dmesg | tail -n {n}; "
        "fi >&2; exit $rc; fi; "
    )
    steps = "".join(
        f"{c}; " + failed.format(mark=shlex.quote(STEP_MARK), i=i) for i, c in enumerate(commands)
    )
    return f'm="{mark}$$-$(cut -d" " -f1 /proc/uptime)"; echo "<7>$m" > /dev/kmsg; ' + steps + then


# What a hung module load's error shows, read over SSH once the step timed out: each
# module command still in the kernel (insmod, modprobe, rmmod: one in an uninterruptible
# sleep outlives the kill), its wchan and kernel stack, then the kernel log.
HANG_PROBE = (
    "for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null); case $c in "
    "insmod|modprobe|rmmod) "
    f'echo "{HANG_PID_MARK} ${{p#/proc/}} $(cat $p/wchan 2>/dev/null) '
    "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\"; "
    "cat $p/stack 2>&1;; esac; done; "
    f'echo "{HANG_KMSG_MARK}"; dmesg'
)


def hang_report(probe: str, what: str) -> tuple[str, str]:
    """From :data:`HANG_PROBE`'s output: where each module command still in the kernel
    waits (its pid, command line, wchan and kernel stack; a line saying none is left
    when none is; the step's own, a busybox applet with the step script's command
    line, as *what*, the command as the user gave it), and the kernel's messages since
    the last step began (since its :data:`STEP_KMSG_MARK`: the load's own, not the
    boot's), or the log's last lines when no step's mark is in it; each part ends
    with a newline."""
    head, _, kmsg = probe.partition(HANG_KMSG_MARK + "\n")
    stuck: list[str] = []
    for line in head.splitlines():
        if line.startswith(HANG_PID_MARK):
            pid, _, rest = line.removeprefix(HANG_PID_MARK).strip().partition(" ")
            wchan, _, cmd = rest.partition(" ")
            where = f", in {wchan}" if wchan and wchan != "0" else ""
            cmd = what if STEP_KMSG_MARK in cmd else cmd.strip()  # not our script
            stuck.append(f"  pid {pid} `{cmd}`{where}; its kernel stack:")
        elif stuck and line.strip():
            stuck.append(f"    {line.strip()}")
    stacks = (
        "where it waits in the kernel:\n" + "".join(f"{line}\n" for line in stuck)
        if stuck
        else "no insmod, modprobe or rmmod is left in the guest (killed: its stack is gone)\n"
    )
    return stacks, kernel_since_step(kmsg)


def kernel_since_step(kmsg: str) -> str:
    """The kernel's messages in *kmsg* (``dmesg``) since the last module step began (its
    :data:`STEP_KMSG_MARK`: the step's own lines, not the boot's), the last
    :data:`HANG_KMSG_LINES` of them, or the log's last 30 lines when no step's mark is in
    it; headed by which, the marks left out, ending with a newline."""
    lines = kmsg.splitlines()
    marks = [i for i, line in enumerate(lines) if STEP_KMSG_MARK in line]
    if marks:
        since = lines[marks[-1] + 1 :][-HANG_KMSG_LINES:]
        said = "kernel messages since it began"
    else:
        since = lines[-30:]
        said = "last kernel messages"
    text = "".join(f"{line}\n" for line in since if STEP_KMSG_MARK not in line)
    return f"{said}:\n" + (text or "(none)\n")


class GuestConfigError(GuestError, ConfigError):
    """The GuestConfig, or an environment variable a guest reads ($IRQLAB_ACCEL,
    $IRQLAB_ARCH, ...), asks for something its guest cannot take (a module parameter the
    module does not have, fewer than 1 vCPU); raised before anything boots."""


GUEST_SSH_PORT = 22
_HOSTFWD = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)")


def parse_usernet(text: str, guest_port: int) -> int | None:
    """The host port of the TCP forward to *guest_port* in HMP ``info usernet``."""
    for m in _HOSTFWD.finditer(text):
        if int(m[4]) == guest_port:
            return int(m[2])
    return None


def forwarded_port(machine: Machine, guest_port: int) -> int:
    """The host port QEMU's user networking bound for the forward to *guest_port*."""
    text = machine.qmp("human-monitor-command", {"command-line": "info usernet"})
    port = parse_usernet(str(text), guest_port)
    if port is None:
        raise GuestError(f"no host forward to guest port {guest_port} in:\n{text}")
    return port


def _prop_text(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def _option_value(v: Any) -> str:
    """*v* as a value in QEMU's option syntax, where ``,`` separates options: a comma
    of the value is doubled (``,,``), so that it reaches the property as it is."""
    from irqlab.build.boot import qemu_option_value

    return qemu_option_value(_prop_text(v))


# -device options the harness sets itself: a second one on the command line is either
# refused by QEMU or wins over ours, and the harness then looks for the device elsewhere
OWN_DEVICE_OPTIONS = {
    "id": "the device's id is GuestConfig(device_id=...)",
    "bus": "the device's bus is chosen by the harness (GuestConfig(hotplug=True) puts it "
    "behind a PCIe root port)",
    "driver": "the device's type is irqlab",
}


# What QEMU's -device takes of every PCI device besides the device's own properties
# (QEMU's pci_props, hw/pci/pci.c): not the irqlab device's, so not in its header.
PCI_DEVICE_PROPS = (
    "addr",
    "romfile",
    "romsize",
    "rombar",
    "multifunction",
    "failover_pair_id",
    "acpi-index",
    "x-pcie-lnksta-dllla",
    "x-pcie-extcap-init",
)


def unknown_device_prop(name: str) -> str | None:
    """Why *name* is no property of the irqlab device (None if it is one): the device's
    are its header's QOM names (:data:`QOM`'s ``PROP_*``) and every PCI device's.  A
    typo (``gpio_lines``, ``gpio-lnes``) was QEMU's "Property 'irqlab.gpio_lines' not
    found", after QEMU started."""
    own = list(QOM.with_prefix("PROP_").values())
    if name in own or name in PCI_DEVICE_PROPS:
        return None
    dashed = name.replace("_", "-")
    if dashed in own:
        hint = f" (did you mean {dashed!r}? its property names are spelled with '-')"
    else:
        close = difflib.get_close_matches(name, own, n=1)
        hint = f" (did you mean {close[0]!r}?{_not_at_start(close[0])})" if close else ""
    return (
        f"the irqlab device has no property {name!r}{hint}; {_start_props_text()}. "
        f"(Its runtime controls, {', '.join(props_when(AT_RUN))}, act on a running "
        f"device and its read-only {', '.join(props_when(NEVER))} are read from one: "
        "the injector sets or reads them after the start)"
    )


def _not_at_start(prop: str) -> str:
    """What to say of a suggested property *prop* that ``-device`` does not take."""
    if prop in props_when(AT_RUN):
        return " That is a runtime control: set it after the start, not on -device"
    if prop in props_when(NEVER):
        return " That is read-only: read it after the start"
    return ""


def _start_props_text() -> str:
    """The properties ``-device irqlab`` takes, as the messages name them."""
    return (
        f"-device takes its start-time properties {', '.join(props_when(AT_START))} "
        f"({Path(REGS.source).name} marks them {PREFIX}SET_{AT_START}) and every PCI "
        f"device's {', '.join(PCI_DEVICE_PROPS)}"
    )


def runtime_device_prop(name: str) -> str | None:
    """Why the irqlab device's property *name* cannot be given on ``-device`` (None if it
    can, or is none of its header's): the header marks it (``IRQLAB_PROP_<NAME>_WHEN``) a
    runtime control, which the device refuses before it runs ("acts on a running device;
    set it with qom-set after realize", once QEMU started), or read-only."""
    from irqlab.vm.qmp.injector import method_of

    when = REGS.prop_when.get(name)
    if when is None or when == AT_START:
        return None
    method = f"guest.injector.{method_of(name)}"
    if when == NEVER:
        return (
            f"a read-only property (read it after the start with the injector, e.g. {method}, "
            f"or qom-get); {_start_props_text()}"
        )
    return (
        "acts on a running device (a runtime control); set it after the start with the "
        f"injector (e.g. {method}) or qom-set; {_start_props_text()}"
    )


def check_device_props(props: Mapping[str, Any], what: str = "device_props key") -> None:
    """:class:`GuestConfigError` for a property name QEMU's option syntax cannot carry:
    empty, or with ``,`` or ``=`` (a value's comma can be escaped, a name's cannot),
    or that the irqlab device does not have (:func:`unknown_device_prop`) or takes only
    once it runs (:func:`runtime_device_prop`); and a value the device refuses for its
    start-time property (:func:`device_value_problem`); the message names it as *what*
    (e.g. the command-line option that gave it)."""
    for key in props:
        name = str(key)
        if not name:
            raise GuestConfigError(f"{what} {name!r}: a property name cannot be empty")
        if "," in name or "=" in name:
            raise GuestConfigError(
                f"{what} {name!r}: a property name cannot contain ',' or '=' "
                f"(QEMU's -device option syntax has no escape for them in a name)"
            )
        if name in OWN_DEVICE_OPTIONS:
            raise GuestConfigError(f"{what} {name!r}: {OWN_DEVICE_OPTIONS[name]}")
        why = (
            unknown_device_prop(name)
            or runtime_device_prop(name)
            or device_value_problem(name, props[key])
        )
        if why:  # QEMU refused each too, but after "booting the guest cold", as exit 1
            raise GuestConfigError(f"{what} {name!r}: {why}")


# The device's start-time properties that are counts, and their largest value (the
# header's): QEMU refuses the others at its start.
_PROP_LIMITS = {
    QOM.PROP_GPIO_LINES: REGS.MAX_GPIO_LINES,
    QOM.PROP_FIFO_DEPTH: REGS.MAX_FIFO_DEPTH,
    QOM.PROP_EVQ_DEPTH: REGS.MAX_EVQ_DEPTH,
}

# The words QEMU takes for a bool property's value on -device (qapi/qapi-util.c,
# qapi_bool_parse: exactly these, case and all); a Python bool goes as on/off.
QEMU_BOOL_WORDS = {"on": True, "yes": True, "true": True, "y": True,
                   "off": False, "no": False, "false": False, "n": False}  # fmt: skip


# The device's start-time properties that take one of a set of words, and the header's
# prefix of their names: irq-mode takes IRQLAB_IRQ_MODE_<MODE>'s <MODE> in lower case.
_PROP_CHOICES = {QOM.PROP_IRQ_MODE: "IRQ_MODE_"}


def device_choices(name: str) -> tuple[str, ...] | None:
    """The words the device's start-time property *name* takes (None: not such a
    property), from the header (:data:`_PROP_CHOICES`); the device compares them as they
    are (``MSIX`` is none of ``irq-mode``'s)."""
    prefix = _PROP_CHOICES.get(name)
    return None if prefix is None else tuple(m.lower() for m in REGS.with_prefix(prefix))


@cache
def _spec_types() -> dict[str, str]:
    """The "Type" column of the device's spec (:func:`irqlab.contract.spec.property_types`),
    read once per process."""
    from irqlab.contract.spec import property_types

    return property_types()


def device_value_problem(name: str, value: object) -> str | None:
    """Why the irqlab device refuses *value* for its start-time property *name* (None if
    it takes it, or *name* is none of its start-time properties): a count out of
    1..its maximum (:data:`_PROP_LIMITS`), a word not among its :func:`device_choices`, or,
    for a property the spec types ``bool``, neither a Python bool nor one of
    :data:`QEMU_BOOL_WORDS`.  Said with the values the property takes."""
    top = _PROP_LIMITS.get(name)
    if top is not None:
        if _in_range(value, top):
            return None
        return f"{value!r} is not a whole number 1..{top} (the device's limit, irqlab-regs.h)"
    words = device_choices(name)
    if words is not None:
        if isinstance(value, str) and value in words:
            return None
        return (
            f"{value!r} is not one of its values: {', '.join(words)} "
            f"(the header's {PREFIX}{_PROP_CHOICES[name]}*, {Path(REGS.source).name})"
        )
    if REGS.prop_when.get(name) == AT_START and _spec_types().get(name) == "bool":
        if isinstance(value, bool) or (isinstance(value, str) and value in QEMU_BOOL_WORDS):
            return None
        yes = ", ".join(w for w, b in QEMU_BOOL_WORDS.items() if b)
        no = ", ".join(w for w, b in QEMU_BOOL_WORDS.items() if not b)
        return (
            f"{value!r} is not a bool: it takes True or False, or QEMU's words for one: {yes}; {no}"
        )
    return None


def _in_range(value: object, top: int) -> bool:
    if isinstance(value, bool):
        return False
    try:
        n = int(str(value), 0)  # QEMU's integer syntax: 16, 0x10
    except ValueError:
        return False
    return 1 <= n <= top


def device_arg(device_id: str, props: Mapping[str, Any], bus: str | None = None) -> str:
    """``irqlab,id=<id>[,bus=<bus>],k=v,...`` for ``-device`` (booleans as on/off), each
    value one option's value whatever its commas (:func:`check_device_props` first)."""
    check_device_props(props)
    parts = [DEVICE_TYPE, f"id={_option_value(device_id)}"]
    parts += [f"bus={_option_value(bus)}"] if bus else []
    parts += [f"{k}={_option_value(v)}" for k, v in props.items()]
    return ",".join(parts)


HOTPLUG_PORT = "irqlab-rp0"  # the PCIe root port our device sits behind with hotplug=True


def image_kind() -> str:
    """Which guest image to boot: $IRQLAB_IMAGE, ``debian`` (default) or ``buildroot``
    (:func:`irqlab.build.imagekind.image_kind`); GuestConfigError for another."""
    try:
        return imagekind.image_kind()
    except imagekind.UnknownImageKind as e:
        raise GuestConfigError(str(e)) from None


def ko_module_name(ko: bytes) -> str | None:
    """The module name a .ko declares (``name=`` in its .modinfo), or None."""
    m = re.search(rb"(?:^|\0)name=([^\0]+)\0", ko)
    return m.group(1).decode(errors="replace") if m else None


def check_module_arch(ko: Path, arch: Arch, what: str) -> None:
    """Refuse, before anything boots, a module *ko* built for another architecture than
    the guest's *arch*, saying how to build it for the guest."""
    from irqlab.build.arch import ARCHES
    from irqlab.build.elf import ElfError, elf_machine

    try:
        with ko.open("rb") as f:
            machine = elf_machine(f.read(64))
    except FileNotFoundError as e:
        spec = " " in ko.name and "=" in ko.name  # "mydrv.ko tag=x": the CLI's, the marker's
        hint = (
            " (a file and its parameters, as --module and the marker's modules= take them? "
            "Here the parameters go in GuestConfig(extra_module_params={name: {...}}))"
        )
        raise UnusableModule(f"{what} not found: {ko.absolute()}{hint if spec else ''}") from e
    except (OSError, ElfError) as e:
        raise UnusableModule(f"{what} {ko} is not a kernel module: {e}") from e
    if machine == arch.elf_machine:
        return
    built = next((a.name for a in ARCHES.values() if a.elf_machine == machine), None)
    raise UnusableModule(
        f"{what} {ko} is built for {built or f'ELF machine {machine}'}, but the guest is "
        f"{arch.name}: build it against the {arch.name} guest's kernel with "
        f"`{build_module_command(arch.name)}`"
    )


# How a module is built against the Debian x86_64 guest's kernel
BUILD_MODULE = build_module_command()


def check_module_kernel(ko: Path, image: GuestImage, what: str) -> None:
    """Refuse, before anything boots, a module *ko* built for another kernel than the
    guest *image*'s (``uname -r``; the first word of the module's ``vermagic``): the
    guest's insmod would say only "invalid module format", after a boot."""
    from irqlab.build.elf import ElfError, module_vermagic

    release = image.kernel_version
    try:
        built = module_vermagic(ko.read_bytes())
    except (OSError, ElfError):
        return  # named by the architecture check, which reads the file first
    if built is None or not release or built == release:
        return
    if image_kind() == "buildroot":  # `irqlab kdir` gives the Debian image's headers
        tree = image.kernel_artifacts.headers_build_dir
        how = f"make -C {tree} M=$PWD modules, with Buildroot's toolchain"
    else:
        how = build_module_command(image.arch)
    raise UnusableModule(
        f"{what} {ko} is built for kernel {built}, but the guest runs {release}: "
        f"build it against the guest's kernel with `{how}`"
    )


def irqlab_device_alias(ko: Path) -> str | None:
    """The ``pci:`` alias of module *ko* that names the irqlab PCI device by its vendor
    and device ids (``PCI_DEVICE(0x1234, 0x11ec)``: ``pci:v00001234d000011ECsv*...``),
    or None (none does; a class-wide alias, any vendor and device, is not one; a file
    that is not a readable module: its own checks say so)."""
    import fnmatch

    from irqlab.build.elf import ElfError, modinfo

    try:
        entries = modinfo(ko.read_bytes())
    except (OSError, ElfError):
        return None
    ids = (f"{REGS.PCI_VENDOR_ID:08X}", f"{REGS.PCI_DEVICE_ID:08X}")
    for key, alias in entries:
        m = re.match(r"pci:v([0-9A-F*]+)d([0-9A-F*]+)", alias) if key == "alias" else None
        if m is None or m.groups() == ("*", "*"):
            continue
        if all(fnmatch.fnmatchcase(i, pattern) for i, pattern in zip(ids, m.groups(), strict=True)):
            return alias
    return None


# (module path, alias) of each extra module said to be a driver of our device by this
# process: once (a guest of its own for each of a session's tests said it at each test)
_DEVICE_TAKEN_SAID: set[tuple[str, str]] = set()

IMPLICIT_MODULE_PARAMS = frozenset({"dyndbg", "async_probe"})


def param_key(name: object) -> str:
    """A module parameter's name as the kernel matches it: ``-`` and ``_`` are the same
    character there (kernel/params.c ``parameq``)."""
    return str(name).replace("-", "_")


def kstrtobool(text: str) -> bool | None:
    """*text* as the kernel's ``kstrtobool`` reads it: its first character (1yYtT,
    0nNfF) or on/of(f); None for what the kernel refuses."""
    if text[:1] in ("1", "y", "Y", "t", "T") or text[:2].lower() == "on":
        return True
    if text[:1] in ("0", "n", "N", "f", "F") or text[:2].lower() == "of":
        return False
    return None


def kernel_bool(value: object) -> bool:
    """A bool module parameter's value as the kernel reads it (``kstrtobool``): set for
    a bare name (None), True, 1, y, Y, t, T, on; anything else unset."""
    if value is None or value is True:
        return True
    return kstrtobool(str(value)) is True


# The kernel's integer parameter types (a .ko's parmtype=) and the values each takes: its
# param_set_<type> reads them with kstrto<type>(value, 0) (both guests are 64-bit).
KERNEL_INT_RANGES = {
    "byte": (0, 2**8 - 1),
    "short": (-(2**15), 2**15 - 1),
    "ushort": (0, 2**16 - 1),
    "int": (-(2**31), 2**31 - 1),
    "uint": (0, 2**32 - 1),
    "hexint": (0, 2**32 - 1),
    "long": (-(2**63), 2**63 - 1),
    "ulong": (0, 2**64 - 1),
    "ullong": (0, 2**64 - 1),
}
# kstrto*'s base 0: 0x hex, 0 octal, else decimal; one trailing newline is allowed
_KERNEL_INT = re.compile(r"(?:(0[xX][0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))\n?")
KERNEL_BOOL_WORDS = "1, y, t or on; 0, n, f or off"  # what kstrtobool takes


def kernel_int(text: str, signed: bool) -> int | None:
    """*text* as the kernel's ``kstrtoll``/``kstrtoull`` (base 0) read it: None where
    they refuse it (a ``+`` sign, or a ``-`` if *signed*, then 0x hex, 0 octal or
    decimal digits; the range is the caller's)."""
    sign = 1
    if signed and text.startswith("-"):
        sign, text = -1, text[1:]
    elif text.startswith("+"):
        text = text[1:]
    m = _KERNEL_INT.fullmatch(text)
    if m is None:
        return None
    hexa, octal, decimal = m.groups()
    return sign * (int(hexa, 16) if hexa else int(octal, 8) if octal else int(decimal))


def param_value_problem(kind: str, value: object) -> str | None:
    """Why the kernel would refuse *value* for a module parameter of type *kind* (its
    .modinfo ``parmtype``; ``array of T``: each comma-separated T), or None: it takes
    it, or the type says nothing (charp, string, a parameter with its own ops)."""
    if value is None:  # a bare name: a bool's, said by the caller otherwise
        return None
    text = str(value)
    element = kind.removeprefix("array of ")
    if element != kind:
        problems = (param_value_problem(element, v) for v in text.split(","))
        return next((p for p in problems if p), None)
    if kind in ("bool", "invbool"):  # kstrtobool: the first character, or on/off
        if kstrtobool(text) is not None:
            return None
        return f"{text!r} is not a bool (the kernel takes {KERNEL_BOOL_WORDS})"
    if kind not in KERNEL_INT_RANGES:
        return None
    low, high = KERNEL_INT_RANGES[kind]
    number = kernel_int(text, signed=low < 0)
    if number is None:
        sign = "" if low < 0 else "unsigned "
        return f"{text!r} is not an {sign}integer (decimal, 0x hex or 0 octal)"
    if not low <= number <= high:
        return f"{text} is out of range for {kind} ({low} to {high})"
    return None


def described_choices(description: str) -> tuple[str, ...] | None:
    """The values a parameter takes as its description lists them after a colon, each
    a word, the list's asides in parentheses: ``"where readers are woken: hardirq
    (default), thread (threaded IRQ) or workqueue"`` -> hardirq, thread, workqueue;
    None for a description that is no such list."""
    _, colon, listed = description.partition(": ")
    words = [w.strip() for w in re.split(r",|\bor\b", re.sub(r"\([^()]*\)", "", listed))]
    if not colon or len(words) < 2:
        return None
    return tuple(words) if all(re.fullmatch(r"[a-z][a-z0-9_-]*", w) for w in words) else None


def check_driver_choices(ko: Path, params: Mapping[str, Any]) -> None:
    """Our driver's parameters that take one of a few names (their own ops: no
    ``parmtype``, e.g. ``wakeup``, ``irq_mode``) against the names their ``.modinfo``
    descriptions list (:func:`described_choices`), before anything boots: the driver
    refused another only at its load, after a boot."""
    from irqlab.build.elf import ElfError, modinfo

    try:
        entries = modinfo(ko.read_bytes())
    except (OSError, ElfError):
        return  # check_module_params says so
    typed = {param_key(v.partition(":")[0]) for k, v in entries if k == "parmtype"}
    choices = {
        param_key(name): described_choices(text)
        for name, _, text in (v.partition(":") for k, v in entries if k == "parm")
        if param_key(name) not in typed
    }
    for name, value in params.items():
        names = choices.get(param_key(name))
        if not names:
            continue
        if value is None:  # a bare name: the kernel's -EINVAL
            raise GuestConfigError(
                f"parameter {name} of {ko.name} needs a value: one of {', '.join(names)}"
            )
        if str(value).removesuffix("\n") not in names:
            raise GuestConfigError(
                f"parameter {name} of {ko.name}: {str(value)!r} is none of {', '.join(names)}"
            )


def extra_device_problem(spec: object) -> str | None:
    """What is wrong with *spec* as one of :attr:`GuestConfig.extra_devices` (a QEMU
    ``-device`` spec), or None.  QEMU judges the rest (an unknown device or property is
    its error at the start, in its words)."""
    if not isinstance(spec, str) or not spec.strip():
        return "give a -device spec as QEMU takes it, e.g. 'edu' or 'edu,id=edu0'"
    if spec.startswith("-") or any(c in spec for c in "\n\r\0"):
        return "one -device spec, without the option itself or line breaks"
    driver = spec.split(",", 1)[0]
    if driver in (DEVICE_TYPE, "help") or driver.endswith("=help"):
        return (
            "the irqlab device is the guest's own: set its properties with device_props"
            if driver == DEVICE_TYPE
            else "`qemu-system-x86_64 -device help` lists the devices"
        )
    return None


def device_gpio_lines(props: Mapping[str, Any]) -> int:
    """How many GPIO lines a device of the properties *props* has: its gpio-lines, else
    the device's default, the register contract's maximum (also for a value QEMU will
    refuse, in its own words)."""
    given = props.get(QOM.PROP_GPIO_LINES)
    if given is None:
        return REGS.MAX_GPIO_LINES
    try:
        return int(str(given), 0)
    except ValueError:
        return REGS.MAX_GPIO_LINES


def kernel_param(name: object, value: object) -> str:
    """``name=value`` as one shell word for insmod/modprobe, in the kernel's syntax: a
    value with blanks in double quotes (BusyBox joins its arguments with spaces and the
    kernel splits them there, so ``v='5 7'`` set ``5`` and ignored ``7``); a value with a
    double quote has no spelling the kernel takes (GuestConfigError)."""
    if value is None:  # a bare name, as insmod takes a bool parameter: set
        return shlex.quote(str(name))
    text = str(value)
    if '"' in text:
        raise GuestConfigError(f"module parameter {name}={text!r}: a double quote cannot be passed")
    word = f'{name}="{text}"' if any(c.isspace() for c in text) else f"{name}={text}"
    return shlex.quote(word)


def parse_module_spec(
    text: str, locate: Callable[[str], Path] = Path
) -> tuple[str, dict[str, str | None]]:
    """``"mydrv.ko tag=x mode=1 verbose"`` (as insmod takes it; shell quoting) -> the
    file and its parameters (None for a bare name: a bool parameter, set); ValueError
    saying what is wrong.  A *text* that names an existing file as it stands (a path
    with a blank, a backslash) is that file, no parameters; *locate* finds a file by
    its name (default: a relative name is relative to the current directory)."""
    if locate(text).is_file():
        return text, {}
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if not words:
        raise ValueError("an empty module: give KO [PARAM=VALUE ...]")
    params: dict[str, str | None] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not key:
            raise ValueError(f"{text!r}: {word!r} is not PARAM=VALUE (KO [PARAM=VALUE ...])")
        # the kernel takes the last and says nothing: a typo for another parameter?
        same = [k for k in params if param_key(k) == param_key(key)]
        if same:
            raise ValueError(f"{text!r}: parameter {key} given twice (once is enough)")
        params[key] = value if sep else None
    return words[0], params


def module_specs(
    specs: Iterable[object], locate: Callable[[Any], Path] = Path
) -> tuple[list[Path], dict[str, dict[str, str | None]]]:
    """Modules as insmod takes them, each a .ko path or ``"KO PARAM=VALUE ..."``
    (:func:`parse_module_spec`; a path object is a path) -> the files and their
    parameters by module name (GuestConfig's ``extra_modules``,
    ``extra_module_params``).  *locate* turns what a spec names into the file (default:
    relative to the current directory); whether each is one is the caller's to say.
    ValueError for a spec that is none."""
    from irqlab.build.kernel import module_name

    files: list[Path] = []
    params: dict[str, dict[str, str | None]] = {}
    for spec in specs:
        name, given = parse_module_spec(spec, locate) if isinstance(spec, str) else (spec, {})
        path = locate(name)
        files.append(path)
        if given:
            params[module_name(path.name)] = given
    return files, params


def check_module_params(ko: Path, params: Mapping[str, Any]) -> None:
    """Refuse, before anything boots, parameters *params* that the module *ko* does not
    declare (its .modinfo ``parm``/``parmtype`` entries, as ``modinfo -p`` lists them):
    the kernel would only log "unknown parameter ... ignored"; and values the kernel
    would refuse for a parameter's type (:func:`param_value_problem`)."""
    from irqlab.build.elf import ElfError, module_parameters

    if not params:
        return
    try:
        declared = module_parameters(ko.read_bytes())
    except (OSError, ElfError) as e:
        raise PrerequisiteMissing(f"cannot read the parameters of {ko}: {e}") from e
    # the kernel takes - and _ in a parameter's name as the same character, and every
    # module has dyndbg and async_probe without a .modinfo entry (kernel/params.c,
    # kernel/module/main.c)
    known = {param_key(n) for n in declared} | IMPLICIT_MODULE_PARAMS
    unknown = sorted(n for n in params if param_key(n) not in known)
    if not unknown:
        types = {param_key(n): t for n, t in declared.items()}
        for name, value in params.items():
            kind = types.get(param_key(name), "")
            if value is None and kind not in ("bool", "invbool", ""):
                raise GuestConfigError(
                    f"parameter {name} of {ko.name} ({kind}) needs a value: {name}=VALUE "
                    "(a bare name sets a bool parameter only)"
                )
            problem = param_value_problem(kind, value)
            if problem:  # the kernel refused it only after a boot
                raise GuestConfigError(f"parameter {name} of {ko.name} ({kind}): {problem}")
        return
    valid = ", ".join(f"{n} ({t})" if t else n for n, t in sorted(declared.items()))
    raise GuestConfigError(
        f"unknown parameter{'s' if len(unknown) > 1 else ''} of {ko.name}: "
        f"{', '.join(unknown)}; its parameters are: {valid or '(none)'}"
    )


def find_kmod(arch: Arch | None = None) -> Path:
    """The driver .ko for a guest of *arch* (default x86_64): $IRQLAB_KMOD (a build of
    *our* driver), else the module recipe (irqlab.build.kmod) against that
    architecture's kernel.  A module of another name or another architecture in
    $IRQLAB_KMOD is refused at once: the harness's device nodes (/dev/irqlab0) come only
    from the irqlab driver; your own modules go in ``GuestConfig(extra_modules=...)``."""
    env = env_kmod(arch)
    if env is not None:
        return env
    try:
        from irqlab.build import kmod  # type: ignore[attr-defined,unused-ignore]
    except ImportError as e:
        raise PrerequisiteMissing(
            f"no kernel module: set $IRQLAB_KMOD or add the module recipe ({e})"
        ) from e
    try:
        if arch is None or arch.name == "x86_64":
            return Path(kmod.ensure_kmod())
        from irqlab.build.kernel import ensure_kernel

        return Path(kmod.ensure_kmod(kernel=ensure_kernel(arch=arch)))
    except (IrqlabError, OSError, subprocess.CalledProcessError) as e:
        raise PrerequisiteMissing(f"the irqlab kernel module cannot be built: {e}") from e


def env_kmod(arch: Arch | None = None) -> Path | None:
    """$IRQLAB_KMOD checked (a build of our driver for *arch*, default x86_64), or None."""
    from irqlab.build.arch import X86_64

    env = os.environ.get("IRQLAB_KMOD")
    if env:
        if not Path(env).is_file():
            raise PrerequisiteMissing(f"$IRQLAB_KMOD={env} does not exist")
        # first: a file that is no kernel module at all is said so
        check_module_arch(Path(env), arch or X86_64, "$IRQLAB_KMOD")
        name = ko_module_name(Path(env).read_bytes())
        if name != "irqlab":
            what = f"the module {name!r}" if name else "a module without a name"
            raise PrerequisiteMissing(
                f"$IRQLAB_KMOD={env} is {what}, not a build of the irqlab "
                "driver (IRQLAB_KMOD replaces our driver, whose /dev/irqlab0 the harness "
                "uses); load your own module with GuestConfig(extra_modules=[...], "
                "load_irqlab=False), `irqlab shell --module FILE` or `irqlab run --module "
                "FILE`, and unset IRQLAB_KMOD"
            )
        return Path(env)
    return None


def host_cpu_model() -> str:
    """The host CPU's model name and flags (what ``-cpu host`` hands the guest)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    first_cpu = text.split("\n\n", 1)[0].splitlines()
    fields = {k.strip(): v for k, v in (ln.split(":", 1) for ln in first_cpu if ":" in ln)}
    return " ".join(fields.get(k, "").strip() for k in ("model name", "flags"))


@dataclass
class GuestConfig:
    """How a :class:`Guest` is made: ``Guest(GuestConfig(smp=2, module_params=...))``.
    Every value is checked when the config is made (:class:`GuestConfigError`), but
    the modules' parameters (``module_params``, ``extra_module_params``): they are
    checked against the built ``.ko`` files, when the guest prepares, before anything
    boots.

    Fields (the comments in the source and the README's table say more):

    * ``name`` ("guest"): names the guest's log directory.
    * ``device_props`` ({}): properties of the irqlab device (``-device irqlab,...``).
    * ``device_id`` ("irqlab0"): the device's QEMU id.
    * ``module_params`` ({}): our driver's parameters, checked against its .modinfo.
    * ``load_irqlab`` (True): False leaves the device unbound for a driver of your own.
    * ``extra_modules`` (()), ``extra_module_params`` ({}): your own .ko files,
      insmod-ed in order after ours, and their parameters by module name.
    * ``kernel_modules`` (()): more of the guest kernel's modules shipped in the image.
    * ``extra_files`` ({}): ``{absolute guest path: local file}``, put before
      ``extra_modules`` load (and then in the snapshot and its key); without extra
      modules, once the guest is ready (not in the snapshot: a file changed costs no
      cold boot).
    * ``extra_packages`` (()): Debian packages added to the image (e.g. rt-tests).
    * ``smp`` (1): vCPUs.
    * ``arch`` (""): "x86_64" or "aarch64" ("": $IRQLAB_ARCH, default x86_64).
    * ``hotplug`` (False): the device behind a PCIe root port (unplug/replug).
    * ``extra_devices`` (()): more QEMU devices, ``-device`` specs (``"edu"``,
      ``"edu,id=edu0"``), for a driver of another device; such a guest cold-boots.
    * ``snapshot`` (True), ``snapshot_tag`` (""): start from (and save) the
      ready-state snapshot; guests with another tag never share one.
    * ``boot_timeout`` (180), ``ssh_timeout`` (60), ``agent_timeout`` (60),
      ``restore_timeout`` (60): seconds each step of a start may take.
    * ``freeze_timeout`` (10): seconds without an agent heartbeat before the guest is
      declared frozen (stretched by the host's load; None: never).
    * ``module_load_timeout`` (60): seconds a module's load or unload (insmod,
      modprobe, rmmod: yours and ours) may take before it is said as a hang, with
      where the command waits in the kernel.
    * ``log_dir`` (None): where the guest's run directory goes (default: the log
      directory; under pytest, the running test's: :mod:`irqlab.vm.logplace`).
    * ``qmp_socket`` (None): a second QMP monitor on this unix socket (qmp-shell,
      ``irqlab inject``).
    """

    device_id: str = DEVICE_ID
    # Properties of the irqlab device (-device irqlab,...): each value reaches QEMU as it
    # is, commas included; a name with ',' or '=' is refused (GuestConfigError).
    device_props: dict[str, Any] = field(default_factory=dict)
    module_params: dict[str, Any] = field(default_factory=dict)
    smp: int = 1
    boot_timeout: float = 180.0
    ssh_timeout: float = 60.0
    agent_timeout: float = 60.0
    name: str = "guest"
    # Debian packages added to the image besides DEFAULT_EXTRA_PACKAGES (e.g. rt-tests).
    extra_packages: tuple[str, ...] = ()
    # Start from the ready-state snapshot for this configuration when one exists (and
    # save one after a cold boot when none does); False always cold-boots.
    snapshot: bool = True
    # Extra text in the snapshot's key: guests with another tag never share a snapshot.
    snapshot_tag: str = ""
    restore_timeout: float = 60.0
    # The guest is declared frozen after this long without an agent heartbeat (None:
    # never; e.g. for storms that saturate the vCPU on purpose).
    freeze_timeout: float | None = 10.0
    # s a module load or unload may take before it is said as a hang (an init or exit
    # that never returns), with the kernel stack it waits in: a driver's own init that
    # waits in a loop cost the whole 60 s, whatever the test's need
    module_load_timeout: float = KERNEL_STEP_TIMEOUT_S
    # Put the device behind a PCIe root port so it can be unplugged and plugged back
    # (Guest.unplug/replug); the default q35 root bus does not hotplug.
    hotplug: bool = False
    # Where this guest's run directory (QEMU, console, agent logs) goes; default: the
    # log directory (irqlab.paths.log_dir()).
    log_dir: Path | None = None
    # Your own kernel modules (.ko built with `make -C $(irqlab kdir) M=$PWD`): copied to
    # EXTRA_DIR in the guest and insmod-ed in this order, after our driver (when
    # load_irqlab) so that ours has bound the device first.  Dependencies on modules of
    # the guest kernel (the .ko's depends=) are shipped in the image and modprobe-d first.
    extra_modules: Sequence[Path | str] = ()
    # Parameters for those modules, by module name (the .ko's name, - as _): insmod
    # mydrv.ko tag=x is {"mydrv": {"tag": "x"}}; checked against each .ko's .modinfo.
    extra_module_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # More of the guest kernel's own modules to ship in the image (with their
    # dependencies), for a test to modprobe; the image has only those it boots with,
    # our driver's and the extra modules' dependencies otherwise.  Debian image only.
    kernel_modules: tuple[str, ...] = ()
    # Files to put into the guest: {absolute guest path: local file}, before the modules
    # load (mode kept).
    extra_files: Mapping[str, Path | str] = field(default_factory=dict)
    # Load our driver (irqlab.ko with module_params); False leaves the device unbound
    # for a driver of your own.
    load_irqlab: bool = True
    # A second QMP monitor QEMU listens on (a unix socket path) for qmp-shell or
    # `irqlab inject` while the guest runs; not part of the saved state.
    qmp_socket: Path | None = None
    # Guest architecture (irqlab.build.arch): "x86_64" or "aarch64"; "" means
    # $IRQLAB_ARCH, default x86_64.  aarch64 needs IRQLAB_ARCHES=x86_64,aarch64 builds.
    arch: str = ""
    # More QEMU devices for a driver of your own, each a -device spec as QEMU takes it
    # ("edu", "edu,id=edu0,dma_mask=0xffffffff"; `qemu-system-x86_64 -device help` of
    # the build lists them).  A guest with any always cold-boots: a device of QEMU's
    # own need not keep its state in a saved VM (edu keeps none, not even its BARs).
    extra_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Check every value (:class:`GuestConfigError`), as when the config was made:
        a plain dataclass, it may have been changed since (``cfg.smp = 0`` booted a
        guest with ``-smp 0`` and saved its snapshot; ``cfg.name = "../x"`` put its logs
        outside the log directory).  :meth:`Guest.prepare` calls it."""
        self._check_shapes()
        self._check_guest_paths()
        self._absolute_local_paths()
        # a run directory is named after the guest: "../x" wrote it outside the log
        # directory, "a/b" nested it, "" gave a name starting with "-"
        if not isinstance(self.name, str) or not re.fullmatch(r"[\w][\w.+-]*", self.name):
            raise GuestConfigError(
                f"GuestConfig(name={self.name!r}): letters, digits and _ . + - only, "
                "not starting with . + or - (it names the guest's log directory)"
            )
        # a str path ended in a TypeError at start() ("unsupported operand ... / ...")
        for name in ("log_dir", "qmp_socket"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, Path(value))
            elif value is not None and not isinstance(value, Path):
                raise GuestConfigError(f"GuestConfig({name}={value!r}): give a path")
        check_device_props(self.device_props)
        self.extra_devices = tuple(self.extra_devices)
        for spec in self.extra_devices:
            problem = extra_device_problem(spec)
            if problem:
                raise GuestConfigError(f"GuestConfig(extra_devices=[{spec!r}]): {problem}")
        # QEMU takes -smp 0 as its default (1 vCPU): refused rather than silently changed
        if isinstance(self.smp, bool) or not isinstance(self.smp, int) or self.smp < 1:
            raise GuestConfigError(
                f"GuestConfig(smp={self.smp!r}): the number of vCPUs must be an integer >= 1"
            )
        # A wait of 0 s (or NaN) failed its first step with a message about that step
        # ("the reseed port did not answer"), not about the setting
        limits = [
            "boot_timeout",
            "ssh_timeout",
            "agent_timeout",
            "restore_timeout",
            "module_load_timeout",
        ]
        for name in [*limits, *(["freeze_timeout"] if self.freeze_timeout is not None else [])]:
            try:
                check_timeout(getattr(self, name), f"GuestConfig.{name}")
            except (TypeError, ValueError) as e:
                off = " (None turns the freeze watch off)" if name == "freeze_timeout" else ""
                raise GuestConfigError(f"{e}{off}") from None

    def _check_guest_paths(self) -> None:
        """extra_files' guest paths, before anything boots: absolute, and not in a
        filesystem of the kernel's (/proc, /sys), where no file can be made: such a
        copy failed only after a cold boot (the path is part of the snapshot's key)."""
        for remote in self.extra_files:
            problem = guest_file_problem(str(remote))
            if problem:
                raise GuestConfigError(f"extra_files: {problem}")

    def _absolute_local_paths(self) -> None:
        """Relative local paths (``extra_modules``, ``extra_files``' local files) are the
        current directory's when the config is made: they were taken when the guest
        started, so a script that changed directory in between (to run make, say) got
        "extra module not found: /elsewhere/mydrv.ko"."""
        here = Path.cwd()

        def absolute(p: Path | str) -> Path | str:
            if Path(p).is_absolute():
                return p
            return here / p if isinstance(p, Path) else str(here / p)

        if any(not Path(m).is_absolute() for m in self.extra_modules):
            mods = [absolute(m) for m in self.extra_modules]
            self.extra_modules = tuple(mods) if isinstance(self.extra_modules, tuple) else mods
        if any(not Path(f).is_absolute() for f in self.extra_files.values()):
            self.extra_files = {g: absolute(f) for g, f in self.extra_files.items()}

    def _check_shapes(self) -> None:
        """A string where a list belongs was taken a character at a time ("extra module
        not found: m", "no module named 7, c, r"), and a list where a mapping belongs
        ended in an AttributeError: each is refused here, naming the setting."""
        for name in ("extra_modules", "kernel_modules", "extra_packages", "extra_devices"):
            value = getattr(self, name)
            if isinstance(value, str | bytes | Path) or not isinstance(value, Iterable):
                raise GuestConfigError(
                    f"GuestConfig({name}={value!r}): give a list (one item: [{value!r}])"
                )
        for name in ("device_props", "module_params", "extra_files", "extra_module_params"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise GuestConfigError(f"GuestConfig({name}={value!r}): give a dict")
        for module, params in self.extra_module_params.items():
            if not isinstance(params, Mapping):
                raise GuestConfigError(
                    f"GuestConfig(extra_module_params={{{module!r}: {params!r}}}): each "
                    f"module's parameters are a dict, e.g. {{{module!r}: {{'tag': 'x'}}}}"
                )


def _agent_stale(agent: AgentClient) -> bool:
    """Whether :attr:`Guest.agent` must start a new session instead of *agent*: it
    ended, or a request's wait in it was interrupted."""
    return agent.eof or agent.interrupted is not None


def guest_file_problem(where: str) -> str | None:
    """Why no file can be put at the guest path *where* (None: it can): not absolute, a
    directory's (ending in /), or in a filesystem of the kernel's (/proc, /sys)."""
    if not posixpath.isabs(where):
        return f"guest path {where!r} is not absolute"
    if where.endswith("/"):
        return f"guest path {where!r} names a directory, not a file"
    top = posixpath.normpath(where).lstrip("/").split("/")[0]  # "//proc/x" too
    if top in ("proc", "sys"):
        return (
            f"{where}: no file can be made under /{top} (the kernel's own files; write "
            "to them with g.sh once the guest runs)"
        )
    return None


_PROBE_FAILED = re.compile(r"fail|error|no interrupt|cannot|unable|-E[A-Z]{3,}|not supported", re.I)


def probe_failure(kmsg: str, driver: str) -> str | None:
    """The first kernel line of *kmsg* in which *driver*, about a device, says why it
    did not bind (its own words, ``irqlab 0000:00:04.0: no interrupt of type msi``,
    come before the core's ``irqlab: probe of ... failed with error -22``), or None."""
    device = re.compile(rf"^{re.escape(driver)}(?: [0-9a-f]{{4}}:[0-9a-f:.]+:|: probe of )")
    lines = kmsg.splitlines()
    # after this step's mark in the log (STEP_SCRIPT writes one): not an earlier load's
    marks = [i for i, line in enumerate(lines) if STEP_KMSG_MARK in line]
    for line in lines[marks[-1] + 1 :] if marks else lines:
        text = line.split("] ", 1)[-1].strip()  # without the timestamp
        if device.match(text) and _PROBE_FAILED.search(text):
            return text
    return None


def _by_signal(status: int) -> bool:
    """Whether a guest command's exit status is a signal's (128 + N, as the shell says
    it): SIGKILL, or SIGSEGV from die() on x86's BUG() when the kernel oopsed under it."""
    return status >= 128


@dataclass
class _StartTicket:
    """One running :meth:`Guest.start`: its thread, and whether another thread's
    :meth:`Guest.close` came since it began."""

    thread: int
    closed: bool = False
    # the health watch's verdict when the close came: the guest's doing, not the
    # close's (one after it is the close's: QEMU quit, "exited with status 0")
    fault: Fault | None = None
    # the start's prepare runs in it: the close cancels it, which ends the command it
    # runs (apt-cache, make: their process group) and its lock's wait at once
    scope: cancel.Scope = field(default_factory=cancel.Scope)


class Guest:
    """Boot with :meth:`start` (or ``with Guest(...) as g``); stop with :meth:`close`.

    :attr:`phases` has the boot's milestones, in seconds from QEMU's start (host
    monotonic clock): ``console_ready`` (the image's readiness marker on the serial
    console: dropbear listens), ``ssh`` (authenticated session), ``module``
    (modprobe done, /dev/irqlab0 present) and ``agent_ready`` (the agent's hello
    arrived and the module is loaded: the agent starts while the module loads).
    Finding or building the image and the accelerator probe are not included.

    With ``config.snapshot`` (the default) a guest starts from the ready-state
    snapshot of its configuration (:mod:`irqlab.vm.snapshot`) when there is one:
    :attr:`restored` is then True and the phases are ``restored`` (QEMU loaded the
    state), ``reseeded`` (the guest's RNG took a fresh seed), ``ssh`` and
    ``agent_ready``.  When there is none, the guest cold-boots,
    saves the snapshot once ready (phase ``snapshot_saved``) and runs on; with modules
    of the user's (``extra_modules``), the snapshot of the same guest without them is
    restored instead if there is one, they are installed (phase ``extras``) and the
    result saved (a rebuilt module costs no cold boot).  A
    snapshot that fails to load is reported in :attr:`snapshot_error` (naming the
    file), removed, and replaced by a cold boot.  The agent runs as a daemon in the
    guest and is reached through an SSH port forward, so a restored guest needs no
    connection of the process that saved it.
    """

    def __init__(self, config: GuestConfig | None = None, **misplaced: Never) -> None:
        if misplaced:  # Guest(smp=2): a bare "unexpected keyword argument" said no more
            names = ", ".join(misplaced)
            fields = {f.name for f in dataclasses.fields(GuestConfig)}
            given = ", ".join(f"{k}={misplaced[k]!r}" for k in misplaced)
            raise TypeError(
                f"Guest() takes a GuestConfig, not {names}: Guest(GuestConfig({given}))"
                if set(misplaced) <= fields
                else f"Guest() takes a GuestConfig, not {names} (no GuestConfig field "
                f"either: {', '.join(sorted(set(misplaced) - fields))}; see help(GuestConfig))"
            )
        if config is not None and not isinstance(config, GuestConfig):
            raise GuestConfigError(
                f"Guest({config!r}): give a GuestConfig, e.g. Guest(GuestConfig(name=...))"
            )
        self.config = config or GuestConfig()
        self.machine: Machine | None = None
        self.image: GuestImage | None = None
        self.qemu: QemuInstall | None = None  # the QEMU build booted
        self.ssh: SshClient | None = None
        self._agent: AgentClient | None = None
        self._closes = 0  # close() calls: a command another thread's close() ended
        # the starts running now (one per thread in start()), each marked by another
        # thread's close() that came meanwhile (then the start ends, and its failure is
        # that close's doing, not the guest's); a start's thread finds its own in
        # self._start_local
        self._starts: list[_StartTicket] = []
        self._starts_lock = threading.Lock()
        self._start_serial = threading.RLock()  # held by the thread in start()
        self._start_local = threading.local()
        self._start_doing = ""  # what the start does now ("saving the snapshot K")
        # the method each thread runs (bind()): what its step scripts' errors name
        self._operations = threading.local()
        self._loaded_from: Path | None = None  # the snapshot whose state runs (restored)
        self._with_depth = 0  # `with` blocks open on it (the outermost one's end closes)
        # one thread replaces a dead or interrupted agent session (see agent): two that
        # both did so started two sessions, the daemon's takeover ending the first's
        self._agent_lock = threading.Lock()
        # what the thread holding it does: (its name, since when, what), for the others'
        # error when their wait for it runs out
        self._agent_holder: tuple[str, float, str] | None = None
        self._t0 = 0.0
        self._injector: Injector | None = None
        self.accel: AccelChoice | None = None
        self.ssh_port = 0
        self.module: str | None = None
        # the guest time the last reset() began, by the kernel log's clock (ns; the
        # agent's CLOCK_MONOTONIC from an agent that cannot say it): a test's start
        self.reset_at_ns: int | None = None
        # the reads the agent left in drivers (state D) that were still blocked at the
        # last reset() (its answer's ``orphans``: request, handle, dev, where)
        self.orphan_reads: list[dict[str, Any]] = []
        # the parameters our driver was last loaded with through this object (None: not
        # loaded by it, or unloaded since): reset() loads the config's again
        self._loaded_params: dict[str, Any] | None = None
        self.boot_seconds: float | None = None
        self.phases: dict[str, float] = {}
        self.restored = False
        # how the last start() ended when the guest did not come up, for the repr:
        # "starting" while it runs, "start failed", "start interrupted" (Ctrl-C); None
        # after one that came up (restored or cold boot) or before the first
        self._start_end: str | None = None
        # after a restore: the guest's CLOCK_BOOTTIME (ns) when its RNG was reseeded
        self.reseeded_at_ns: int | None = None
        self.driver_ko: Path | None = None  # the build of our driver the guest loads
        self._prepared = False  # prepare() ran and no start() since: start() skips it
        self.snapshot_dir: Path | None = None  # the snapshot this guest came from or saved
        # why a matching snapshot could not be used, or why this boot was not saved
        self.snapshot_error: str | None = None
        # the last QEMU's run directory (console, QEMU's output, agent logs): kept after
        # close() for a script that wants them once its own check failed
        self.log_dir: Path | None = None
        self.fault: Fault | None = None  # set by the health watch when the guest died/froze
        # A fault's cause is printed on stderr the moment the watch finds it (a script
        # or test sees why its wait ends); False for a caller that reports it itself.
        self.fault_notice = True
        self._watch: HealthWatch | None = None

    def __repr__(self) -> str:
        """``<Guest 'name' running, restored, ssh port 4022, logs /...>``: the state is
        not started, running, dead (QEMU exited, or the guest died or froze: not
        closed yet), closed, or closed after a fault (its :attr:`fault` says which);
        then how the last start went: restored, cold boot, or, for one that did not
        come up, starting, start failed or start interrupted."""
        vm = self.machine
        if vm is None:
            closed = "closed" if self.fault is None else "closed after a fault"
            state = closed if self.log_dir is not None else "not started"
        elif self.fault is not None or not vm.is_running():
            state = "dead"
        else:
            state = "running"
        parts = [f"{self.config.name!r} {state}"]
        if self.log_dir is not None:  # started at least once
            # a restore cut short by Ctrl-C said "cold boot": none had happened
            how = "restored" if self.restored else "cold boot"
            parts.append(self._start_end or how)
        if vm is not None and self.ssh_port:
            parts.append(f"ssh port {self.ssh_port}")
        if self.log_dir is not None:
            parts.append(f"logs {self.log_dir}")
        return f"<Guest {', '.join(parts)}>"

    # -- the parts, once there --------------------------------------------------------
    @staticmethod
    def _need(part: _T | None, missing: str) -> _T:
        if part is None:
            raise GuestError(missing)
        return part

    def _vm(self) -> Machine:
        return self._need(self.machine, "the guest is not running")

    def _img(self) -> GuestImage:
        return self._need(self.image, "no guest image yet: call prepare() or start()")

    def _qemu(self) -> QemuInstall:
        return self._need(self.qemu, "no QEMU yet: call prepare() or start()")

    def _accel(self) -> str:
        return self._need(self.accel, "no accelerator yet: call prepare() or start()").accel

    # -- prerequisites ----------------------------------------------------------
    @property
    def arch(self) -> Any:
        """The guest's :class:`irqlab.build.arch.Arch` (config, else $IRQLAB_ARCH)."""
        from irqlab.build import arch

        try:
            if self.config.arch:
                return arch.by_name(self.config.arch)
            return arch.selected(os.environ)
        except ValueError as e:
            raise GuestConfigError(str(e)) from None

    def _check_extra_module_params(self) -> None:
        """Each :attr:`GuestConfig.extra_module_params` entry names an extra module and
        parameters it declares, and every extra module comes after those of them it
        depends on (:class:`GuestConfigError` before anything boots)."""
        from irqlab.build.kernel import modinfo_depends, module_name

        by_name = {module_name(Path(m).name): Path(m) for m in self.config.extra_modules}
        loaded: set[str] = set()
        for m in self.config.extra_modules:  # insmod-ed in order: what one needs goes first
            me = module_name(Path(m).name)
            if me in loaded:  # the kernel loads a module once: the second insmod fails
                raise GuestConfigError(f"extra_modules: a module {me} is listed twice")
            try:
                needs = {module_name(d) for d in modinfo_depends(Path(m).read_bytes())}
            except OSError:
                needs = set()  # named by the start's own check of the file
            later = sorted((needs & set(by_name)) - loaded - {me})
            if later:
                raise GuestConfigError(
                    f"extra_modules: {Path(m).name} needs "
                    f"{', '.join(by_name[n].name for n in later)}: list "
                    f"{'them' if len(later) > 1 else 'it'} before {Path(m).name}"
                )
            loaded.add(me)
        for name, params in self.config.extra_module_params.items():
            ko = by_name.get(module_name(name))
            if ko is None:
                raise GuestConfigError(
                    f"extra_module_params: {name!r} is none of the extra modules "
                    f"({', '.join(sorted(by_name)) or 'none given'})"
                )
            check_module_params(ko, params)

    def _check_driver_params(self, ko: Path) -> None:
        """:func:`check_module_params` of our driver *ko*; for a name that one of the extra
        modules declares, the error says where that module's parameters go."""
        from irqlab.build.elf import ElfError, module_parameters

        try:
            check_module_params(ko, self.config.module_params)
            check_driver_choices(ko, self.config.module_params)
            self._check_gpio_lines()
            self._check_irq_mode()
        except GuestConfigError as e:
            for mod in map(Path, self.config.extra_modules):
                try:
                    declared = {param_key(n) for n in module_parameters(mod.read_bytes())}
                except (OSError, ElfError):
                    continue
                given = map(str, self.config.module_params)
                mine = [n for n in given if param_key(n) in declared]
                if mine:
                    example = " ".join(f"{n}=..." for n in mine)
                    raise GuestConfigError(
                        f"{e}\n({', '.join(mine)}: a parameter of {mod.name}, your module: "
                        f"module_params / --module-param / the marker's module= are our "
                        f"driver's; give yours with the module: --module '{mod.name} "
                        f"{example}', the marker's modules=['{mod.name} {example}'] or "
                        "GuestConfig(extra_module_params=...))"
                    ) from None
            raise

    def _check_gpio_lines(self) -> None:
        """Our driver's ``gpio_edges`` and ``key_line`` against the device's GPIO lines
        (:func:`device_gpio_lines`), before anything boots: the driver ignored edges
        beyond them (a line in the kernel log) and refused such a key line at probe."""
        lines = device_gpio_lines(self.config.device_props)
        for name, value in self.config.module_params.items():
            key = param_key(name)
            if key not in ("gpio_edges", "key_line") or value is None:
                continue
            number = kernel_int(str(value), signed=key == "key_line")
            if number is None:  # not a number: its type's check says so
                continue
            beyond = number >> lines if key == "gpio_edges" else not -1 <= number < lines
            if beyond:
                raise GuestConfigError(
                    f"parameter {name}={value}: "
                    f"{'names lines' if key == 'gpio_edges' else 'a line'} beyond the "
                    f"device's {lines} GPIO lines (0 to {lines - 1}; its "
                    f"{QOM.PROP_GPIO_LINES} property sets how many)"
                )

    def _check_irq_mode(self) -> None:
        """Our driver's ``irq_mode`` against a device whose ``irq-mode`` is given, before
        anything boots: the device offers INTx and the capability of its own mode only,
        so ``irq_mode=msi`` on an ``irq-mode=intx`` device cost a boot to learn that the
        driver cannot bind.  (The device's default mode is its own to say: a device
        without the property is left to the kernel's words.)"""
        device = self.config.device_props.get(QOM.PROP_IRQ_MODE)
        for name, value in self.config.module_params.items():
            if param_key(name) != "irq_mode" or value is None or device is None:
                continue
            if str(value) not in ("auto", "intx", str(device)):
                raise GuestConfigError(
                    f"parameter {name}={value}: the device's {QOM.PROP_IRQ_MODE} is "
                    f"{device}, which offers INTx and {device} only (give the device "
                    f"{QOM.PROP_IRQ_MODE}={value}, or {name}=auto or intx)"
                )

    def _extra_module_args(self, ko: Path) -> str:
        """The insmod arguments of the extra module *ko* (its extra_module_params)."""
        from irqlab.build.kernel import module_name

        mine = module_name(ko.name)
        params: Mapping[str, Any] = next(
            (p for n, p in self.config.extra_module_params.items() if module_name(n) == mine),
            {},
        )
        return "".join(f" {kernel_param(k, v)}" for k, v in params.items())

    def kernel_modules(self) -> tuple[str, ...]:
        """The guest kernel's modules the image must ship for this configuration: the
        config's :attr:`GuestConfig.kernel_modules` and what the extra modules depend on
        (their ``.modinfo`` ``depends=``), but for one another."""
        from irqlab.build.kernel import modinfo_depends, module_name

        extra = [Path(m) for m in self.config.extra_modules]
        ours = {module_name(m.name) for m in extra}
        wanted = list(self.config.kernel_modules)
        for m in extra:
            try:
                wanted += modinfo_depends(m.read_bytes())
            except OSError:
                continue  # named by the start's own check of the file
        return tuple(n for n in dict.fromkeys(wanted) if module_name(n) not in ours)

    def find_prerequisites(self) -> tuple[QemuInstall, GuestImage, Path]:
        """(QemuInstall, GuestImage, module .ko) or :class:`PrerequisiteMissing`; the
        extra modules are checked to be the guest architecture's first, the module
        parameters to be the module's (:class:`GuestConfigError`)."""
        arch = self.arch
        for mod in self.config.extra_modules:
            check_module_arch(Path(mod), arch, "extra module")
        self._check_extra_module_params()
        if image_kind() == "buildroot":
            found = self._find_buildroot(arch)
        elif arch.name != "x86_64":
            found = self._find_other_arch(arch)
        else:
            found = self._find_x86_64()  # checks the parameters before the image
        if image_kind() == "buildroot" or arch.name != "x86_64":
            self._check_driver_params(found[2])
        for mod in self.config.extra_modules:
            check_module_kernel(Path(mod), found[1], "extra module")
        if self.config.load_irqlab:
            self._say_device_taken()
        return found

    def _say_device_taken(self) -> None:
        """An extra module that is a driver of the irqlab device, loaded after ours: ours
        has bound the device, so that driver's probe never runs, and nothing said so
        (driver developer persona).  Said, not refused: a module may match several
        devices, ours among them.  Once in a process for a module (each test's own guest
        said it again, between the test lines)."""
        for mod in self.config.extra_modules:
            alias = irqlab_device_alias(Path(mod))
            said = (str(Path(mod).resolve()), alias or "")
            if alias is not None and said not in _DEVICE_TAKEN_SAID:
                _DEVICE_TAKEN_SAID.add(said)
                notice.say(
                    f"irqlab: {self.config.name}: the extra module {mod} is a driver of the "
                    f"irqlab PCI device ({alias}), but our driver is loaded first and binds "
                    "it: your driver's probe will not run for it; leave ours out with "
                    "load_irqlab=False (GuestConfig, or the irqlab marker) or `irqlab run "
                    "--no-irqlab` / `irqlab shell --no-irqlab`"
                )

    @staticmethod
    def _find_qemu(arch: Any) -> QemuInstall:
        """The built QEMU for a guest of *arch*, or :class:`PrerequisiteMissing` saying how
        to build it."""
        from irqlab.build import archguest
        from irqlab.build.qemu import BuildError, QemuUnknown, ensure_runtime_once, find_qemu

        try:
            qemu = archguest.arch_qemu(arch) if arch.name != "x86_64" else find_qemu()
        except (archguest.Missing, QemuUnknown) as e:
            raise PrerequisiteMissing(str(e)) from e
        except ConfigError as e:  # $IRQLAB_QEMU_SOURCE names no source
            raise GuestConfigError(str(e)) from None
        if qemu is None:
            from irqlab.build.qemu import build_in_progress

            building = build_in_progress() if arch.name == "x86_64" else None
            if building is not None:  # it said "not built" while another shell built it
                raise PrerequisiteMissing(
                    f"QEMU with the irqlab device is being built: {building}; "
                    "`irqlab build-qemu` waits for it (a Guest does not build QEMU)"
                )
            raise PrerequisiteMissing(
                "QEMU with the irqlab device is not built: "
                "run `irqlab build-qemu` (and `irqlab build-image` for the guest); "
                f"looked in the build cache {cache_description()}"
            )
        try:  # a cache restored into a fresh container: QEMU's libraries, as build-qemu
            ensure_runtime_once(qemu, arch, _build_progress)
        except BuildError as e:
            raise PrerequisiteMissing(f"the built QEMU cannot run here: {e}") from e
        return qemu

    def _find_buildroot(self, arch: Any) -> tuple[QemuInstall, GuestImage, Path]:
        """The prerequisites with the Buildroot image of *arch* (never built here: the
        error names the command that builds it); its own build of our module."""
        from irqlab.build.buildroot import BuildrootError
        from irqlab.build.buildroot import ensure_image as ensure_buildroot_image

        if self.config.kernel_modules:
            raise GuestConfigError(
                "kernel_modules: only the Debian-package image ships more of its kernel's "
                "modules (the Buildroot image has what its kernel config builds)"
            )
        qemu = self._find_qemu(arch)
        try:
            br = ensure_buildroot_image(arch=arch, build=False)
        except BuildrootError as e:
            raise PrerequisiteMissing(str(e)) from e
        return qemu, br, br.kernel_artifacts.modules_dir / "updates" / "irqlab.ko"

    def _find_x86_64(self) -> tuple[QemuInstall, GuestImage, Path]:
        qemu = self._find_qemu(self.arch)
        ko = find_kmod()
        self._check_driver_params(ko)  # before an image build
        from irqlab.build.image import UnknownKernelModule, ensure_image

        extra = tuple(dict.fromkeys((*DEFAULT_EXTRA_PACKAGES, *self.config.extra_packages)))
        try:
            image = ensure_image(
                kmod=Path(ko),
                extra_packages=extra,
                kernel_modules=self.kernel_modules(),
                log=_build_progress,
            )
        except UnknownKernelModule as e:  # kernel_modules, or an extra module's depends=
            raise GuestConfigError(str(e)) from e
        except (IrqlabError, OSError, subprocess.CalledProcessError) as e:
            raise PrerequisiteMissing(
                f"the guest image (extra packages: {', '.join(extra)}) cannot be built: {e}; "
                "run `irqlab build-image`"
            ) from e
        return qemu, image, Path(ko)

    def _find_other_arch(self, arch: Any) -> tuple[Any, Any, Path]:
        """The prerequisites of a guest of another architecture with the Debian image."""
        from irqlab.build import archguest

        try:
            return archguest.prerequisites(
                arch,
                (*DEFAULT_EXTRA_PACKAGES, *self.config.extra_packages),
                env_kmod(arch),
                kernel_modules=self.kernel_modules(),
            )
        except archguest.Missing as e:
            raise PrerequisiteMissing(str(e)) from e

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> Guest:
        """Start the guest (restore or cold boot, see the class docs); on any failure
        everything started so far is stopped before the error propagates.  A running
        Guest is not started again (a second QEMU replaced the first, left running):
        :meth:`restart` or :meth:`close` first.  Another thread's :meth:`close` that
        begins after this call began ends it (GuestError "... was closed (or restarted)
        by another thread while it started ..."), leaving no QEMU running."""
        # one start at a time: a restart() from another thread waits here for the start
        # its close ended (at that start's next step), whose clean-up closed the new
        # start's QEMU and made it fail as "closed by another thread" too
        with self._start_serial:
            ticket = _StartTicket(threading.get_ident())
            with self._starts_lock:  # from here on another thread's close() ends it
                self._starts.append(ticket)
            self._start_local.ticket = ticket
            try:
                with cancel.scope(ticket.scope):
                    return self._start_ticketed(ticket)
            finally:
                self._start_local.ticket = None
                with self._starts_lock:
                    self._starts.remove(ticket)

    def _start_ticketed(self, ticket: _StartTicket) -> Guest:
        if self.machine is not None:
            raise GuestError(
                "this Guest has a QEMU already (running, or dead and not closed): "
                "close() or restart() it first"
            )
        self.fault = None  # the last QEMU's verdict is not this one's
        # this start's to say: one that booted cold after a close() of a restored
        # guest was still "restored"
        self.restored = False
        self._start_end = "starting"
        self._start_doing = ""
        try:
            self._start()
            self._check_open()  # a close that came meanwhile: no running guest returned
            self._start_end = None
            return self
        except BaseException as e:
            self._start_end = "start failed" if isinstance(e, Exception) else "start interrupted"
            noted = any(n.startswith("interrupted ") for n in getattr(e, "__notes__", ()))
            if isinstance(e, KeyboardInterrupt) and self._start_doing and not noted:
                # Ctrl-C, SIGTERM: the plugin's line names the step (a command's own note
                # names it already)
                e.add_note(f"interrupted in the guest {self.config.name!r} {self._start_doing}")
            # another thread's close() ended it: no verdict to wait for, no guest to blame
            closed = ticket.closed and isinstance(e, Exception) and ticket.fault is None
            if closed and ticket.scope.ended is not None:  # the step of its prepare it ended
                self._start_doing = f"{self._start_doing or 'preparing'}: {ticket.scope.ended}"
            paths = self.machine.paths if self.machine is not None else None
            try:
                named = (
                    self._closed_meanwhile(self._starting()) if closed else self._qemu_gone_under(e)
                )
            finally:  # a second Ctrl-C in its wait must not leave QEMU running
                self.close()
            if paths is not None and isinstance(named, Exception):
                # the console, QEMU's output and the agent's log (pytest shows notes,
                # the irqlab command prints them), unless the error names them already
                said = [str(named), *getattr(named, "__notes__", ())]
                if not any(str(paths.log_dir) in text for text in said):
                    named.add_note(f"logs: {paths.log_dir}")
                if self.accel is not None and self.accel.accel == "kvm" and not self.accel.probed:
                    named.add_note(f"accelerator: {self.accel.reason}")  # forced: often the cause
            doing = self._start_doing
            if isinstance(named, GuestFault) and doing and doing not in str(named):
                # the fault's own words name no step ("QEMU exited with status -9"):
                # which step of the start it ended (a save: its partial file is gone)
                named.add_note(f"the guest {self.config.name!r} was starting: {doing}")
            if named is e:
                raise
            raise named from e

    @property
    def _closed_under_start(self) -> bool:
        """Whether another thread's :meth:`close` (or :meth:`restart`) came since this
        thread's start() began (False in a thread that is not starting)."""
        ticket: _StartTicket | None = getattr(self._start_local, "ticket", None)
        return ticket is not None and ticket.closed

    def _check_open(self) -> None:
        """Raise :class:`GuestError` when another thread's :meth:`close` came since this
        thread's start began (start() says by whom and while doing what): before each
        step that starts a QEMU, discards a snapshot or waits, so that a start a close
        ended neither runs on nor leaves a QEMU behind (it restarted a cold boot after
        the close, and returned a running guest)."""
        if self._closed_under_start:
            raise GuestError("closed")

    def _start_check(self) -> None:
        """The start's check in its waits (SSH's retries, the snapshot's load and save):
        a close from another thread, then the health watch's verdict."""
        __tracebackhide__ = hide_frame
        self._check_open()
        self.check_health()

    def _starting(self) -> str:
        """What the start was doing, for an error or an interrupt that ended it."""
        return f"it started ({self._start_doing})" if self._start_doing else "it started"

    def _qemu_gone_under(self, e: BaseException) -> BaseException:
        """*e*, or the :class:`GuestFault` behind it when a step of the start failed
        because QEMU went away (killed from outside: "QMP cont: connection lost before
        the reply", an SSH login's EOF or "QEMU exited before connecting to the QMP
        socket" said neither that QEMU died nor was a GuestFault)."""
        from irqlab.vm.loadscale import scaled
        from irqlab.vm.machine import MachineError, QemuExited
        from irqlab.vm.qmp.errors import QMPFailure

        vm = self.machine
        if vm is None or not isinstance(e, Exception) or isinstance(e, GuestFault):
            return e
        if not vm.spawned:  # it failed before QEMU ran (a log directory it cannot make
            return e  # said "QEMU exited with status None")
        if isinstance(e, QemuExited) and e.status not in _KILLED_FROM_OUTSIDE:
            return e  # it exited by itself (refused its command line, crashed): its words
        if isinstance(e, MachineError) and vm.is_running() and isinstance(e.__cause__, QMPFailure):
            with contextlib.suppress(MachineError):  # its exit comes a moment after the socket's
                vm.wait_exit(scaled(EXIT_AFTER_LOST_QMP_S))
        if vm.is_running() and self.fault is None:
            return e  # a step's own failure (SSH refused a login, ...): its words stand
        fault = self.wait_fault(FAULT_VERDICT) if not vm.is_running() else self.fault
        if fault is None and not vm.is_running():  # before the health watch ran
            fault = Fault(exited_cause(vm.returncode), "", vm.stderr_tail())
        return GuestFault(fault, "starting the guest") if fault is not None else e

    def _start(self) -> Guest:
        self._start_ready()
        if self._files_after_ready():
            self._put_extra_files()
        return self

    def _files_after_ready(self) -> bool:
        """Whether ``config.extra_files`` go in once the guest is ready (restored or
        booted, and saved) rather than before the modules load: when no module of the
        user's loads, nothing in the ready state can depend on them, so they are not in
        the snapshot nor its key, and a file changed costs no cold boot and no snapshot."""
        return bool(self.config.extra_files) and not self.config.extra_modules

    def _put_extra_files(self) -> None:
        for remote, local in self.config.extra_files.items():
            self.put(local, remote)

    def _start_ready(self) -> None:
        from irqlab.vm import snapshot

        if self._files_after_ready():  # in no key, which would have read them: found
            for local in self.config.extra_files.values():  # now, not after a boot
                _check_readable(local)

        if not self._prepared:  # the caller's prepare() just ran (irqlab run/shell): once
            # apt's lookups, the image's and module's builds: a close from another
            # thread ends the command it runs (cancel.Scope) and its lock's wait
            self._start_doing = "preparing"
            self.prepare()
            self._check_open()  # a close that came while a step ran no command
            self._start_doing = ""
        else:  # changed between the caller's prepare() and this start
            self.config.check()
        self._prepared = False  # a restart looks again (a module rebuilt meanwhile)
        if not self.config.snapshot or self.config.extra_devices:  # their state: see the field
            self._cold_start()
            return
        snapshot.keep_snapshots()  # a bad $IRQLAB_SNAPSHOT_KEEP fails now, not after a boot
        key = self.snapshot_key()
        found = snapshot.lookup(key)
        tried = _dir_identity(found)
        if found is not None and self._try_restore(key, found):
            return
        # One cold boot per configuration: concurrent starters (pytest-xdist workers,
        # two terminals) wait here for the first one's snapshot, then restore from it.
        with self._boot_lock(key) as unlocked:
            if unlocked is not None:  # it costs the snapshot, not the guest
                self.snapshot_error = f"not saved as the snapshot {key}: {unlocked}"
                notice.say(f"irqlab: {self.config.name}: {self.snapshot_error}; booting cold")
                self._cold_start()
                return
            found = snapshot.lookup(key)
            # one saved meanwhile is tried; the bad one that could not be removed is
            # not tried twice (a QEMU start and its refusal again, ~0.25 s)
            fresh = found is not None and _dir_identity(found) != tried
            if found is not None and fresh and self._try_restore(key, found):
                return
            if not self._restore_base_with_extras() and not self._cold_start_base_with_extras():
                self._cold_start()
            self._save_snapshot(key)

    @contextlib.contextmanager
    def _boot_lock(self, key: str) -> Iterator[str | None]:
        """:func:`irqlab.vm.snapshot.boot_lock` of *key*, whose wait (another process's
        cold boot, minutes under load) another thread's :meth:`close` ends: it waited
        until that boot was done, and only then failed."""
        from irqlab.vm import snapshot

        self._start_doing = f"waiting for another process's cold boot for the snapshot {key}"
        with snapshot.boot_lock(
            key, stopped_limit=self.config.boot_timeout, check=self._check_open
        ) as unlocked:
            self._start_doing = ""
            yield unlocked

    def base_snapshot_key(self) -> str | None:
        """The key of the snapshot a start restores, then loads the user's modules in,
        when this configuration's own is missing (the same guest without its extra
        modules and files); None without extra modules (a miss is a cold boot)."""
        return self._snapshot_key(extras=False) if self.config.extra_modules else None

    def _restore_base_with_extras(self) -> bool:
        """A configuration with modules of the user's whose snapshot is missing (a module
        rebuilt, its first use): restore the snapshot of the same guest without them, if
        there is one, and install them (files first, as a cold boot does), instead of a
        cold boot: ~1 s, not ~4, for every rebuild of a driver under development.  False
        (nothing started) when there is no such snapshot or it cannot be restored."""
        if not self._restore_base():
            return False
        self._install_extras_on_base("restored")
        return True

    def _restore_base(self) -> bool:
        """Restore the snapshot of this guest without the user's modules and files (the
        base of :meth:`_restore_base_with_extras`); False (nothing started) when there
        is none, or it cannot be restored."""
        from irqlab.vm import snapshot

        base_key = self.base_snapshot_key()
        if base_key is None:
            return False
        base = snapshot.lookup(base_key)
        return base is not None and self._try_restore(base_key, base)

    def _install_extras_on_base(self, how: str) -> None:
        """The user's files and modules into the guest *how* (restored, saved) without
        them."""
        # this configuration's snapshot is the save's to set: a save refused (a WARN of
        # the module) or failed (a full cache) leaves none, not the base's
        self.snapshot_dir = None
        log.info("%s: %s without the extra modules; installing them", self.config.name, how)
        self.install_extras()
        self._reached("extras", self._t0)

    def _cold_start_base_with_extras(self) -> bool:
        """A configuration with modules of the user's whose base snapshot is missing too
        (their first use with a ``load_irqlab=False`` guest, or with ``kernel_modules``:
        a guest nobody starts without them): boot cold without them, save that as the
        base snapshot, then install them, so that every later rebuild of the module
        restores the base (:meth:`_restore_base_with_extras`) instead of booting cold
        again.  Under the base's boot lock: a process booting it meanwhile is waited
        for and its snapshot restored; the modules are installed after the lock (a
        module that hangs its load kept those waiting for the base).  False (nothing
        started) without extra modules or when that lock cannot be taken."""

        base_key = self.base_snapshot_key()
        if base_key is None:
            return False
        how = "restored"
        with self._boot_lock(base_key) as unlocked:
            if unlocked is not None:
                return False
            if not self._restore_base():  # none saved while this waited for the lock
                self._cold_start(extras=False)
                self._save_snapshot(base_key)
                # the base's, said by the save already: this configuration's is next
                self.snapshot_error = None
                how = "saved"
        self._install_extras_on_base(how)
        return True

    def _try_restore(self, key: str, found: Path) -> bool:
        from irqlab.vm import snapshot

        self._loaded_from = None
        self._check_open()
        try:
            with snapshot.held(found):  # no prune removes it before the load ended
                self._restore(found)
            return True
        except snapshot.SnapshotGone as e:  # pruned since the lookup: a miss
            self._check_open()
            self._start_doing = ""  # a cold boot next, not this restore
            log.info("%s: %s; no snapshot to restore", self.config.name, e)
            self._stop_machine()
            return False
        except snapshot.SnapshotError as e:
            # a close from another thread ended the load (it set self.machine to None:
            # no QEMU to ask): the snapshot stays, and nothing boots after the close
            self._check_open()
            if self._killed_from_outside():  # not the snapshot's doing: it stays
                self._raise_fault()
                raise
            self._start_doing = ""  # a cold boot next, not this restore
            self.snapshot_error = str(e)
            self._stop_machine()
            notice.say(f"irqlab: {e}")
            why = snapshot.discard(key)
            if why is None:
                notice.say("irqlab: removed it; booting cold")
            else:  # the next start after the holder is gone removes it
                notice.say(f"irqlab: {why}, so it stays for now; booting cold")
            return False
        except Exception as e:
            if self._loaded_from is not found or self._closed_under_start:
                raise  # not the restored state's doing
            # it ran, and died at once (a module's timer that oopses after its load):
            # no ready state, every start that restores it dies so
            named = self._qemu_gone_under(e)
            if isinstance(named, GuestFault) and _the_guests_doing(named.fault):
                why = snapshot.discard(key)
                named.add_note(
                    f"restored from the snapshot {found}, which was removed: its guest died "
                    "as soon as it ran again (the next start boots cold)"
                    if why is None
                    else f"restored from the snapshot {found}, whose guest died as soon as "
                    f"it ran again; {why}, so it stays for now"
                )
            if named is e:
                raise
            raise named from e

    def prepare(self) -> Guest:
        """Find QEMU (built by ``irqlab build-qemu`` or the pytest plugin, never here:
        :class:`PrerequisiteMissing` says how), find or build the image and the module,
        and choose the accelerator, without starting anything (:meth:`start` does this
        first)."""
        from irqlab.build.cache import check_keep_env
        from irqlab.vm.accel import choose, requested
        from irqlab.vm.loadscale import check_environment

        self.config.check()  # changed since it was made (a plain dataclass)
        try:  # the environment's values, before anything is built
            check_environment()
            requested()  # $IRQLAB_ACCEL
            check_keep_env()  # $IRQLAB_CACHE_KEEP, $IRQLAB_SNAPSHOT_KEEP
        except ValueError as e:
            raise GuestConfigError(str(e)) from None
        qemu, image, ko = self.find_prerequisites()
        self.qemu, self.image, self.driver_ko = qemu, image, ko
        # The KVM probe (cached on disk) is not part of booting.  Another architecture's
        # guest runs under TCG (the probe boots an x86 guest).
        if image.arch != "x86_64":
            self.accel = foreign_arch_accel(image.arch)
            if requested() == "kvm":  # it was ignored without a word
                notice.say(f"irqlab: {self.config.name}: {self.accel.reason}")
        else:
            self.accel = choose(qemu.binary, datadir=qemu.datadir)
        self._prepared = True
        return self

    def _machine_args(self, ssh_port: int) -> list[str]:
        from irqlab.build.boot import cpu_args, machine_args

        c = self.config
        img = self._img()
        base = [
            *machine_args(img.arch),
            *cpu_args(self._accel(), img.arch),
            "-smp",
            str(c.smp),
        ]
        if img.arch == "aarch64" and not c.hotplug:
            from irqlab.build.archguest import key_dtb_args

            base += key_dtb_args(self._qemu().binary, base)  # the device-tree key
        return [
            *base,
            *img.qemu_args(ssh_port),
            *(
                ["-device", f"pcie-root-port,id={HOTPLUG_PORT},chassis=1,slot=1"]
                if c.hotplug
                else []
            ),
            "-device",
            device_arg(c.device_id, c.device_props, HOTPLUG_PORT if c.hotplug else None),
            *(arg for spec in c.extra_devices for arg in ("-device", spec)),
        ]

    def snapshot_key(self) -> str:
        """The key of this configuration's ready-state snapshot (QEMU build, image,
        machine arguments with the device's properties, module parameters, vCPUs,
        accelerator, agent port, and the user's modules and files by content)."""
        return self._snapshot_key(extras=True)

    def _snapshot_key(self, *, extras: bool) -> str:
        """:meth:`snapshot_key`; not *extras*: that of the same guest without the
        user's modules and files (:meth:`_restore_base_with_extras`)."""
        from irqlab.vm import snapshot

        c = self.config if extras else self._without_extras()

        if self.qemu is None or self.image is None or self.accel is None:
            raise GuestError("snapshot_key() needs the prerequisites: call prepare() first")
        return snapshot.snapshot_key(
            {
                "qemu": str(self.qemu.binary),  # the install's directory names its hash
                "image": self.image.version,
                "args": self._machine_args(0),  # the host port is not part of the state
                "module": self.module_name(),
                "module_params": {k: str(v) for k, v in c.module_params.items()},
                "accel": self._accel(),
                "agent_port": AGENT_PORT,
                "tag": c.snapshot_tag,
                # with KVM the guest runs on the host's own CPU model (-cpu host): a state
                # saved on one CPU must not be restored on another
                "host_cpu": host_cpu_model() if self._accel() == "kvm" else "",
                # what the test put into the guest, by content: a restore has the same
                "load_irqlab": c.load_irqlab,
                "extra_modules": [[Path(m).name, _sha256(m)] for m in c.extra_modules],
                # only when given: the keys of snapshots saved before it existed stay
                **(
                    {
                        "extra_module_params": {
                            n: {k: str(v) for k, v in p.items()}
                            for n, p in sorted(c.extra_module_params.items())
                        }
                    }
                    if c.extra_module_params
                    else {}
                ),
                # put after the ready state without a module of the user's: not in it
                "extra_files": {}
                if not c.extra_modules
                else {g: _sha256(p) for g, p in sorted(c.extra_files.items())},
            }
        )

    def _without_extras(self) -> GuestConfig:
        """This guest's configuration without the user's modules and files."""
        return dataclasses.replace(
            self.config, extra_modules=(), extra_module_params={}, extra_files={}
        )

    def _reached(self, phase: str, t0: float) -> None:
        """Record *phase* of the start in :attr:`phases` (s since *t0*) and log it (INFO
        on ``irqlab.vm.guest``: a script's logging.basicConfig shows the start's steps)."""
        self.phases[phase] = time.monotonic() - t0
        log.info(
            "%s: %s after %.2f s",
            self.config.name,
            PHASE_NAMES.get(phase, phase),
            self.phases[phase],
        )

    def _cold_start(self, *, extras: bool = True) -> None:
        """Boot cold until the guest's clock runs at the host's rate (at most
        :data:`CLOCK_BOOTS` boots): a TSC the kernel mis-calibrated at boot under a loaded
        host made its clock run 7x the host's, and the snapshot saved from it carried
        that into every guest restored from it (:mod:`irqlab.vm.guestclock`).  Not
        *extras*: the user's modules and files are not installed (the caller does)."""
        for boot in range(1, CLOCK_BOOTS + 1):
            self._cold_start_once(extras=extras)
            why = self._clock_wrong()
            if why is None:
                return
            if boot == CLOCK_BOOTS:
                raise GuestError(f"the guest {self.config.name!r} {why} ({boot} cold boots)")
            notice.say(f"irqlab: {self.config.name}: the guest {why}; booting again")
            self.close()

    def _clock_wrong(self) -> str | None:
        """Why this guest's clock is wrong (with the kernel's TSC lines), or None."""
        from irqlab.vm import guestclock

        rate = guestclock.measure(lambda: int(self.agent.ping()["monotonic_ns"]))
        if not rate.wrong():
            return None
        tsc = self._run("dmesg | grep -E '] tsc: ' | head -4", timeout=30).out.strip()
        said = "; ".join(line.split("] ", 1)[-1] for line in tsc.splitlines())
        return (
            f"has a clock that runs {rate.describe()}: the kernel mis-calibrated its "
            f"TSC at boot{f' ({said})' if said else ''}"
        )

    def _cold_start_once(self, *, extras: bool = True) -> None:
        self._check_open()
        t0 = time.monotonic()
        self.phases = {}
        reached = partial(self._reached, t0=t0)
        log.info(
            "%s: booting cold (%s, %d vCPU%s)",
            self.config.name,
            self._accel(),
            self.config.smp,
            "" if self.config.smp == 1 else "s",
        )
        self._boot()
        reached("console_ready")
        self.boot_seconds = self.phases["console_ready"]
        self._connect_ssh()
        reached("ssh")
        launcher = self._launch_agent()  # Python starts up while the module loads
        try:
            if self.config.load_irqlab:
                self.load_module()
        except BaseException:
            # the load's error is the story, and the failed start stops the guest: no
            # kill in it first (on a dead guest that waited seconds for nothing)
            launcher.abandon()
            raise
        self._await_launch(launcher)
        if extras:  # after the launcher's channel: one at a time to dropbear
            self.install_extras(files=not self._files_after_ready())
        reached("module")
        self._connect_agent()
        reached("agent_ready")
        self._t0 = t0

    def _save_snapshot(self, key: str) -> None:
        """Save this ready guest as the snapshot *key*, with no host connection open in
        it (the agent's session ended, SSH closed), then reconnect."""
        from irqlab.vm import snapshot
        from irqlab.vm.kernlog import kernel_problems

        assert self.image is not None and self.qemu is not None
        self._check_open()  # nothing saved (nor waited for) after a close
        # A splat of this boot (a WARN() of a module loading, a soft lockup of a loaded
        # host) saved into the snapshot would be in every guest restored from it, and
        # fail each of their tests: such a boot is not saved (the next boots cold).
        why = ""
        try:
            problems = kernel_problems(self, scan_leaks=False)
            if problems:
                why = f"the kernel reported problems while this guest booted ({problems.splats[0]})"
        except GuestFault:
            raise  # it died: the start's story
        except (IrqlabError, ValueError) as e:  # the log could not be read: not saved
            why = f"its kernel log could not be read ({e})"
        if why:
            self.snapshot_error = f"not saved as the snapshot {key}: {why}"
            notice.say(f"irqlab: {self.config.name}: {self.snapshot_error}")
            return
        if self._agent is not None:
            self._agent.close(timeout=10)  # the daemon ends the session before replying EOF
            self._agent = None
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        meta = {
            "qemu": str(self.qemu.binary),
            "image": self.image.version,
            "argv": self._vm().argv,
            "module_params": self.config.module_params,
            # which guest saved it (not part of the key): for `irqlab cache` readers
            "saved_by": {"name": self.config.name, "tag": self.config.snapshot_tag},
        }
        # The watch goes on while QEMU writes the state (the VM stopped, the agent's
        # session closed: no heartbeat is looked for): a QEMU that dies or freezes
        # meanwhile is named at once (a stopped one cost the save's QMP calls 30 s
        # each, then said only "no reply").
        self._start_doing = f"saving the snapshot {key}"
        saved: Path | None = None  # by this save
        try:
            self.snapshot_dir = snapshot.save(self._vm(), key, meta, check=self._start_check)
        except snapshot.SnapshotError as e:
            self._name_fault()  # QEMU died or froze: the start's story
            # The guest runs on (QEMU continued it): a failed save (a full cache
            # filesystem) costs later starts a cold boot, not this one its guest.  One
            # that QEMU did not continue (a save it could not cancel) fails the start.
            from irqlab.vm.machine import MachineError
            from irqlab.vm.qmp.errors import QMPCommandError, QMPFailure

            status = None
            # a QEMU that fails to answer now: the save's error is the story
            with contextlib.suppress(MachineError, QMPFailure, QMPCommandError):
                status = self._vm().qmp("query-status").get("status")
            if status != "running":
                raise
            self.snapshot_error = f"not saved as the snapshot {key}: {e}"
            notice.say(f"irqlab: {self.config.name}: {self.snapshot_error}; going on without it")
        else:
            saved = self.snapshot_dir
            self._reached("snapshot_saved", self._t0)
        self._start_doing = ""
        try:
            self._connect_ssh()
            self._connect_agent()
        except Exception as e:
            if saved is None or self._closed_under_start:
                raise
            named = self._qemu_gone_under(e)
            # the state it saved died a moment after (a module's timer that oopses after
            # its load): no ready state, every start that restored it died so
            if isinstance(named, GuestFault) and _the_guests_doing(named.fault):
                self.snapshot_dir = None
                kept = snapshot.discard(key)
                named.add_note(
                    f"the snapshot {saved} this start saved was removed: its guest died "
                    "before the start ended (no ready state to restore)"
                    if kept is None
                    else f"the snapshot {saved} this start saved is no ready state (its "
                    f"guest died before the start ended); {kept}, so it stays for now"
                )
            if named is e:
                raise
            raise named from e

    def _restore(self, directory: Path) -> None:
        from irqlab.vm import snapshot

        meta = snapshot.check(directory)
        saved_by = (meta.get("qemu"), meta.get("image"))
        if saved_by != (str(self._qemu().binary), self._img().version):
            raise snapshot.SnapshotError(
                f"snapshot {directory / snapshot.STATE_FILE} was saved by another QEMU build "
                f"or image ({meta.get('qemu')}, image {meta.get('image')})"
            )
        t0 = self._t0 = time.monotonic()
        self.phases = {}
        log.info("%s: restoring the snapshot %s", self.config.name, directory)
        self._start_doing = f"restoring the snapshot {directory}"
        self._start_machine(["-incoming", "defer"])
        snapshot.load(
            self._vm(), directory, timeout=self.config.restore_timeout, check=self._start_check
        )
        self._start_doing = ""
        self._reached("restored", t0)
        self._loaded_from = directory  # the state runs from here: its doing, if it dies
        self._vm().qmp("cont")
        # The restored kernel's CRNG is the saver's: reseed it from the host before
        # anything connects (dropbear draws a new connection's keys from it).
        self.reseeded_at_ns = self._reseed()
        self._reached("reseeded", t0)
        self._connect_ssh(retry_interval=0.02)
        self._reached("ssh", t0)
        self._connect_agent()
        self._reached("agent_ready", t0)
        self.boot_seconds = self.phases["restored"]
        self.module = self.module_name()
        # the snapshot's key holds the module parameters: saved loaded with these
        self._loaded_params = dict(self.config.module_params) if self.config.load_irqlab else None
        self.restored = True
        self.snapshot_dir = directory

    def _reseed(self) -> int:
        """Send a fresh seed to the agent daemon's reseed port (forwarded by QEMU, no
        SSH); the guest's CLOCK_BOOTTIME of the reseed, in ns."""
        import socket

        from irqlab.build.boot import RESEED_PORT
        from irqlab.vm.machine import MachineError

        try:
            port = forwarded_port(self._vm(), RESEED_PORT)
        except MachineError:
            self._raise_fault()  # QEMU gone: the watch names why
            raise
        deadline = time.monotonic() + self.config.ssh_timeout  # the network's first use
        why = "no answer"
        portless_since: float | None = None  # since when every attempt found no port
        while time.monotonic() < deadline:
            self._start_check()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
                    s.sendall(os.urandom(64).hex().encode() + b"\n")
                    with s.makefile("rb") as r:
                        reply = r.readline(200).decode(errors="replace").split()
            except OSError as e:
                reply, why = [], str(e)
                host_fault = no_local_port(e)
                now = time.monotonic()
                if host_fault is None:
                    portless_since = None
                elif portless_since is None:
                    portless_since = now
                elif now - portless_since >= NO_LOCAL_PORT_S:
                    why = f"cannot reach the restored guest's reseed port: {host_fault}"
                    raise GuestError(why) from None
            if reply[:1] == ["ok"] and len(reply) == 2 and reply[1].isdigit():
                return int(reply[1])
            if reply:  # the daemon answered, and refused
                raise GuestError(f"the guest's reseed port refused the seed: {' '.join(reply)}")
            # slirp takes the host's connection at once and closes it when nothing
            # in the guest accepts yet (or QEMU is gone): try again, unless the watch
            # has a verdict by then
            if self.wait_fault(0.02) is not None:
                self._raise_fault()
        raise GuestError(
            f"the restored guest's agent did not take a seed on its reseed port ({why})"
        )

    def _start_machine(self, extra: list[str] | None = None) -> None:
        from irqlab.vm.machine import Machine, MachineConfig
        from irqlab.vm.qmp.injector import Injector

        c = self.config
        # none named: where the framework running it says (a pytest test's directory)
        root = c.log_dir if c.log_dir is not None else logplace.place(self)
        if root is None:  # the default log directory: scripts' and the CLI's runs
            with contextlib.suppress(OSError):  # were never pruned (pytest prunes its own)
                prune_logs(keep_runs=None)
        # Port 0: libslirp binds the host side itself and we read the port back, so no
        # other process can take it between our choice and QEMU's bind.
        self._check_open()  # no QEMU after a close
        self.machine = Machine(
            MachineConfig(
                binary=self._qemu().binary,
                args=[*self._machine_args(0), *self._qmp_socket_args(), *(extra or [])],
                datadir=self._qemu().datadir,
                accel=self._accel(),
                name=c.name,
                log_root=root,
                log_root_setting="GuestConfig(log_dir=...)" if c.log_dir is not None else None,
            )
        )
        machine = self.machine
        # a close that came before the line above found no machine to stop: this one is
        # stopped by start()'s clean-up (one that came after stops it itself)
        self._check_open()
        try:
            machine.start()
        finally:  # a failed start's too
            if machine.paths is not None:
                self.log_dir = machine.paths.log_dir
        self._check_open()  # closed while QEMU started: its QMP, its port are gone
        self.ssh_port = forwarded_port(machine, GUEST_SSH_PORT)
        self._injector = Injector(_FaultNamingQmp(self, machine), c.device_id)
        self._start_watch()

    def _qmp_socket_args(self) -> list[str]:
        sock = self.config.qmp_socket
        if sock is None:
            return []
        return ["-qmp", f"unix:{_option_value(sock)},server=on,wait=off"]

    def _start_watch(self) -> None:
        self._stop_watch()
        self.fault = None
        self._watch = HealthWatch(
            self._vm(),
            self._on_fault,
            agent=lambda: self._agent,
            freeze_timeout=self.config.freeze_timeout,
            answers=self._ssh_greets,
        )
        self._watch.start()

    def _ssh_greets(self) -> bool:
        """Whether the guest's SSH server greets (its userspace runs), within
        SSH_GREETING_S s scaled with the host's load."""
        from irqlab.vm.loadscale import scaled

        return self.ssh_port > 0 and ssh_greets(self.ssh_port, scaled(SSH_GREETING_S))

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _on_fault(self, fault: Fault) -> None:
        """The guest died or froze: end every wait at once (closing SSH ends the SSH
        commands and the agent's forwarded channel), each naming *fault*."""
        self.fault = fault
        # read once each: close() in another thread may clear them meanwhile (its wait
        # for this thread is bounded)
        ssh, machine = self.ssh, self.machine
        # a QEMU being closed (by another thread, as a start's watch began) exits by
        # the close's doing: no "irqlab: NAME: QEMU exited with status 0" on stderr
        closing = machine is None or machine.closing
        if self.fault_notice and not closing:
            print(f"irqlab: {self.config.name}: {fault.cause}", file=sys.stderr, flush=True)
        if ssh is not None:
            with contextlib.suppress(Exception):
                ssh.close()
        if machine is not None:  # a QMP call on a frozen QEMU waited out its 30 s
            # a QEMU that still answers (a paused panic, a guest whose userspace
            # stopped) keeps QMP for later questions; the device's injector refuses
            machine.abort_qmp(f"the guest is not usable: {fault.cause}", later=fault.qmp_silent)

    def connection_lost(self) -> str | None:
        """Why the host cannot reach this running guest any more, as far as the host
        knows without a round trip: its SSH connection closed (a test killed the
        guest's sshd, or its network); None if not.  Reconnecting could wait
        ``ssh_timeout`` for an sshd that is gone.  (An agent whose session ended is no
        such case: :attr:`agent` starts it again over SSH, the guest's state kept.)"""
        if self.ssh is None or not self.ssh.is_active():
            return "its SSH connection closed"
        return None

    def wait_fault(self, timeout: float) -> Fault | None:
        """The health watch's fault, waiting up to *timeout* s for its verdict (a broken
        connection is often the first sign of a dead guest, a moment before the
        watch has read the console or seen QEMU exit)."""
        check_timeout(timeout, zero=True)
        watch = self._watch
        if self.fault is None and watch is not None:
            watch.wait_verdict(timeout)
        return self.fault

    def _diagnose(self) -> Fault | None:
        return self.wait_fault(FAULT_VERDICT)

    def _raise_fault(self) -> None:
        """Raise :class:`GuestFault` if the health watch has a verdict within
        FAULT_VERDICT s (a broken connection usually comes a moment before it)."""
        __tracebackhide__ = hide_frame
        fault = self.wait_fault(FAULT_VERDICT)
        if fault is not None:
            raise GuestFault(fault)

    def _killed_from_outside(self) -> bool:
        """Whether QEMU was stopped by someone else while it loaded a snapshot: killed
        (SIGKILL), told to terminate (SIGTERM, SIGINT, SIGHUP: QEMU exits 0, "terminating
        on signal N") or stopped (SIGSTOP).  A stream QEMU cannot load ends it with
        status 1 (or SIGABRT, SIGSEGV): the snapshot's doing."""
        vm = self.machine
        if vm is None:
            return False
        if vm.is_running():
            if proc.is_stopped(vm.pid):
                return True
            # QEMU closes the QMP socket as it exits, so the load can fail on the lost
            # connection a moment before the exit is seen: that exit decides
            from irqlab.vm.loadscale import scaled
            from irqlab.vm.machine import MachineError

            with contextlib.suppress(MachineError):
                vm.wait_exit(scaled(EXIT_AFTER_LOST_QMP_S))  # longest on a loaded host
            if vm.is_running():
                return False
        return vm.returncode == 0 or vm.returncode == -signal.SIGKILL

    def _name_fault(self) -> None:
        """After a failed step: raise :class:`GuestFault` if the guest is known dead or
        frozen, or QEMU exited (then waiting up to FAULT_VERDICT s for the watch's
        verdict, which comes a moment after the step failed); else return (at once: a
        healthy guest's failure is the step's own)."""
        vm = self.machine
        if vm is not None and not vm.is_running():
            self._raise_fault()
        self.check_health()

    def check_health(self) -> None:
        """Raise :class:`GuestFault` if the health watch saw the guest die or freeze."""
        __tracebackhide__ = hide_frame
        if self.fault is not None:
            raise GuestFault(self.fault)

    def _vcpus_note(self) -> str:
        """What to add to a slow boot's words when the guest has more vCPUs than the host
        has cores for it under TCG (each vCPU a host thread: ``--smp 64`` on 2 cores did
        not boot in 180 s, silent all along), else ""."""
        from irqlab.vm.loadscale import usable_cores

        cores = usable_cores()
        if self._accel() != "tcg" or self.config.smp <= cores:
            return ""
        return (
            f" ({self.config.smp} vCPUs under TCG on {cores} usable host core"
            f"{'' if cores == 1 else 's'}: each vCPU is a host thread; fewer vCPUs boot "
            "faster, or give a longer boot_timeout)"
        )

    def _boot(self) -> None:
        """Start QEMU and wait for the image's ready marker, watching QEMU meanwhile: a
        fatal line in QEMU's output (a KVM internal error), a QEMU exit or a fault the
        health watch saw (run state, panic) ends the wait within a second or two,
        quoting QEMU and the console."""
        from irqlab.vm.console import ConsoleTimeout

        self._start_machine()
        img = self._img()
        # the ready marker, or the failed one with its reason (the boot script then waits
        # on a console shell: without this the wait would last the whole boot_timeout)
        marker = re.compile(
            f"{re.escape(img.ready_marker)}|{re.escape(img.failed_marker)}: [^\r\n]*[\r\n]"
        )
        started = time.monotonic()
        deadline = started + self.config.boot_timeout
        said = started  # when the boot's progress was last said
        vcpus = self._vcpus_note()
        while True:
            left = deadline - time.monotonic()
            if time.monotonic() - said >= BOOT_PROGRESS_S and left > 0:
                said = time.monotonic()
                notice.say(
                    f"irqlab: {self.config.name}: still booting after {said - started:.0f} s "
                    f"(boot_timeout={self.config.boot_timeout:g} s){vcpus}"
                )
            self._check_open()
            try:
                text = self._vm().wait_console(marker, timeout=max(0.0, min(0.5, left)))
            except ConsoleTimeout as e:
                fatal = _qemu_fatal(self._vm().stderr_tail(40))
                if fatal is not None:
                    raise GuestError(
                        f"QEMU failed while the guest booted: {fatal}\n"
                        f"--- QEMU said\n{self._vm().stderr_tail()}\n"
                        f"{self._vm().describe_logs()}"
                    ) from None
                if self.fault is not None:
                    raise GuestFault(self.fault, "booting") from None
                if not self._vm().is_running() or left <= 0:
                    # the console as it was at the limit: the marker could come while the
                    # watch's verdict is awaited, and the tail then showed it under "did
                    # not print it"
                    paths = self._vm().paths
                    tail = file_tail(paths.console_log, 20) if paths is not None else ""
                    fault = self.wait_fault(FAULT_VERDICT)
                    if fault is not None:
                        raise GuestFault(fault, "booting") from None
                    console = self._console()
                    ready = re.compile(re.escape(img.ready_marker))
                    late = (
                        " (it printed it a moment after)"  # not seen by the limit: late
                        if console is not None and console.shows(ready, 0, 0)
                        else ""
                    )
                    exited = not self._vm().is_running()
                    why = (
                        f"QEMU exited: {e}"
                        if exited
                        else f"the guest did not print {img.ready_marker!r} within "
                        f"boot_timeout={self.config.boot_timeout:g} s{late}{vcpus}"
                        + (f"; see {paths.console_log}" if paths is not None else "")
                    )
                    error = GuestError if exited else GuestTimeout  # an exit is no timeout
                    raise error(
                        f"{why}\n--- guest console (last lines)\n{tail or '(empty)'}"
                        f"\n--- QEMU said\n{self._vm().stderr_tail() or '(nothing)'}"
                    ) from None
                continue
            failed = re.search(f"{re.escape(img.failed_marker)}: ([^\r\n]*)", text)
            if failed is None:
                return
            paths = self._vm().paths
            tail = printable(text[-2000:]) if paths is None else file_tail(paths.console_log, 20)
            raise GuestError(
                f"the guest's boot script failed: {failed.group(1).strip()}\n"
                f"--- guest console (last lines)\n{tail}\n{self._vm().describe_logs()}"
            )

    def _connect_ssh(self, *, retry_interval: float = 0.1) -> None:
        """Connect SSH, retrying until ssh_timeout; a guest or QEMU that dies or freezes
        meanwhile ends the retrying with the health watch's verdict (GuestFault)."""
        image = self._img()
        client = SshClient(
            "127.0.0.1",
            self.ssh_port,
            user=image.ssh_user,
            key_path=image.client_key,
            host_key=image.host_key,  # pinned: nobody else on that port passes for the guest
            reconnect_check=self._before_reconnect,
        )
        try:
            self.ssh = client.connect(
                timeout=self.config.ssh_timeout,
                retry_interval=retry_interval,
                check=self._start_check,  # a close from another thread ends the retries
            )
        except SshError:
            self._check_open()  # the close's doing, not the guest's
            self._name_fault()
            raise
        self._check_open()  # closed as it connected: start()'s clean-up closes it

    def _before_reconnect(self) -> None:
        """The SSH client's check before it replaces a broken connection: a guest that
        died raises :class:`GuestFault` (a killed QEMU resets the connection a moment
        before the watch sees the exit: a short wait for the verdict), not a warning
        and up to 30 s of reconnecting to nothing."""
        __tracebackhide__ = hide_frame
        vm = self.machine
        gone = vm is None or not vm.is_running()
        # a reconnect after one that found no sshd: this guest's QEMU runs, and the watch
        # was asked then (each later command waited its 0.5 s again)
        again = not gone and self.ssh is not None and self.ssh.unreachable is not None
        fault = self.wait_fault(FAULT_VERDICT if gone else 0.0 if again else RECONNECT_VERDICT)
        if fault is not None:
            raise GuestFault(fault)

    def restart(self) -> Guest:
        """Stop this guest (whatever state it is in) and start it again, restored from
        its snapshot when there is one."""
        self.close()
        self.snapshot_error = None
        return self.start()

    def close(self) -> None:
        """Stop the guest (QEMU's quit; nothing in the guest needs a clean shutdown).  A
        QEMU stopped by a signal (SIGSTOP) answers nothing: no goodbyes, killed at once."""
        self._closes += 1
        me = threading.get_ident()
        with self._starts_lock:  # each start running in another thread ends (its
            for ticket in self._starts:  # failure this close's doing); a start() that
                if ticket.thread != me and not ticket.closed:  # begins after this line
                    ticket.closed, ticket.fault = True, self.fault  # is a fresh one
                    ticket.scope.cancel()  # its prepare's command ends now
        stopped = self._qemu_stopped()
        if stopped:
            self._cut_off()
        if self._agent is not None:
            agent, self._agent = self._agent, None
            # an agent whose heartbeat stopped (a guest frozen, its verdict not come yet)
            # answers no goodbye: its 2 s and the readers' 2 s made such a close 4 s
            beat = agent.last_heartbeat
            silent = beat is not None and time.monotonic() - beat > SILENT_AGENT_S
            _within(
                AGENT_CLOSE_S,
                lambda: agent.close(
                    timeout=SILENT_CLOSE_S if silent else 2,
                    # nor one whose request was interrupted: it waits behind that one
                    goodbye=not (stopped or silent or agent.interrupted is not None),
                ),
                "the agent's session",
            )
        if self.ssh is not None:
            ssh, self.ssh = self.ssh, None
            _within(AGENT_CLOSE_S, ssh.close, "the SSH connection")  # may wait on a lock too
        self._stop_machine()

    def _qemu_stopped(self) -> bool:
        """Whether QEMU runs but is stopped by a signal (SIGSTOP, SIGTSTP)."""
        vm = self.machine
        return vm is not None and vm.is_running() and proc.is_stopped(vm.pid)

    def _cut_off(self) -> None:
        """Before closing a stopped QEMU: end the watch's QMP wait and the SSH connection
        now.  The agent's quit waited out its 2 s and the watch's QMP ping its 3 s (x
        load) before the watch's thread was let go: a close took 6-9 s."""
        if self._watch is not None:
            self._watch.stop(wait=0)  # joined in _stop_machine, its QMP wait ended below
        if self.machine is not None:
            self.machine.abort_qmp("the guest is being closed (QEMU is stopped)")
        if self.ssh is not None:  # the agent's channel with it: its reader ends at once
            ssh, self.ssh = self.ssh, None
            _within(AGENT_CLOSE_S, ssh.close, "the SSH connection")

    def _stop_machine(self) -> None:
        self._stop_watch()
        if self.machine is not None:
            log.info("%s: stopping QEMU", self.config.name)
            self.machine.close()  # cut short (Ctrl-C): the next close finishes it
            self.machine = None

    def __enter__(self) -> Guest:
        """Start the guest unless it was started already (``with Guest().start() as g``
        and ``g.start(); with g:`` too: a second start was refused there, and the QEMU
        of the first ran on with nobody to close it); :meth:`close` at the end.  A
        start that fails stops what it started before raising.  Blocks nested in one
        another (a helper's ``with g:`` inside the caller's) close it at the
        outermost one's end: the inner one closed it, and the outer block went on with
        "the guest is not connected"."""
        if self.machine is not None:
            self._with_depth += 1
            return self
        self.start()
        self._with_depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._with_depth = max(0, self._with_depth - 1)
        if self._with_depth == 0:
            self.close()

    # -- guest commands ---------------------------------------------------------------
    def sh(self, cmd: str, *, timeout: float = 60.0, check: bool = True) -> str:
        """Run a shell command in the guest; return its stdout.

        Raises :class:`CommandError` (with ``.result``: rc, out, err) when it exits
        non-zero and *check*; :class:`SshTimeout` (a TimeoutError) when it runs longer
        than *timeout* s (its processes in the guest are killed; one killed by SIGKILL
        while the guest's OOM killer killed a process notes that kill); :class:`GuestFault`
        when the guest dies or freezes meanwhile.  :meth:`run` returns the status instead
        and takes stdin."""
        __tracebackhide__ = hide_frame
        mark = self.console_mark()
        result = self._run(_shell_command(cmd), timeout=timeout)
        if check and result.rc != 0:
            # rc -1: the connection closed under it, and _run found the guest alive
            error = CommandError(cmd, result, detail=self._alive())
            oom = self._oom_killed(result, mark)
            if oom is not None:  # the kill may have been this command's: said, not claimed
                error.add_note(f"{oom.cause} while it ran (the guest lives on)")
            raise error
        return result.out

    def _oom_killed(self, result: RunResult, mark: int | None) -> Fault | None:
        """The OOM killer's kill of a command that ended with *result* (SIGKILL), named
        by its console line after *mark*; None for any other end."""
        killed = result.rc == signal_status("KILL") or (
            result.signal is not None and result.signal.name == "KILL"
        )
        console = self._console()
        if not killed or console is None or mark is None:
            return None
        if not console.shows(OOM_KILL, mark, CONSOLE_LAG):  # it kills before SIGKILL lands
            return None
        kills = list(OOM_KILL.finditer(console.since(mark)))
        line = kills[-1].group(0)
        tail, span = console_view(console.text(), line)
        logs = str(self.log_dir) if self.log_dir is not None else ""
        return Fault(f"guest out of memory: {line}", tail, console_span=span, log_dir=logs)

    def run(
        self, cmd: str, *, timeout: float = 60.0, input: bytes | str | None = None
    ) -> RunResult:
        """Run a shell command in the guest (*input* on its stdin: bytes, or a str sent
        as UTF-8) and return its :class:`RunResult` whatever its status: ``rc`` (128 +
        N when signal N killed it, and ``signal`` names it; -1 when the SSH connection
        closed under it, the guest alive), ``out``, ``err``.  A guest that dies
        meanwhile raises :class:`GuestFault`; one in which nothing answers SSH any more
        (its sshd was killed) :class:`SshUnreachable`, in a second or two."""
        __tracebackhide__ = hide_frame
        return self._run(_shell_command(cmd), timeout=timeout, input=input)

    def _run(
        self, cmd: str, *, timeout: float, input: bytes | str | None = None, doing: str = ""
    ) -> RunResult:
        """Run *cmd* in the guest (*input* on its stdin); a guest or QEMU that dies
        meanwhile is named, with *doing* (default: running *cmd*)."""
        __tracebackhide__ = hide_frame
        operation = getattr(self._operations, "name", "")
        if operation and self.fault is not None:  # dead already: the method, named
            raise GuestFault(self.fault, f"in {operation}")
        self.check_health()
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        # a method's step script (in the debug log below) is named by the method
        if not doing:
            doing = f"in {operation}" if operation else f"running {cmd!r}"
        elif operation:  # a step with words of its own: "waiting for /dev/x in bind()"
            doing = f"{doing} in {operation}"
        mark = self.console_mark()
        log.debug("%s: running %r (timeout %g s)", self.config.name, cmd, timeout)
        t0 = time.monotonic()
        closes = self._closes
        try:
            result = self.ssh.run(cmd, timeout=timeout, check=False, input=input)
        except KeyboardInterrupt as e:  # Ctrl-C: the plugin's line names what ran
            e.add_note(f"interrupted in the guest {self.config.name!r} {doing}")
            raise
        # The verdict alone, unchained: the SSH errors under it (a socket's EBADF, an EOF,
        # "SSH is not connected") are its consequence; their ~140 lines of paramiko
        # tracebacks before the test's own line said no more (logged at debug level).
        except GuestFault as e:  # the connection broke: not replaced (_before_reconnect)
            if self._closes != closes and self.fault is None:
                raise self._closed_meanwhile(doing) from None
            log.debug("%s: %s; under it", self.config.name, e, exc_info=e.__context__)
            raise GuestFault(e.fault, doing) from None
        except (SshError, paramiko.SSHException, OSError, EOFError) as e:
            if self._closes != closes and self.fault is None:  # no verdict to wait for
                raise self._closed_meanwhile(doing) from None
            # a connection that broke waits for the watch's verdict; a command that only
            # ran too long (killed by now), for an oops line that its end may trail; a
            # reconnect that found no sshd asked the watch before (_before_reconnect):
            # again only if QEMU exited meanwhile (its port refuses too)
            # (an sshd gone as the guest powers off: the watch's verdict names that)
            fault = self.wait_fault(self._verdict_wait(e))
            if fault is not None:
                log.debug("%s: %s under the fault", self.config.name, e, exc_info=e)
                raise GuestFault(fault, doing) from None
            if isinstance(e, SshUnreachable):
                alive = self._alive()
                raise SshUnreachable(f"{e} ({doing}{'; ' + alive if alive else ''})") from None
            raise
        if result.rc == -1 and self._closes != closes and self.fault is None:
            raise self._closed_meanwhile(doing)  # its channel closed with the connection
        log.debug(
            "%s: %r ended: rc=%d after %.2f s",
            self.config.name,
            cmd,
            result.rc,
            time.monotonic() - t0,
        )
        if result.rc == -1 or result.rc >= 128:  # dropped, or killed by a signal
            fault = self.fault_after(result.rc, result.signal, console_mark=mark)
            if fault is not None:
                raise GuestFault(fault, doing)
        return result

    @contextlib.contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """Commands this thread runs meanwhile are named by *name* ("bind()") when the
        guest dies or an interrupt ends them, not by their shell script (an internal
        step: ``for d in /sys/bus/pci/devices/*; do ...``), which the debug log keeps;
        the outermost such method names them."""
        outer = getattr(self._operations, "name", "")
        self._operations.name = outer or name
        try:
            yield
        finally:
            self._operations.name = outer

    def _closed_meanwhile(self, doing: str) -> GuestError:
        """Another thread's :meth:`close` (or :meth:`restart`) ended the connection a
        command ran on: it returned rc -1 with no output, or said the new QEMU alive."""
        return GuestError(
            f"the guest {self.config.name!r} was closed (or restarted) by another thread "
            f"while {doing}"
        )

    def _verdict_wait(self, e: BaseException) -> float:
        """How long a command that failed with *e* waits for the watch's verdict: a
        command that only ran too long, CONSOLE_LAG (an oops line its end may trail);
        a reconnect that found no sshd asked the watch before (_before_reconnect), so
        none while QEMU runs (it cost each later command 2 s); else FAULT_VERDICT."""
        if isinstance(e, SshTimeout):
            return CONSOLE_LAG
        vm = self.machine
        if isinstance(e, SshUnreachable) and vm is not None and vm.is_running():
            return 0.0
        return FAULT_VERDICT

    def _alive(self) -> str:
        """What to add to an error of a lost SSH connection when the guest lives on (its
        QEMU runs and the health watch has no verdict), else ""."""
        vm = self.machine
        if self.fault is None and vm is not None and vm.is_running():
            return "QEMU and the guest kernel are alive: the health watch has no verdict"
        return ""

    def fault_after(
        self, rc: int, signal: ExitSignal | None = None, *, console_mark: int | None = None
    ) -> Fault | None:
        """The guest's fault, if it has one, after a command ended with *rc* (killed by
        *signal*): a closed channel (rc -1) waits up to FAULT_VERDICT s for the health
        watch's verdict, a command the kernel may have killed for an oops under it
        (KERNEL_KILLS, reported by SSH or by a shell as 128 + N) OOPS_VERDICT s; any
        other end does not wait.  With *console_mark* (:meth:`console_mark` as the
        command began), a kill waits only when the console printed a fault meanwhile
        (the kernel prints an oops before it kills): a user's own crash costs
        CONSOLE_LAG, not OOPS_VERDICT."""
        if rc == -1:  # the channel closed under the command: did the guest die?
            return self.wait_fault(FAULT_VERDICT)
        if rc in _KERNEL_KILL_STATUSES or (signal is not None and signal.name in KERNEL_KILLS):
            if console_mark is not None and not self._console_shows_fault(console_mark):
                return self.fault  # its own crash: nothing on the console
            return self.wait_fault(OOPS_VERDICT)  # an oops under it: the watch names it
        return self.fault

    def _console(self) -> Console | None:
        from irqlab.vm.machine import MachineError

        try:
            return self.machine.console if self.machine is not None else None
        except MachineError:  # a machine without a console
            return None

    def console_mark(self) -> int | None:
        """Where the console is now (bytes), or None without one."""
        console = self._console()
        return console.size() if console is not None else None

    def _console_shows_fault(self, mark: int) -> bool:
        from irqlab.vm.health import CONSOLE_FAULT

        console = self._console()
        if console is None:
            return True  # cannot tell: wait for the watch
        # the console's bytes and the command's end come by different paths: a moment
        return console.shows(CONSOLE_FAULT, mark, CONSOLE_LAG)

    @property
    def injector(self) -> Injector:
        """The device's interrupt injector (QMP to QEMU); :class:`GuestError` while the
        guest does not run (it was an AttributeError on None)."""
        __tracebackhide__ = hide_frame
        if self._injector is None or self.machine is None:
            raise GuestError("the guest is not running: start() it first")
        return self._injector

    @property
    def dev(self) -> str:
        """Our driver's character device in the guest (its default mode)."""
        return DEVICE

    @property
    def count_dev(self) -> str:
        """Our driver's counting file (``/dev/irqlab0-count``): the agent's ``count``
        path reads it (``g.agent.arm("count")``, its default there)."""
        return COUNT_DEVICE

    def module_name(self) -> str:
        """Our driver's module name in the guest (``irqlab``; ``lsmod``, ``rmmod``)."""
        name = getattr(self.image, "kmod", None) or "irqlab"
        return str(name)

    def load_module(self, **params: Any) -> None:
        """modprobe the driver (with the config's params, overridden by *params*); with
        ``uio=1`` the driver offers /dev/uio0 instead of /dev/irqlab0."""
        __tracebackhide__ = hide_frame
        self._modprobe({**self.config.module_params, **params}, unload_first=False)

    def driver_node(self, params: Mapping[str, Any] | None = None) -> str:
        """The node our driver offers with module parameters *params* (default: the
        config's): /dev/uio0 in its UIO mode (``uio=1``), else :attr:`dev`."""
        opts = self.config.module_params if params is None else params
        uio = "uio" in opts and kernel_bool(opts["uio"])
        return "/dev/uio0" if uio else self.dev

    def _modprobe(
        self, params: Mapping[str, Any], *, unload_first: bool, timeout: float = 3.0
    ) -> None:
        """In one guest command (one SSH channel, not three): rmmod the module if loaded
        (with *unload_first*), modprobe it with *params*, and wait for the driver's node.
        The node appears while modprobe probes the device (a PCI driver's probe and
        devtmpfs's node creation both finish before modprobe returns): its absence a
        few seconds later is a driver that did not bind, said with the kernel's last
        words (not an SSH timeout)."""
        __tracebackhide__ = hide_frame
        if self.driver_ko is not None:  # a misspelt name loaded the defaults silently
            check_module_params(self.driver_ko, params)
            check_driver_choices(self.driver_ko, params)
        self.module = name = self.module_name()
        modprobe = " ".join([f"modprobe {name}", *(kernel_param(k, v) for k, v in params.items())])
        node = self.driver_node(params)
        q = shlex.quote(node)
        unload = f"if grep -q '^{name} ' /proc/modules; then rmmod {name}; fi"
        script = _kernel_step(
            [unload, modprobe] if unload_first else [modprobe],
            # a deadline by the guest's clock: the loop's speed under TCG does not matter
            f"end=$(( $(cut -d. -f1 /proc/uptime) + {int(timeout)} )); "
            f"while [ ! -c {q} ] && [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do "
            f"usleep 10000 2>/dev/null || sleep 0.01; done; "
            f"if [ -c {q} ]; then echo present; else echo absent; fi",
        )
        said = f"rmmod {name}; {modprobe}" if unload_first else modprobe  # not the script
        self._loaded_params = None  # unknown until it is known loaded
        result = self._run_kernel_step(script, said, timeout + self.config.module_load_timeout)
        if result.rc != 0:
            unloading = unload_first and f"{STEP_MARK} 0\n" in result.err
            if unloading:
                self._kernel_step_failed(f"rmmod {name}", result, self._holders_hint(name, result))
            self._kernel_step_failed(modprobe, result)
        if result.out.strip() != "present":
            # the whole log: the step's mark may be more than a few lines back (a
            # probe's own words), and the boot's lines before it are not this load's
            kmsg = self.sh("dmesg", check=False)
            refusal = probe_failure(kmsg, name)
            held = self._held_elsewhere(name)
            why = (
                f": the kernel said {refusal!r} (do the module parameters fit the device's "
                f"properties? e.g. irq_mode and the device's irq-mode){held}"
                if refusal
                else held
                or " (is it a build of our driver? your own modules go in "
                "GuestConfig(extra_modules=...))"
            )
            raise GuestTimeout(
                f"{name} loaded but {node} did not appear within {timeout:g} s: the "
                f"driver did not bind the irqlab device{why}; {kernel_since_step(kmsg).rstrip()}"
            )
        self._loaded_params = dict(params)

    def _run_kernel_step(self, script: str, what: str, timeout: float | None = None) -> RunResult:
        """Run the :func:`_kernel_step` *script* (*what*: its commands as the user gave
        them).  One that does not return in time (a module's init or exit that never
        returns) is a :class:`GuestTimeout` naming *what*, whether the guest still
        answers, and the kernel's last words; it was an SSH timeout quoting the script."""
        __tracebackhide__ = hide_frame
        timeout = self.config.module_load_timeout if timeout is None else timeout
        stop = self._watch_step(timeout)
        try:
            return self._run(script, timeout=timeout, doing=f"running {what!r}")
        except SshTimeout:
            pass  # not a fault the watch saw (_run raised that): said below, unchained
        finally:
            stop.set()
        raise self._kernel_step_timeout(what, timeout)

    def _watch_step(self, timeout: float) -> threading.Event:
        """While no agent heartbeat watches the guest (it starts), a kernel step's own
        look at whether the guest still runs: its SSH server's greeting, every
        STEP_GREET_EVERY s.  None for freeze_timeout (x load) s is a frozen guest, told
        to the health watch (:meth:`HealthWatch.silent`), whose verdict ends the step
        as a fault naming it: a module whose init spun with interrupts off was named
        after the step's 60 s, a kill's 5 s and a probe's 5 s.  Within the step's
        *timeout* only (after it, the step's own timeout says what it found).  Set the
        event returned to end it."""
        from irqlab.vm.loadscale import scaled

        stop = threading.Event()
        agent, watch, limit = self._agent, self._watch, self.config.freeze_timeout
        if limit is None or watch is None or self.ssh_port <= 0:
            return stop
        if agent is not None and not agent.eof:
            return stop  # its heartbeat watches
        deadline = time.monotonic() + timeout

        def look() -> None:
            answered = time.monotonic()
            while not stop.wait(STEP_GREET_EVERY) and time.monotonic() < deadline:
                if self._ssh_greets():
                    answered = time.monotonic()
                    continue
                silent, most = time.monotonic() - answered, scaled(limit)  # one load: one limit
                if silent > most and not stop.is_set():
                    watch.silent(
                        f"its SSH server did not greet for {silent:.0f} s (limit {most:.3g} s: "
                        f"{limit:g} s x host load; no agent heartbeat yet)",
                        answered,
                    )
                    return

        threading.Thread(target=look, name=f"step-{self.config.name}", daemon=True).start()
        return stop

    def _kernel_step_timeout(self, what: str, timeout: float) -> GuestTimeout | GuestFault:
        from irqlab.vm.loadscale import scaled

        said = f"{what} did not return within {timeout:g} s"
        if self.ssh is not None:  # a guest that answers says where it waits, and its log
            try:
                probe = self.ssh.run(HANG_PROBE, timeout=scaled(ALIVE_PROBE_S), reconnect=False).out
            except (SshError, paramiko.SSHException, OSError, EOFError):
                pass
            else:
                stacks, kmsg = hang_report(probe, what)
                return GuestTimeout(
                    f"{said}; the guest still answers: the kernel has not returned from "
                    "the module's init or exit (it waits for something that never comes?); "
                    f"{stacks}{kmsg}"
                )
        if self.fault is not None:  # the health watch named it meanwhile (a restored
            # guest's agent beats during the step): its verdict, with what ran
            return GuestFault(self.fault, f"running {what!r}: no return within {timeout:g} s")
        console = self._console()
        tail = file_tail(console.log_path) if console is not None else ""
        return GuestTimeout(
            f"{said}, and the guest no longer answers over SSH (frozen: a CPU spinning "
            "with interrupts off?); the guest console's last lines:\n" + (tail.rstrip() or "(none)")
        )

    def _kernel_step_failed(self, what: str, result: RunResult, hint: str = "") -> NoReturn:
        """Raise for a module load or unload that failed: :class:`GuestFault` if the
        kernel oopsed or panicked meanwhile (the command was killed: exit 137, or its
        channel closed), else :class:`ModuleLoadError` with the command's words and the
        kernel's messages since it began."""
        __tracebackhide__ = hide_frame
        # a closed channel (-1) was waited on by _run already: not twice
        fault = self.wait_fault(FAULT_VERDICT) if _by_signal(result.rc) else self.fault
        if fault is not None:
            raise GuestFault(fault, f"running {what!r}")
        err, _, kmsg = result.err.partition(KMSG_MARK + "\n")
        err = "\n".join(line for line in err.splitlines() if not line.startswith(STEP_MARK))
        said = (err or result.out).strip() or "(nothing on stderr)"
        head = "kernel messages meanwhile"
        if kmsg.startswith(KMSG_WRAPPED + "\n"):  # its first ones overwritten
            kmsg = kmsg.removeprefix(KMSG_WRAPPED + "\n")
            head += (
                f" (the last {STEP_KMSG_LINES}: more came since it began than the kernel's "
                "log holds, its first ones are lost)"
            )
        raise ModuleLoadError(
            f"{what} failed in the guest (exit {result.rc}): {said}\n{hint}"
            f"{head}:\n{kmsg.rstrip() or '(none)'}",
            result,
        )

    def _holders_hint(self, name: str, result: RunResult) -> str:
        """:meth:`_module_holders` for an rmmod that failed on its own; nothing when the
        kernel killed it or the guest has a fault (the oops is the story, and a dying
        guest must not be asked more), or when the guest cannot say."""
        if _by_signal(result.rc) or result.rc == -1 or self.fault is not None:
            return ""
        try:
            return self._module_holders(name)
        except (SshError, GuestError, GuestFault):  # the failure's own words stand
            return ""

    def _module_holders(self, name: str) -> str:
        """Who keeps module *name* loaded, as lines for an error: the modules that use it
        and the guest processes with a file of our driver open (the agent's armed paths
        among them); '' when the guest names none."""
        sep = "--- irqlab: fds"
        r = self._run(
            f"ls /sys/module/{name}/holders 2>/dev/null; echo {sep}; "
            "ls -l /proc/[0-9]*/fd 2>/dev/null",
            timeout=30,
            doing="looking for what holds the driver",
        )
        mods, _, fds = r.out.partition(sep + "\n")
        held = holders_of(fds, HELD_NODES)
        lines = [f"  used by the module {m}" for m in mods.split()]
        if held:
            pids = " ".join(map(str, held))
            cmdlines = self._run(
                f"for p in {pids}; do tr '\\0' ' ' < /proc/$p/cmdline; echo; done",
                timeout=30,
                doing="looking for what holds the driver",
            ).out.splitlines()
            cmds = [*cmdlines, *[""] * len(held)][: len(held)]  # one line per pid, gone or not
            for (pid, files), cmd in zip(held.items(), cmds, strict=True):
                cmd = cmd.strip()
                agent = " (the irqlab agent's armed paths: g.agent.disarm() first)"
                whose = agent if "irqlab_agent" in cmd else ""
                lines.append(f"  held open by pid {pid} `{cmd[:80]}`: {', '.join(files)}{whose}")
        return "".join(f"{line}\n" for line in ["in use:", *lines]) if lines else ""

    def install_extras(self, *, files: bool = True) -> None:
        """Put ``config.extra_files`` into the guest (unless not *files*), copy
        ``config.extra_modules`` to EXTRA_DIR and insmod them in order (their kernel
        dependencies modprobe-d)."""
        c = self.config
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        c._check_guest_paths()  # again: a config is a plain dataclass, changed since
        if files:  # before the modules, which may read them
            self._put_extra_files()
        for mod in c.extra_modules:
            ko = Path(mod)
            data = ko.read_bytes()
            remote = f"{EXTRA_DIR}/{ko.name}"
            self._put(data, remote, 0o644)
            from irqlab.build.kernel import modinfo_depends, module_name

            # the kernel's modules are in the image (kernel_modules()); an extra module
            # listed before this one is loaded already
            for dep in modinfo_depends(data):
                what = f"modprobe {dep} (needed by {ko.name})"
                loaded = f"grep -q {shlex.quote(f'^{module_name(dep)} ')} /proc/modules"
                step = f"{loaded} || modprobe {shlex.quote(dep)}"
                r = self._run_kernel_step(_kernel_step([step], mark=EXTRA_KMSG_MARK), what)
                if r.rc != 0:
                    self._kernel_step_failed(what, r)
            args = self._extra_module_args(ko)
            what = f"insmod {ko}{args}"
            step = f"insmod {shlex.quote(remote)}{args}"
            r = self._run_kernel_step(_kernel_step([step], mark=EXTRA_KMSG_MARK), what)
            if r.rc != 0:
                self._kernel_step_failed(what, r)

    def put(
        self, local: Path | str, remote: str, *, mode: int | None = None, timeout: float = 60.0
    ) -> None:
        """Copy the local file *local* to the absolute guest path *remote* (parents made;
        *mode* default: the local file's) within *timeout* seconds.
        :class:`GuestWriteError` names a guest path that cannot be written."""
        __tracebackhide__ = hide_frame
        local = Path(local)
        mode = file_mode(local) if mode is None else mode
        self.put_bytes(local.read_bytes(), remote, mode=mode, timeout=timeout)

    def put_bytes(
        self, data: bytes, remote: str, *, mode: int = 0o644, timeout: float = 60.0
    ) -> None:
        """Write *data* to the guest file *remote* (parents made) within *timeout*
        seconds, as :meth:`SshClient.put_bytes` does (:mod:`irqlab.vm.guestfile`)."""
        __tracebackhide__ = hide_frame
        check_put(data, remote)
        self._put(bytes(data), remote, mode, timeout)

    def get(self, remote: str, *, timeout: float = 60.0) -> bytes:
        """The bytes of the guest file *remote* (a regular file, /proc's and /sys's
        included); :class:`GuestError` naming it, with the guest's words, when it cannot
        be read, and before any read when it is no regular file (a device node or a
        FIFO: the read waited for data until the timeout) or one that never ends
        (/proc/kmsg, a trace_pipe: the kernel log is ``g.sh("dmesg")``)."""
        __tracebackhide__ = hide_frame
        r = self._run(_get_command(remote), timeout=timeout, doing=f"reading {remote}")
        if r.rc != 0:
            lines = r.err.strip().splitlines()
            said = lines[0] if lines else f"exit status {r.rc}"
            if said.startswith(_NOT_A_FILE_MARK):
                said = _not_a_file(said.removeprefix(_NOT_A_FILE_MARK))
            elif said.startswith(_ENDLESS_MARK):
                said = _endless(said.removeprefix(_ENDLESS_MARK))
            raise GuestError(f"cannot read {remote} in the guest: {said}")
        return r.out_bytes

    def _put(self, data: bytes, remote: str, mode: int, timeout: float = 60.0) -> None:
        """Write *data* to *remote* (parents made) through one exec channel, waiting for
        its exit status (dropbear copes badly with overlapping channels); a file is
        replaced whole (:func:`irqlab.vm.guestfile.put_command`)."""
        __tracebackhide__ = hide_frame
        r = self._run(
            put_command(remote, mode, len(data)),
            timeout=timeout,
            input=data,
            doing=f"writing {remote}",
        )
        if r.rc != 0:  # e.g. a path under /proc: the guest's own words, not our command
            raise GuestWriteError(put_failure(remote, r), r)

    def unload_module(self) -> None:
        """rmmod the driver; :class:`ModuleLoadError` when that fails, naming what holds
        it (guest processes with its files open: the agent's armed paths among them)."""
        __tracebackhide__ = hide_frame
        name = self.module_name()
        self._loaded_params = None
        r = self._run_kernel_step(_kernel_step([f"rmmod {name}"]), f"rmmod {name}")
        if r.rc != 0:
            self._kernel_step_failed(f"rmmod {name}", r, self._holders_hint(name, r))

    def reload_module(self, **params: Any) -> None:
        """rmmod (if loaded), then modprobe with *params* (the config's params are not
        used)."""
        __tracebackhide__ = hide_frame
        with self._operation("reload_module()"):
            self._modprobe(params, unload_first=True)

    def wait_for_node(self, path: str, timeout: float = 30.0) -> None:
        """Wait until the character device *path* exists in the guest; :class:`GuestError`
        if it does not within *timeout* s (by the guest's clock)."""
        __tracebackhide__ = hide_frame
        # devtmpfs creates the node synchronously with device_add; a short bounded wait
        # covers the uevent-less case without a fixed sleep.
        check_timeout(timeout)
        q = shlex.quote(path)
        r = self._run(
            # a deadline by the guest's clock, in 1/100 s (/proc/uptime has two decimals)
            "cs() { read -r u _ < /proc/uptime; echo ${u%.*}${u#*.}; }; "
            f"end=$(( $(cs) + {math.ceil(timeout * 100)} )); "
            f"while [ ! -c {q} ]; do [ $(cs) -ge $end ] && exit 1; "
            f"usleep 10000 2>/dev/null || sleep 0.01; done",
            timeout=timeout + 10,
            doing=f"waiting for {path}",
        )
        if r.rc != 0:
            raise GuestTimeout(f"no character device {path} in the guest within {timeout:g} s")

    # -- hot-plug -------------------------------------------------------------------------
    def unplug(self, timeout: float = 30.0) -> None:
        """Hot-unplug the device (``device_del``) and wait until QEMU has released it
        (``DEVICE_DELETED``: the guest let go of it).  Needs ``GuestConfig(hotplug=True)``."""
        __tracebackhide__ = hide_frame
        check_timeout(timeout)  # before the device goes (-1 unplugged it, then timed out)
        self._need_hotplug()
        c = self.config
        # a guest known dead or frozen is named (GuestFault), not QMP's "not connected"
        self._plug_qmp("device_del", {"id": c.device_id}, "unplugging the device")
        deadline = time.monotonic() + timeout
        try:
            self._vm().wait_event("DEVICE_DELETED", timeout, {"device": c.device_id})
        except Exception as e:
            failed_at = time.monotonic()  # before the wait for a verdict below (2 s)
            fault = self.wait_fault(FAULT_VERDICT)
            if fault is not None:  # the wait's failure is its consequence
                raise GuestFault(fault, "unplugging the device") from None
            if failed_at < deadline:  # the wait failed early: its own error
                raise GuestError(
                    f"device_del {c.device_id}: waiting for DEVICE_DELETED: {e}"
                ) from e
            raise GuestTimeout(
                f"device_del {c.device_id}: QEMU never reported DEVICE_DELETED within "
                f"{timeout:g} s (the guest did not release the device)"
            ) from e

    def replug(self, timeout: float = 30.0) -> None:
        """Plug the device back (``device_add``, same id and properties) and wait for the
        driver to create its node again."""
        __tracebackhide__ = hide_frame
        check_timeout(timeout)  # before the device comes (wait_for_node's came after it)
        self._need_hotplug()
        c = self.config
        args = {"driver": DEVICE_TYPE, "id": c.device_id, "bus": HOTPLUG_PORT}
        args.update({k: _prop_text(v) for k, v in c.device_props.items()})
        self._plug_qmp("device_add", args, "plugging the device back")
        self.wait_for_node(self.driver_node(), timeout=timeout)

    def _plug_qmp(self, command: str, args: Mapping[str, object], doing: str) -> None:
        """device_del or device_add *command* for unplug/replug (:meth:`_control_qmp`);
        QEMU's refusal of it because the device is not plugged, or is plugged already,
        a :class:`GuestError` saying so (QMP's raw error named neither; QEMU goes on)."""
        __tracebackhide__ = hide_frame
        from irqlab.vm.qmp.errors import QMPCommandError

        try:
            self._control_qmp(command, args, doing)
        except QMPCommandError as e:  # no device of that id; its id taken
            if command == "device_del" and e.error_class == "DeviceNotFound":
                state = "not plugged"
            elif command == "device_add" and e.desc.startswith("Duplicate device ID"):
                state = "already plugged (or its unplug has not finished)"
            else:
                raise
            raise GuestError(
                f"{doing}: the device {self.config.device_id!r} is {state} ({e.desc})"
            ) from None

    def _control_qmp(self, command: str, args: Mapping[str, object], doing: str) -> Any:
        """QMP *command* as every control of the guest runs it: a guest known dead or
        frozen refuses it at once, and a failure that is the guest's death waits for
        the health watch's verdict; either way :class:`GuestFault` naming the cause and
        *doing*."""
        __tracebackhide__ = hide_frame
        return _FaultNamingQmp(self, self._vm(), doing).qmp(command, args)

    def _need_hotplug(self) -> None:
        if not self.config.hotplug:
            raise GuestError("unplug/replug need GuestConfig(hotplug=True) (a PCIe root port)")
        if self.machine is None:
            raise GuestError("the guest is not running")

    def pci_address(self) -> str:
        """The PCI address (e.g. ``0000:00:04.0``) of our device, found by vendor/device id."""
        vid, did = f"{REGS.PCI_VENDOR_ID:#06x}", f"{REGS.PCI_DEVICE_ID:#06x}"
        with self._operation("pci_address()"):
            out = self.sh(
                "for d in /sys/bus/pci/devices/*; do "
                f'[ "$(cat $d/vendor)" = {vid} ] && [ "$(cat $d/device)" = {did} ] '
                "&& basename $d; done; true"
            ).split()
        if not out:
            raise GuestError(f"no PCI device {vid}:{did} in the guest")
        return out[0]

    def unbind(self) -> str:
        """Unbind our driver from the device (sysfs); the device's PCI address."""
        with self._operation("unbind()"):
            addr = self.pci_address()
            to = shlex.quote(f"/sys/bus/pci/drivers/{self.module_name()}/unbind")
            self.sh(f"echo {shlex.quote(addr)} > {to}")
        return addr

    def bind(self, addr: str | None = None) -> None:
        """Bind our driver to the device at *addr* (default: ours) and wait for its node;
        a device another driver holds (:meth:`bind_uio_pci_generic`'s) is let go first
        and its ``driver_override`` cleared."""
        with self._operation("bind()"):
            self._bind(addr)

    def _bind(self, addr: str | None) -> None:
        addr = addr or self.pci_address()
        name = self.module_name()
        dev = shlex.quote(f"/sys/bus/pci/devices/{addr}")
        a = shlex.quote(addr)
        self.sh(
            f'd={dev}; if [ -e "$d/driver" ] && '
            f'[ "$(basename "$(readlink "$d/driver")")" != {shlex.quote(name)} ]; '
            f'then echo {a} > "$d/driver/unbind"; fi; echo > "$d/driver_override"'
        )
        to = shlex.quote(f"/sys/bus/pci/drivers/{name}/bind")
        self.sh(f"echo {a} > {to}")
        self.wait_for_node(self.dev)

    def _held_elsewhere(self, name: str) -> str:
        """Why the driver *name* could not bind the device when another driver holds it
        or its ``driver_override`` names another one (as :meth:`bind_uio_pci_generic`
        leaves it), else ""."""
        try:
            dev = shlex.quote(f"/sys/bus/pci/devices/{self.pci_address()}")
            out = self.sh(
                f'cat {dev}/driver_override; basename "$(readlink {dev}/driver)" 2>/dev/null',
                check=False,
            ).split()
        except GuestError:
            return ""
        override, holder = [*out, "", ""][:2]
        if override not in ("(null)", "", name):
            held = (
                ", which holds the device"
                if holder == override
                else f"; {holder} holds the device"
                if holder
                else ""
            )
            return (
                f": the device's driver_override names {override} (bind_uio_pci_generic() "
                f"sets it){held}: g.bind() gives it back to {name}"
            )
        if holder and holder != name:
            return f": {holder} holds the device: g.bind() gives it back to {name}"
        return ""

    def bind_uio_pci_generic(self) -> tuple[str, RunResult]:
        """Move the device from our driver to the kernel's uio_pci_generic (through
        ``driver_override``); (PCI address, the bind command's result: rc != 0 when
        uio_pci_generic refuses the device, e.g. with broken INTx disable)."""
        with self._operation("bind_uio_pci_generic()"):
            return self._bind_uio_pci_generic()

    def _bind_uio_pci_generic(self) -> tuple[str, RunResult]:
        addr = self.unbind()
        override = shlex.quote(f"/sys/bus/pci/devices/{addr}/driver_override")
        self.sh(f"modprobe uio_pci_generic && echo uio_pci_generic > {override}")
        # through _run: a guest that dies under the bind is named, not an rc of -1
        to = "/sys/bus/pci/drivers/uio_pci_generic/bind"
        r = self._run(f"echo {shlex.quote(addr)} > {to}", timeout=60)
        if r.rc == 0:
            self.wait_for_node("/dev/uio0")
        return addr, r

    # -- the agent ----------------------------------------------------------------------
    def start_agent(self) -> AgentClient:
        """Connect to the guest's agent daemon (starting it if it does not run)."""
        try:
            self._connect_agent()
        except SshError:
            self._await_launch(self._launch_agent())
            self._connect_agent()
        assert self._agent is not None
        return self._agent

    def _launch_agent(self) -> RemoteProcess:
        """Start the agent daemon in the guest; it detaches once it listens."""
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        return self.ssh.open_process(
            agent_command(getattr(self.image, "agent_package", "irqlab_agent"))
        )

    def _await_launch(self, launcher: RemoteProcess) -> None:
        status = launcher.exit_status(self.config.agent_timeout)
        if status is None:  # still running: reading its output would wait for its EOF
            launcher.abandon()  # the failed start stops the guest
            raise GuestTimeout(
                f"the agent daemon did not detach within agent_timeout="
                f"{self.config.agent_timeout:g} s (it detaches once it listens)"
            )
        out = launcher.stdout.read(4096).decode(errors="replace")
        err = launcher.stderr.read(4096).decode(errors="replace")
        launcher.close(timeout=2)
        if status == -1 or _by_signal(status):  # its channel gone, or killed: did the
            self._raise_fault()  # kernel die?
        if status != 0:
            raise GuestError(
                f"the agent daemon did not start (exit status {status}): {out.strip()} "
                f"{err.strip()}".strip()
            )

    def _connect_agent(self) -> None:
        """A session with the agent daemon through an SSH port forward; waits for hello.
        A guest or QEMU that dies meanwhile is named (GuestFault), not by the socket's
        or SSH's error."""
        try:
            self._open_agent_session()
        except (SshError, AgentError):  # refused (no daemon listens), or no hello
            self._name_fault()
            raise
        except (paramiko.SSHException, OSError, EOFError):
            # the connection broke: QEMU's exit resets it before QEMU can be reaped
            self._raise_fault()
            raise

    def _open_agent_session(self) -> None:
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        chan = self.ssh.open_forward("127.0.0.1", AGENT_PORT)
        paths = self.machine.paths if self.machine is not None else None
        logs = paths.log_dir if paths is not None else log_dir()
        stdin, stdout, _ = channel_files(chan)
        client = AgentClient(
            stdin,
            stdout,
            None,
            name="agent",
            logs=logs,
            on_close=chan.close,
            diagnose=self._diagnose,
            link_lost=lambda: self._forward_lost(chan),
            frozen=lambda: self._frozen_verdict(client),
        )
        client.label = f"the guest {self.config.name!r}"  # in its notices
        try:
            client.wait_hello(self.config.agent_timeout)
            if self.config.freeze_timeout is not None:
                client.request("heartbeat", interval_ms=HEARTBEAT_MS)
                client.last_heartbeat = time.monotonic()  # the reply counts as the first
        except BaseException:
            with contextlib.suppress(Exception):
                client.close(timeout=1)
            raise
        self._agent = client

    def _frozen_verdict(self, agent: AgentClient) -> Fault | None:
        """Asked when a wait of *agent*'s timed out: the guest's fault, and when its
        heartbeat has been silent for SILENT_BEAT_S, the health watch's verdict awaited
        until it is due (freeze_timeout and a greeting's time, x load) or a heartbeat
        comes (the guest runs: the wait's own timeout is the story).  A request shorter
        than the verdict's limit (a ping's 10 s) timed out on a frozen guest unnamed."""
        from irqlab.vm.loadscale import scaled

        beat, limit = agent.last_heartbeat, self.config.freeze_timeout
        if self.fault is not None or beat is None or limit is None or self._watch is None:
            return self.fault
        if time.monotonic() - beat < SILENT_BEAT_S:
            return None
        due = beat + scaled(limit) + scaled(SSH_GREETING_S) + 1.0
        while time.monotonic() < due and agent.last_heartbeat == beat and not agent.eof:
            fault = self.wait_fault(min(0.1, max(0.0, due - time.monotonic())))
            if fault is not None:
                return fault
        return self.fault

    def _forward_lost(self, chan: paramiko.Channel) -> str | None:
        """Why the agent's session ended if its SSH forward *chan* closed with its SSH
        connection (no EOF from the agent's end: the agent did not close it), else
        None.  Asked after the health watch's verdict (none)."""
        transport = chan.get_transport()
        if chan.eof_received or (transport is not None and transport.is_active()):
            return None  # the agent closed its socket: it exited (or was killed)
        alive = self._alive()
        return (
            "its SSH forward ended with the guest's SSH connection (was the guest's sshd "
            f"killed?); the agent may still run{'; ' + alive if alive else ''}"
        )

    @property
    def agent(self) -> AgentClient:
        """The agent, restarted if it died (a test may have killed it), or a new session
        of it when a request's wait was interrupted (pytest-timeout ended a test in it:
        the next test's first request waited for the rest of that one; the daemon stops
        a session stuck in a request when a new one takes over)."""
        __tracebackhide__ = hide_frame
        agent = self._agent  # this one, whatever another thread's close() does meanwhile
        if agent is None or _agent_stale(agent):
            self._take_agent_lock()
            try:  # checked again: another thread may have replaced it
                agent = self._agent
                if agent is None or _agent_stale(agent):
                    agent = self._replace_agent()
            finally:
                self._agent_holder = None
                self._agent_lock.release()
        return agent

    def _take_agent_lock(self) -> None:
        """Take the agent lock, waiting for another thread's replacement of the session
        at most :meth:`_agent_lock_wait` s: then :class:`GuestTimeout` names that thread
        and what it does (the others waited with no bound and no word while the holder's
        kill of a stuck daemon waited, e.g. behind another thread's SSH command)."""
        wait = self._agent_lock_wait()
        if not self._agent_lock.acquire(timeout=wait):
            holder = self._agent_holder
            held = (
                f"thread {holder[0]!r} has been at it for "
                f"{time.monotonic() - holder[1]:.0f} s ({holder[2]})"
                if holder is not None
                else "another thread held it"
            )
            raise GuestTimeout(
                f"the guest {self.config.name!r}: no agent session after {wait:.0f} s of "
                f"waiting for another thread's new one: {held}"
            )
        try:  # held from here on: a Ctrl-C before the caller's try must not keep it
            self._agent_holder = (threading.current_thread().name, time.monotonic(), "")
            self._agent_doing("closing the old agent session")
        except BaseException:
            self._agent_holder = None
            self._agent_lock.release()
            raise

    def _agent_doing(self, what: str) -> None:
        """What the thread holding the agent lock does now, for the others' error."""
        if self._agent_holder is not None:
            self._agent_holder = (*self._agent_holder[:2], what)

    def _agent_lock_wait(self) -> float:
        """How long a thread waits for another's replacement of the agent session: the
        kill of a stuck daemon, agent_timeout three times (a greeting, the daemon's
        launch, a greeting again) and a margin (a channel's opening, a reconnect): each
        of its steps is bounded; this stands for a wait that another thread's SSH
        command makes longer."""
        from irqlab.vm.loadscale import scaled

        return scaled(AGENT_KILL_S + AGENT_LOCK_MARGIN_S) + 3 * self.config.agent_timeout

    def _replace_agent(self) -> AgentClient:
        """A new agent session for :attr:`agent`, the old one closed (its daemon killed
        when the health watch gave it up); under the agent lock.  One that another
        thread's :meth:`close` made needless is closed and said (it would have lived on,
        its readers with it, in a closed guest)."""
        __tracebackhide__ = hide_frame
        closes = self._closes
        old = self._agent
        if old is not None:
            # the health watch gave it up: its daemon answers no one, and is killed
            hello = old.hello_message if old.abandoned is not None else None
            with contextlib.suppress(Exception):
                # no goodbye after an interrupted request: it waits behind that one
                old.close(timeout=2, goodbye=old.interrupted is None)
            if hello is not None:
                self._kill_stuck_agent(int(hello["pid"]))
        self._agent = None
        self._agent_doing("starting a new agent session")
        agent = self.start_agent()
        if self._closes != closes:
            self._agent = None
            with contextlib.suppress(Exception):
                agent.close(timeout=2)
            raise self._closed_meanwhile("starting a new agent session")
        return agent

    def _kill_stuck_agent(self, pid: int) -> None:
        """Kill the agent daemon *pid* the health watch gave up (:data:`_KILL_AND_WAIT`)
        within AGENT_KILL_S (x load); a guest that does not let it is
        :class:`GuestTimeout` or :class:`GuestError` naming the kill (it was the SSH
        command's own error, after its default 60 s), one that died or froze
        :class:`GuestFault`."""
        from irqlab.vm.loadscale import scaled

        doing = f"killing the agent daemon (pid {pid}) the health watch gave up"
        self._agent_doing(doing)
        try:
            self.sh(_KILL_AND_WAIT.format(pid=pid, port=AGENT_PORT), timeout=scaled(AGENT_KILL_S))
        except (SshError, GuestError) as e:
            error = GuestTimeout if isinstance(e, TimeoutError) else GuestError
            raise error(
                f"the guest {self.config.name!r}: no new agent session: {doing} failed: {e}"
            ) from e

    def reset(self) -> None:
        """Between tests: return the device's inputs to rest (a running burst stopped,
        every GPIO input driven low), disarm every path, close every handle, zero device
        counters, and load our driver again with the config's parameters if a test
        unloaded it or reloaded it with others (:meth:`reload_module`).

        The inputs go first: a line a test left high made the next test's rising edge
        on it never happen, and an event their return to rest raises is flushed with
        the agent's reset and counted before the counters are zeroed.  The event
        sequence (``next_seq``) is the device's and goes on."""
        if self._injector is not None:
            self._injector.stop_burst()
            self._injector.set_lines(0)
        agent = self.agent
        node = self.driver_node()  # its absence is a module to load again
        try:
            reply = agent.reset(node)
        except AgentError:
            agent.close(timeout=2)
            self._agent = None
            agent = self.agent
            reply = agent.reset(node)
        present = reply.get("present")
        orphans = reply.get("orphans")  # (said by agent.reset())
        self.orphan_reads = list(orphans) if isinstance(orphans, list) else []
        # by the kernel log's clock (printk's runs milliseconds ahead of the agent's
        # CLOCK_MONOTONIC: a splat in the last ms of a test was blamed on the next)
        began = reply.get("kernel_log_ns", reply.get("monotonic_ns"))
        self.reset_at_ns = began if isinstance(began, int) else None
        agent.drain_events()
        wanted = self.config.module_params
        if self.config.load_irqlab and not (present and self._loaded_as(wanted)):
            self.reload_module(**wanted)
        if self._injector is not None:
            self._injector.reset_counters()

    def _loaded_as(self, params: Mapping[str, Any]) -> bool:
        """Whether our driver was last loaded, through this object, with *params*
        (compared as the kernel sees them: ``ring_size=64`` and ``"64"`` are one)."""
        loaded = self._loaded_params

        def words(ps: Mapping[str, Any]) -> list[str]:
            return sorted(kernel_param(k, v) for k, v in ps.items())

        return loaded is not None and words(loaded) == words(params)


# s (x load) the kill of an agent daemon the health watch gave up may take (its script
# waits up to 5 s for the exit): a guest that does not answer it is said, not waited on
AGENT_KILL_S = 15.0
# s (x load) a thread waits for another's new agent session, beyond agent_timeout x 3
# and the kill (see Guest._agent_lock_wait)
AGENT_LOCK_MARGIN_S = 120.0

# An agent daemon the health watch gave up killed, and waited for (up to 5 s) until
# its listening port is free for the next one.  Its pid may be another process's by
# then (the agent died, the pid was reused): only a process whose command line listens
# on the agent's port is killed, and the wait is for that process alone: the shell
# stands in its /proc directory, whose entries are gone once it is reaped, whichever
# process has the pid next (kill -0 waited 5 s for an unrelated one).  One still there
# after the 5 s (stuck in the kernel: state D; or a zombie its parent does not reap)
# holds the port the next one needs: the script fails naming it and its state, where
# it exited 0 and the next agent failed to listen.
_KILL_AND_WAIT = (
    "if cd /proc/{pid} 2>/dev/null && tr '\\0' ' ' <cmdline | "
    "grep -qF -- '--listen 127.0.0.1:{port} '; then kill -9 {pid} 2>/dev/null; i=0; "
    "while [ -e stat ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
    'if [ -e stat ]; then echo "the agent daemon (pid {pid}) is still there 5 s after '
    "SIGKILL, in state $(sed 's/.*) //' stat | cut -d' ' -f1)\" >&2; exit 1; fi; fi"
)


class _FaultNamingQmp:
    """The device injector's QMP runner: a QMP failure once the guest died or froze is
    :class:`GuestFault` naming why (the health watch's verdict, the console's tail),
    not "QMP qom-get: not connected"."""

    def __init__(self, guest: Guest, machine: Machine, doing: str = "") -> None:
        self._guest, self._machine = guest, machine
        self._doing = doing  # what a fault names (default: "QMP <command>")

    def __repr__(self) -> str:
        """The guest's QEMU, e.g. ``guest 'e2e' <Machine qemu pid 1234 running, ...>``."""
        return f"guest {self._guest.config.name!r} {self._machine!r}"

    def qmp(self, command: str, args: Mapping[str, object] | None = None, /) -> Any:
        __tracebackhide__ = hide_frame
        # a partial, not a lambda: no frame of its own in a failed test's traceback
        doing = self._doing or f"QMP {command}"
        return self._naming_faults(doing, partial(self._machine.qmp, command, args))

    def qmp_many(
        self,
        commands: Sequence[tuple[str, Mapping[str, object] | None]],
        *,
        window: int = 8,
        timeout: float | None = None,
    ) -> list[Any]:
        __tracebackhide__ = hide_frame
        return self._naming_faults(
            f"QMP {len(commands)} pipelined commands",
            partial(self._machine.qmp_many, commands, window=window, timeout=timeout),
        )

    def _naming_faults(self, doing: str, call: Callable[[], _T]) -> _T:
        """*call*'s result; a guest known dead or frozen refuses it at once (a poll
        between two calls would not meet the verdict's abort), and a failure of it
        waits for the health watch's verdict and names it."""
        __tracebackhide__ = hide_frame
        from irqlab.vm.machine import MachineError

        if self._guest.machine is not self._machine:  # at once, not QMP's "not connected"
            raise GuestError(
                f"{doing}: this injector's QEMU was stopped (its guest was closed or "
                "restarted): take the running guest's g.injector"
            )
        fault = self._guest.fault
        if fault is not None:
            raise GuestFault(fault, doing)
        closes = self._guest._closes
        try:
            return call()
        except MachineError:
            closed = self._guest._closes != closes or self._machine.closing
            if closed and self._guest.fault is None:
                # another thread's close(): not "connection lost before the reply"
                raise self._guest._closed_meanwhile(doing) from None
            fault = self._guest.wait_fault(FAULT_VERDICT)
            if fault is not None:
                raise GuestFault(fault, doing) from None  # QMP's loss is its consequence
            raise


def agent_command(package: str) -> str:
    """The guest shell command that starts the agent daemon of *package*: it listens on
    AGENT_PORT and takes seeds on the reseed port, and detaches once it listens."""
    from irqlab.build.boot import RESEED_PORT

    return (
        f"exec python3 -m {package} --listen 127.0.0.1:{AGENT_PORT} "
        f"--reseed 0.0.0.0:{RESEED_PORT} --daemon {AGENT_LOG}"
    )


# Lines QEMU writes when the guest cannot go on although QEMU keeps running.
_QEMU_FATAL = re.compile(
    r"^.*(?:KVM internal error|kvm run failed|KVM: entry failed|emulation failure).*$", re.M
)


def _qemu_fatal(text: str) -> str | None:
    """The first fatal line in QEMU's output, or None."""
    m = _QEMU_FATAL.search(text)
    return m.group(0).strip() if m else None


AGENT_CLOSE_S = 10.0  # the agent session's goodbye at most (it waits 2 s per step)


def _within(limit: float, step: Callable[[], object], what: str) -> None:
    """Run the best-effort teardown *step* for at most *limit* s, in a thread of its own:
    a Ctrl-C that landed inside paramiko's send (between taking a lock and the ``with``
    that frees it) leaves that lock taken for good, and a goodbye sent over it then
    waited for ever, with QEMU never stopped.  Its errors are dropped."""

    def run() -> None:
        with contextlib.suppress(Exception):
            step()

    t = threading.Thread(target=run, name=f"close {what}", daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        print(f"irqlab: closing {what} did not finish within {limit:g} s: left", file=sys.stderr)


# QEMU's exit statuses when someone else ended it (SIGKILL, SIGTERM, SIGINT, SIGHUP);
# an abort or a crash of its own (SIGABRT, SIGSEGV) is QEMU's story, not the guest's
def _the_guests_doing(fault: Fault) -> bool:
    """Whether *fault* is the guest's own end, which its saved state may cause again: a
    kernel panic or oops its console or pvpanic showed.  Not QEMU's end (killed,
    crashed, or stopped: no QMP answer), nor a silence (a heartbeat's or SSH's verdict of
    a frozen guest: a loaded host stalls a good guest too)."""
    return not fault.qmp_silent and fault.cause.startswith(_GUESTS_OWN_END)


_GUESTS_OWN_END = tuple(word for _, word in CONSOLE_FAULTS)  # "guest kernel panic", ...


_KILLED_FROM_OUTSIDE = frozenset(
    -s for s in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
)


# What Guest.get's command says on stderr of a path that is there but no regular file,
# with its mode as stat's %f gives it (hex)
_NOT_A_FILE_MARK = "irqlab-get: not a regular file, mode "
_FILE_KINDS = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


# What Guest.get's command says on stderr of a regular file that never ends, with the
# path it resolves to
_ENDLESS_MARK = "irqlab-get: never ends: "
# Regular files a read of which never ends (it waits for the next kernel message, the
# next trace event), as the guest resolves a path (symbolic links followed): a case
# pattern of the shell's (its * matches a / too)
ENDLESS_FILES = "/proc/kmsg|*/tracing/trace_pipe|*/tracing/*/trace_pipe|*/trace_pipe_raw"


def _get_command(remote: str) -> str:
    """The guest command that writes the file *remote* to stdout, or refuses (exit 1) a
    path that is there but no regular file (:data:`_NOT_A_FILE_MARK` on stderr) or a
    file a read of which never ends (:data:`ENDLESS_FILES`, :data:`_ENDLESS_MARK`),
    before reading it (a symbolic link is followed)."""
    q = shlex.quote(remote)
    return (
        f"if [ -e {q} ] && [ ! -f {q} ]; then "
        f'echo "{_NOT_A_FILE_MARK}$(stat -L -c %f -- {q} 2>/dev/null)" >&2; exit 1; fi; '
        f'r=$(readlink -f {q} 2>/dev/null); [ -n "$r" ] || r={q}; '
        f'case "$r" in {ENDLESS_FILES}) echo "{_ENDLESS_MARK}$r" >&2; exit 1;; esac; '
        f"exec cat -- {q}"
    )


def _endless(path: str) -> str:
    """What :meth:`Guest.get` says of a file that never ends, *path* as the guest
    resolved it (:data:`ENDLESS_FILES`)."""
    if path == "/proc/kmsg":
        return (
            "it never ends (a read of /proc/kmsg waits for the kernel's next message, and "
            "takes the messages from the log's other readers): the kernel log so far is "
            'g.sh("dmesg"), or irqlab.vm.kernlog.guest_kernel_log(g) with the taint flags'
        )
    return (
        f"it never ends (a read of {path} waits for the next trace event): the trace so "
        "far is the trace file beside it; g.run() a reader of your own, with its timeout"
    )


def _not_a_file(mode: str) -> str:
    """What :meth:`Guest.get` says of a path whose *mode* (hex, stat's %f; "" when the
    guest could not say) is no regular file's."""
    try:
        kind = _FILE_KINDS.get(stat.S_IFMT(int(mode, 16)), "a special file")
    except ValueError:
        kind = "a special file"
    if kind == "a directory":
        return "it is a directory, not a regular file"
    return (
        f"it is {kind}, not a regular file: get reads only files (a read of {kind} waits "
        "for data that may never come; g.run() a reader of your own, with its timeout)"
    )


def _dir_identity(directory: Path | None) -> tuple[int, int, int] | None:
    """Which directory *directory* is (device, inode, change time), to tell a snapshot
    from one saved in its place since (renamed into place: another inode, another
    change time); None when there is none."""
    if directory is None:
        return None
    try:
        st = directory.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def foreign_arch_accel(guest_arch: str) -> AccelChoice:
    """TCG for a guest of another architecture than the host's (KVM runs the host's own
    only), saying why, and that a KVM asked for ($IRQLAB_ACCEL, ``--accel``) is not
    used."""
    import platform

    from irqlab.vm.accel import AccelChoice, requested

    host = platform.machine()
    reason = f"tcg: an {guest_arch} guest on an {host} host (KVM runs the host's own only)"
    if requested() == "kvm":
        reason += "; the KVM asked for is not used"
    return AccelChoice("tcg", reason, probed=False)


def _build_progress(msg: str) -> None:
    """A guest start's build progress: each build's first line ("guest image D:
    building ...") through :mod:`irqlab.notice`, past pytest's capture (after a change
    to the agent or the driver a test's first guest rebuilt the image in silence), the
    steps on stderr as every build says them."""
    from irqlab.build.steps import stderr_log

    if ": building" in msg:
        notice.say(f"[irqlab] {msg}")
    else:
        stderr_log(msg)


def _sha256(path: Path | str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise _unreadable(path, e) from e


def _check_readable(path: Path | str) -> None:
    """:class:`GuestConfigError` unless the local file *path* can be opened for reading
    (nothing read: :func:`_sha256` reads the files a key holds)."""
    try:
        Path(path).open("rb").close()
    except OSError as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path | str, e: OSError) -> GuestConfigError:
    return GuestConfigError(f"cannot read {path} for the guest: {e.strerror}")


def ensure_snapshot(config: GuestConfig | None = None) -> Path:
    """The ready-state snapshot of *config*'s guest, made by one cold boot if missing
    (e.g. before a test session or a bench, so that every guest after it restores).
    One that exists is returned as it is: no guest starts (a restore cost every test
    session and xdist worker about a second)."""
    from irqlab.vm import snapshot

    g = Guest(config or GuestConfig(name="snapshot"))
    if not g.config.snapshot:
        raise GuestError("no snapshot: GuestConfig(snapshot=False)")
    if g.config.extra_devices:
        raise GuestError("no snapshot: a guest with extra_devices always cold-boots")
    found = snapshot.lookup(g.prepare().snapshot_key())
    if found is not None and snapshot.intact(found):
        return found
    try:
        g.start()
        if g.snapshot_dir is None:  # the boot was not saved: why was said
            raise GuestError(f"no snapshot: {g.snapshot_error or 'none was saved'}")
        return g.snapshot_dir
    finally:
        g.close()
