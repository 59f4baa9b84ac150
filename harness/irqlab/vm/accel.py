"""Choose the accelerator: KVM only where it really runs a guest, TCG otherwise.

The presence of ``/dev/kvm`` proves little (nested paravirtual KVM opens it and
then cannot run a normal kernel), so :func:`probe` boots the tiny firmware of
:mod:`irqlab.vm.probe_rom` with ``-accel kvm`` and waits for its long-mode
marker on the serial port.  Results are cached per QEMU binary and host kernel
for the life of the process.

Override: the ``accel`` argument of :func:`choose`, else ``$IRQLAB_ACCEL``
(``kvm``, ``tcg`` or ``auto``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import re
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from irqlab.errors import ConfigError, hide_frame
from irqlab.paths import cache_dir
from irqlab.vm import probe_rom, proc

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "CHOICES",
    "DEFAULT_TIMEOUT",
    "ENV_VAR",
    "KVM_DEVICE",
    "LOADER_ERROR",
    "Accel",
    "AccelChoice",
    "ProbeFn",
    "ProbeResult",
    "choose",
    "choose_known",
    "clear_cache",
    "foreign_target",
    "known_verdict",
    "probe",
    "probe_argv",
    "qemu_target",
    "requested",
    "run_probe_guest",
    "verdict_key",
]

Accel = Literal["kvm", "tcg"]
ENV_VAR = "IRQLAB_ACCEL"
# set by whoever copied its option into ENV_VAR ("--irqlab-accel tcg"): said as the
# cause while ENV_VAR still holds that value
SOURCE_ENV = "IRQLAB_ACCEL_SOURCE"
CHOICES = ("kvm", "tcg", "auto")  # what $IRQLAB_ACCEL (and --irqlab-accel) may say
KVM_DEVICE = Path("/dev/kvm")
# the dynamic loader's words when a program cannot start (a shared library missing)
LOADER_ERROR = re.compile(r"error while loading shared libraries:.*")
DEFAULT_TIMEOUT = 5.0  # a working KVM reaches long mode in milliseconds
# the QEMU targets whose guests KVM runs on a host of each architecture (uname -m): its
# own (and the 32-bit one its CPUs run too)
KVM_TARGETS = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm")}
_QEMU_SYSTEM = re.compile(r"qemu-system-([a-z0-9_]+)")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    # the verdict says something of KVM here, and is kept for this QEMU and host boot;
    # not so when QEMU could not start at all (a shared library missing: installing it
    # makes the same binary run, maybe with KVM)
    kept: bool = True


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str  # one line, for logs
    probed: bool  # a probe ran (False when overridden or /dev/kvm unusable)

    def qemu_args(self) -> list[str]:
        return ["-accel", self.accel]


ProbeFn = Callable[[Path, Path | None, float], ProbeResult]

_cache: dict[str, ProbeResult] = {}


def _tail(path: Path, limit: int = 400) -> str:
    """The end of QEMU's stderr on one line, without our own SIGTERM's notice."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    text = " ".join(ln.strip() for ln in lines if "terminating on signal" not in ln)
    return text[-limit:]


def probe_argv(binary: Path, rom: Path, accel: str, datadir: Path | None) -> list[str]:
    argv = [str(binary)]
    if datadir is not None:
        argv += ["-L", str(datadir)]
    argv += [
        "-machine", "q35",
        "-accel", accel,
        "-m", "32",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-monitor", "none",
        "-bios", str(rom),
        "-serial", "stdio",
    ]  # fmt: skip
    return argv


def run_probe_guest(
    binary: Path, accel: str, *, datadir: Path | None = None, timeout: float = DEFAULT_TIMEOUT
) -> ProbeResult:
    """Boot the probe firmware with *accel*; ok when it prints its long-mode marker in time."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="irqlab-probe-") as tmp:
        rom = Path(tmp) / "probe.rom"
        rom.write_bytes(probe_rom.build())
        errlog = Path(tmp) / "stderr.log"
        with errlog.open("wb") as err:
            child = proc.spawn(
                probe_argv(binary, rom, accel, datadir), stdout=subprocess.PIPE, stderr=err
            )
        out = b""
        try:
            assert child.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(child.stdout, selectors.EVENT_READ)
                while probe_rom.LONG_MODE_MARKER not in out:
                    left = start + timeout - time.monotonic()
                    if left <= 0 or not sel.select(left):
                        break
                    chunk = os.read(child.stdout.fileno(), 4096)
                    if not chunk:  # QEMU closed stdout: it is exiting
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            child.wait(2.0)
                        break
                    out += chunk
        finally:
            exited = child.poll()  # None: still running (we stop it)
            proc.stop(child, term_timeout=2.0)
            if child.stdout is not None:
                child.stdout.close()
        took = time.monotonic() - start
        if probe_rom.LONG_MODE_MARKER in out:
            return ProbeResult(
                True, f"-accel {accel} ran the long-mode probe guest in {took:.2f} s"
            )
        stderr = _tail(errlog)
        if exited is not None and not out:
            return ProbeResult(
                False,
                f"QEMU -accel {accel} exited with status {exited} at startup: {stderr}",
                kept=LOADER_ERROR.search(stderr) is None,
            )
        if out.startswith(probe_rom.STAGE_REAL):
            stage = "ran real-mode code but did not reach long mode"
        else:
            stage = "produced no output"
        why = f"the probe guest {stage} within {timeout:g} s under -accel {accel}"
        return ProbeResult(False, why + (f"; QEMU said: {stderr}" if stderr else ""))


def _kvm_usable() -> str | None:
    """Why KVM cannot be used at all, or None if /dev/kvm opens."""
    if not KVM_DEVICE.exists():
        return f"{KVM_DEVICE} does not exist"
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        why = f"cannot open {KVM_DEVICE}: {e.strerror}"
        if e.errno in (errno.EACCES, errno.EPERM):
            who = _owner_and_mode(KVM_DEVICE)
            why += f" ({who}; ask for read-write access: the kvm group or an ACL)"
        return why
    os.close(fd)
    return None


def _owner_and_mode(path: Path) -> str:
    """``crw------- root:root``: who may open *path*, for a refusal's next step."""
    import grp
    import pwd
    import stat

    try:
        st = path.stat()
    except OSError:
        return "its owner unknown"
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {user}:{group}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def verdict_key(binary: Path, datadir: Path | None) -> str:
    """What a probe's verdict depends on: this QEMU binary, this host boot and kernel, and
    /dev/kvm itself.  A new boot, kernel, binary or KVM device means a new probe."""
    st = binary.stat()
    kvm = os.stat(KVM_DEVICE) if os.path.exists(KVM_DEVICE) else None
    parts = [
        str(binary.resolve()),
        str(st.st_mtime_ns),
        str(st.st_size),
        os.uname().release,
        _boot_id(),
        str(datadir),
        f"{kvm.st_rdev}:{kvm.st_ctime_ns}" if kvm else "-",
    ]
    # os.fsencode: a path's bytes as the OS has them (a non-ASCII cache path under
    # LC_ALL=C decodes to surrogates, which str.encode() refused with a traceback)
    return hashlib.sha256(b"\0".join(map(os.fsencode, parts))).hexdigest()[:24]


def _verdict_file(key: str) -> Path:
    return cache_dir() / "accel-probe" / f"{key}.json"


def _load_verdict(key: str) -> ProbeResult | None:
    try:
        data = json.loads(_verdict_file(key).read_text())
        return ProbeResult(bool(data["ok"]), str(data["reason"]) + " (cached verdict)")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_verdict(key: str, result: ProbeResult) -> None:
    f = _verdict_file(key)
    with contextlib.suppress(OSError):
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ok": result.ok, "reason": result.reason}))
        tmp.replace(f)


def probe(
    binary: Path,
    datadir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    fresh: bool = False,
) -> ProbeResult:
    """Does KVM run a guest with this QEMU here?

    The verdict is cached in memory and on disk (the build cache), keyed by
    :func:`verdict_key`, so only the first run after a host boot pays for the probe
    (up to *timeout* where KVM hangs, as under nested PVM).  *fresh*: probe again
    whatever is cached (and cache the new verdict).
    """
    key = verdict_key(binary, datadir)
    cached = None if fresh else _kept_verdict(key)
    if cached is None:
        cached = run_probe_guest(binary, "kvm", datadir=datadir, timeout=timeout)
        if cached.kept:
            _save_verdict(key, cached)
            _cache[key] = cached
    return cached


def known_verdict(binary: Path, datadir: Path | None = None) -> ProbeResult | None:
    """The probe's verdict for this QEMU on this host boot if one was reached (in memory
    or on disk), without probing; None if none was."""
    try:
        key = verdict_key(binary, datadir)
    except OSError:
        return None
    return _kept_verdict(key)


def _kept_verdict(key: str) -> ProbeResult | None:
    """The verdict of *key* kept in memory, else on disk (then kept in memory too)."""
    found = _cache.get(key) or _load_verdict(key)
    if found is not None:
        _cache[key] = found
    return found


def clear_cache() -> None:
    """Forget verdicts, in memory and on disk."""
    _cache.clear()
    with contextlib.suppress(OSError):
        for f in (cache_dir() / "accel-probe").glob("*.json"):
            f.unlink()


def requested(accel: str | None = None) -> Accel | None:
    """The forced accelerator from *accel* or $IRQLAB_ACCEL; None means probe ("auto").
    :class:`~irqlab.errors.ConfigError` (a ValueError) for a value that is none of
    :data:`CHOICES`."""
    value = accel if accel is not None else os.environ.get(ENV_VAR, "")
    value = value.strip().lower()
    if value in ("", "auto"):
        return None
    if value == "kvm":
        return "kvm"
    if value == "tcg":
        return "tcg"
    source = "accel argument" if accel is not None else f"${ENV_VAR}"
    choices = f"{', '.join(CHOICES[:-1])} or {CHOICES[-1]}"
    raise ConfigError(f"{source} must be {choices}, not {value!r}")


def qemu_target(binary: Path) -> str | None:
    """The guest architecture the QEMU *binary* emulates, as its name says
    (``qemu-system-aarch64``: aarch64); None when its name says none."""
    m = _QEMU_SYSTEM.fullmatch(binary.name)
    return m[1] if m else None


def foreign_target(binary: Path, host: str | None = None) -> str | None:
    """Why KVM cannot run a guest of the QEMU *binary* on this host (*host*: its
    architecture, default ``uname -m``), naming both architectures; None when its
    target is the host's (or its name does not say which it is: the probe tells)."""
    target = qemu_target(binary)
    host = host or platform.machine()
    if target is None or target in KVM_TARGETS.get(host, (host,)):
        return None
    return (
        f"{binary.name} emulates {target} and this host is {host}: KVM runs guests of "
        f"the host's own architecture only, so {target} guests run under TCG here"
    )


def choose(
    binary: Path,
    *,
    accel: str | None = None,
    datadir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    probe_fn: ProbeFn | None = None,
) -> AccelChoice:
    """KVM if forced or if the probe boots a guest with it, else TCG; with the reason.
    A QEMU of another architecture than the host's (:func:`foreign_target`) is TCG
    without a probe (it said QEMU's "unsupported machine type"), a KVM forced too."""
    forced = requested(accel)
    foreign = foreign_target(binary) if forced != "tcg" else None
    if forced is not None and foreign is None:
        reason = f"{forced} forced by {_forced_by(accel)}"
        known = known_verdict(binary, datadir) if forced == "kvm" else None
        if known is not None and not known.ok:  # said, not probed again: it was forced
            reason += f", though the KVM probe found it does not work here ({known.reason})"
        elif forced == "kvm" and (unusable := _kvm_usable()) is not None:
            reason += f", though {unusable}"  # QEMU's refusal, later, says only that
        return AccelChoice(forced, reason, probed=False)
    if foreign is not None:
        unused = f"; the KVM forced by {_forced_by(accel)} is not used" if forced else ""
        return AccelChoice("tcg", f"tcg: {foreign}{unused}", probed=False)
    unusable = _kvm_usable()
    if unusable is not None:
        return AccelChoice("tcg", f"tcg: {unusable}", probed=False)
    result = (probe_fn or probe)(binary, datadir, timeout)
    if result.ok:
        return AccelChoice("kvm", f"kvm: {result.reason}", probed=True)
    return AccelChoice("tcg", f"tcg: KVM probe failed: {result.reason}", probed=True)


def _forced_by(accel: str | None) -> str:
    """Who forced the accelerator: the *accel* argument, else $IRQLAB_ACCEL, or the
    option that set it to what it still is (SOURCE_ENV: "--irqlab-accel tcg",
    pytest's)."""
    if accel is not None:
        return f"accel={accel!r} argument"
    forced = requested()
    source = os.environ.get(SOURCE_ENV, "")
    if not source.endswith(f" {os.environ.get(ENV_VAR, '')}"):
        source = f"${ENV_VAR}={forced}"
    return source


class _NotProbed(Exception):
    """Only a probe would tell (:func:`choose_known`)."""


def choose_known(binary: Path, *, datadir: Path | None = None) -> AccelChoice | None:
    """:func:`choose`'s choice when it needs no probe now (forced, no usable /dev/kvm,
    or a verdict a probe reached is kept: :func:`known_verdict`); None when only a
    probe would tell.  Nothing is started (pytest's header: ``--co`` and ``--fixtures``
    started a probe QEMU)."""

    def kept(binary: Path, datadir: Path | None, _timeout: float) -> ProbeResult:
        found = known_verdict(binary, datadir)
        if found is None:
            raise _NotProbed
        return found

    try:
        return choose(binary, datadir=datadir, probe_fn=kept)
    except _NotProbed:
        return None
