"""The ``irqlab`` command line.

Each subcommand is a function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; add new ones the same way.

``python -m irqlab.cli.main`` is the ``irqlab`` command: it goes through
:func:`irqlab.cli.entry.main` before this module's imports (whose signal handlers come
first: a Ctrl-C while Python imports is a quiet 130), and runs this module as itself,
not as a second copy named ``__main__``.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m irqlab.cli.main: as the irqlab command (above)
    import sys

    from irqlab.cli.entry import main as entry

    sys.exit(entry())

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from irqlab.build.arch import MODULE_BUILD_PACKAGES, build_module_command
from irqlab.cli.argtypes import UsageError, count, guest_arch, positive
from irqlab.errors import IrqlabError
from irqlab.sigsafe import SafeRaise, SignalRaise, clear_caught_interrupt
from irqlab.teardown_watch import TeardownWatch

__all__ = [
    "TEARDOWN_SIGNALS",
    "CannotRun",
    "Terminated",
    "build_parser",
    "cmd_build_image",
    "cmd_build_qemu",
    "cmd_buildroot_build",
    "cmd_buildroot_check",
    "cmd_cache",
    "cmd_kdir",
    "cmd_probe_accel",
    "cmd_regs",
    "command_parser",
    "main",
    "teardown_on_signals",
    "version_text",
]


def cmd_build_qemu(args: argparse.Namespace) -> int:
    from irqlab.build.qemu import ensure_qemus

    # x86_64, plus the targets IRQLAB_ARCHES names (e.g. IRQLAB_ARCHES=x86_64,aarch64)
    for inst in ensure_qemus(force=args.force).values():
        print(f"{inst.binary}\n  version: {inst.version}\n  firmware (-L): {inst.datadir}")
    return 0


def cmd_build_image(args: argparse.Namespace) -> int:
    from irqlab.build import arch, archguest
    from irqlab.build.image import DEFAULT_EXTRA_PACKAGES, ensure_image
    from irqlab.build.kmod import ensure_kmod, ensure_style_tools

    target = arch.by_name(args.arch) if args.arch else arch.selected(os.environ)
    if target.name != "x86_64" and args.force:
        raise UsageError(
            f"--force: only the x86_64 image is rebuilt on demand, not {target.name}'s"
        )
    from irqlab.cli.guestcmd import check_env_kmod
    from irqlab.vm.guest import PrerequisiteMissing, env_kmod

    check_env_kmod(target)  # a usage error naming the variable
    try:
        # the image Guest() boots: our driver or $IRQLAB_KMOD's build of it, with the
        # packages every guest's image has
        if target.name != "x86_64":  # as Guest(GuestConfig(arch=...)) finds or builds it
            _, img, ko = archguest.prerequisites(target, DEFAULT_EXTRA_PACKAGES, env_kmod(target))
        else:
            ensure_style_tools()
            ko = env_kmod() or ensure_kmod(force=args.force)
            img = ensure_image(kmod=ko, force=args.force, extra_packages=DEFAULT_EXTRA_PACKAGES)
    except (FileNotFoundError, archguest.Missing, PrerequisiteMissing) as e:
        print(f"irqlab: {e}", file=sys.stderr)
        return 1
    print(f"module:    {ko}\nkernel:    {img.kernel} ({img.kernel_version})")
    print(f"initramfs: {img.initramfs}\ncmdline:   {img.cmdline}")
    return 0


QEMU_VERSION_WORDS = "QEMU emulator version"  # the first line of `qemu-system-* --version`


class CannotRun(IrqlabError, RuntimeError):
    """A program given on the command line exists but cannot start here (the loader's
    words say why): no usage error, the host lacks something."""


def _check_qemu_binary(binary: Path) -> None:
    """``--qemu`` names a QEMU binary (it runs, and its ``--version`` says QEMU), else a
    usage error (``/bin/true`` was probed, and said tcg)."""
    import subprocess

    from irqlab.cli.guestcmd import not_a_file
    from irqlab.vm.accel import LOADER_ERROR

    problem = not_a_file(binary, "a QEMU binary")
    if problem:
        raise UsageError(f"--qemu {binary}: {problem}")
    limit = 30  # s
    try:
        r = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=limit, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        why = e.strerror if isinstance(e, OSError) else f"no answer to --version within {limit} s"
        raise UsageError(f"--qemu {binary}: not a QEMU binary ({why})") from None
    said = r.stdout
    loader = LOADER_ERROR.search(r.stderr)
    if loader:  # it never started: that says nothing of what it is
        hint = " (irqlab build-qemu installs what the built QEMU needs)"
        raise CannotRun(f"--qemu {binary}: could not run it: {loader[0].strip()}{hint}")
    if QEMU_VERSION_WORDS not in said:
        said = f"its --version does not say {QEMU_VERSION_WORDS!r}"
        raise UsageError(f"--qemu {binary}: not a QEMU binary ({said})")


def cmd_probe_accel(args: argparse.Namespace) -> int:
    import functools

    from irqlab.cli.guestcmd import force_accel
    from irqlab.vm import accel

    force_accel(args.accel)
    accel.requested()  # $IRQLAB_ACCEL, before anything runs
    datadir: Path | None = None
    if args.qemu is not None:
        import shutil

        # a bare name is looked up on PATH, as running it did (qemu-system-x86_64)
        found = shutil.which(args.qemu) if "/" not in args.qemu else None
        binary = Path(found or args.qemu)
        _check_qemu_binary(binary)
    else:
        from irqlab.build.qemu import find_qemu

        inst = find_qemu()
        if inst is None:
            print("irqlab: no built QEMU; run 'irqlab build-qemu' or pass --qemu", file=sys.stderr)
            return 1
        binary, datadir = inst.binary, inst.datadir
    fresh = functools.partial(accel.probe, fresh=True) if args.fresh else None
    choice = accel.choose(binary, datadir=datadir, timeout=args.timeout, probe_fn=fresh)
    print(choice.accel)
    print(choice.reason, file=sys.stderr)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from irqlab.cli.cachecmd import cmd_cache as run

    return run(args)


def cmd_buildroot_build(args: argparse.Namespace) -> int:
    from irqlab.build.buildroot import ensure_image

    img = ensure_image(
        arch=args.arch, force=args.force, clean=args.clean, jobs=args.jobs, verbose=args.verbose
    )
    print(
        f"Buildroot {img.arch} image {img.version}: {img.kernel} + {img.initramfs} "
        f"({img.size} bytes)"
    )
    return 0


def _buildroot_arch(value: str) -> str:
    """``--arch`` of the Buildroot commands: an architecture with a Buildroot defconfig
    (its canonical name; ``amd64``/``arm64`` too), else argparse's usage error."""
    from irqlab.build.buildroot import BuildrootError, build_arch

    try:
        return build_arch(value).name
    except BuildrootError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _directory(text: str) -> str:
    """An argparse type: an existing directory (``--tree``), else a usage error."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r}: " + ("is not a directory" if path.exists() else "no such directory")
        )
    return text


def cmd_buildroot_check(args: argparse.Namespace) -> int:
    from irqlab.build import buildroot, buildroot_checks

    if not (args.download or args.tree or os.environ.get(buildroot.SOURCE_DIR_ENV)):
        print(
            f"irqlab buildroot-check: no Buildroot tree: pass --tree DIR (Buildroot "
            f"{buildroot.BUILDROOT_VERSION}'s source), or --download for the pinned release "
            f"(needs the internet), or set {buildroot.SOURCE_DIR_ENV}",
            file=sys.stderr,
        )
        return 2
    src = buildroot.ensure_source() if args.download else buildroot.source_tree(args.tree)
    arches = [args.arch] if args.arch else list(buildroot.DEFCONFIGS)
    results = buildroot_checks.offline_checks(
        src,
        python=args.python or sys.executable,
        defconfigs=[buildroot.DEFCONFIGS[a] for a in arches],
    )
    print(buildroot_checks.format_results(results))
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(
            f"buildroot-check: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(f"buildroot-check: all {len(results)} checks passed")
    return 0


def cmd_kdir(args: argparse.Namespace) -> int:
    from irqlab.build import arch
    from irqlab.build.imagekind import image_setting
    from irqlab.build.kernel import ensure_kernel
    from irqlab.build.kmod import (
        cross_args,
        ensure_cross_compiler,
        ensure_module_build_tools,
        module_make_args,
    )

    target = arch.by_name(args.arch) if args.arch else arch.selected(os.environ)
    from irqlab.build.archguest import check_apt_arch

    check_apt_arch(target)  # a foreign architecture apt does not know: how to add it
    k = ensure_kernel(arch=target)
    # what `make -C` runs (make, gcc, objtool's libelf1): a restored cache brings none
    ensure_module_build_tools()
    # not through irqlab.vm.guest (`make -C $(irqlab kdir)` needs no paramiko), and a
    # bad value is not this command's error
    if image_setting() == "buildroot":
        print(
            "irqlab kdir: these are the Debian image's kernel headers; for the Buildroot "
            "guest (IRQLAB_IMAGE=buildroot) build against its own kernel tree, "
            "<Buildroot output>/build/linux-<version>, with Buildroot's toolchain "
            "(a module built here is refused before the guest boots)",
            file=sys.stderr,
        )
    if args.make_args:
        ensure_cross_compiler(k)
        print(shlex.join(module_make_args(k)))
    else:
        print(k.headers_build_dir)
        cross = cross_args(k)
        if cross:  # a plain `make -C` would build for this host's architecture and fail
            print(
                f"irqlab kdir: these are {target.name} headers: build with "
                f"`{build_module_command(target.name)}` (it adds "
                f"{' '.join(cross)} and installs the cross compiler)",
                file=sys.stderr,
            )
    return 0


def cmd_regs(args: argparse.Namespace) -> int:
    from irqlab.contract.regs import PREFIX, REGS, bit_numbers

    want = args.prefix.upper()  # case-insensitive: `regs reg_` found nothing
    found = [
        (n, v)
        for n, v in REGS.items()
        if n.upper().startswith(want) or n.removeprefix(PREFIX).upper().startswith(want)
    ]
    if not found:
        print(f"irqlab: regs: no name starts with {args.prefix!r}", file=sys.stderr)
        return 1
    bits = bit_numbers(REGS)  # a bit number (IRQLAB_SRC_FIFO) read as a mask was 0x1
    for name, value in found:
        print(f"{name:36} {value:#x}" + (f"  ({bits[name]})" if name in bits else ""))
    return 0


def version_text() -> str:
    """``irqlab <version>``, and in a git checkout ``(git <commit>[, modified])``."""
    from importlib.metadata import PackageNotFoundError, version

    from irqlab import __version__
    from irqlab.paths import checkout_root

    try:
        text = f"irqlab {version('irqlab')}"
    except PackageNotFoundError:  # run from a tree that was never installed
        text = f"irqlab {__version__}"
    root = checkout_root()
    if root is not None:
        from irqlab.bench.env import git_commit

        git = git_commit(root)
        if git["commit"]:
            text += f" (git {git['commit'][:12]}{', modified' if git['dirty'] else ''})"
    return text


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up (git runs) only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        kw.setdefault("help", "print the version (and the git commit in a checkout) and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser (``irqlab run``, ``irqlab inject push``): an argument it
    does not know is its own usage error, with its usage line and the option it looks
    like.  argparse's subparsers hand what they do not know up to the top level, whose
    usage (``irqlab [-h] [--version] COMMAND ...``) says nothing of the subcommand's
    options: so its ``parse_known_args`` (what the subparsers call) leaves nothing
    unknown.  Its subcommands' parsers (``inject``'s actions) are of this class too.
    No option is taken by a prefix of its name (``build-qemu --forc`` ran a forced
    rebuild, ``bench --event 5`` was ``--events 5``): ``allow_abbrev=False``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(self._unrecognized(unknown))
        return parsed, unknown

    def _unrecognized(self, unknown: list[str]) -> str:
        """argparse's message for *unknown*, with the known options that look like them."""
        import difflib

        known = [o for a in self._actions for o in a.option_strings]
        like = [
            m
            for u in unknown
            if u.startswith("-")
            for m in difflib.get_close_matches(u.partition("=")[0], known, n=1)
        ]
        said = f"unrecognized arguments: {' '.join(unknown)}"
        return said + (f" (did you mean {' or '.join(dict.fromkeys(like))}?)" if like else "")


# where the recipes' logs go (irqlab.paths.log_dir() / "build"), for the build commands' help
BUILD_LOGS = (
    "$IRQLAB_LOG_DIR/build/ when set, else build/logs/build/ in a checkout, "
    "<cache>/logs/build/ for an installed wheel"
)


TOP_EPILOG = """\
examples:
  irqlab build-qemu; irqlab build-image  build (or find) QEMU and the guest image
  irqlab run -- 'cat /proc/interrupts'   one command in a fresh guest
  irqlab shell                           a guest to work in; prints the QMP socket for:
  irqlab inject --qmp SOCK push 0x1234   an interrupt into that guest's device
  irqlab COMMAND --help                  a command's options

exit status: 0 done; 1 a failure (its cause said); 2 a usage error, said before
anything starts; 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP);
irqlab run: the command's (255 when the guest died or the SSH connection dropped);
irqlab shell: the shell's (1 when the guest died, 255 when the SSH connection dropped).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="irqlab",
        description="irqlab interrupt test harness",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=TOP_EPILOG,
    )
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Subcommand
    )

    s = sub.add_parser(
        "build-qemu",
        help="build (or find cached) QEMU with the irqlab device",
        description="Builds QEMU with the irqlab device (Debian's QEMU source package, the "
        "device grafted in; $IRQLAB_QEMU_SOURCE=upstream: a pinned upstream release) unless "
        "the build cache has it for the current inputs, then prints the binary's path, its "
        "version and firmware directory (-L): for x86_64 and every target $IRQLAB_ARCHES "
        "adds.  It installs the Debian packages it needs with apt: run it as root on Debian "
        "12; a cached QEMU is checked to start (its shared libraries' packages are installed "
        "when missing, as in a fresh container with a restored cache).  A cold build takes "
        "4-6 min on 2 cores (seconds with ccache after a change of the device), a cached one "
        "a second.  Output: <cache>/qemu-<input hash>/ (the "
        f"build cache: $IRQLAB_CACHE_DIR, else ~/.cache/irqlab); logs: {BUILD_LOGS}, and a "
        "failing step names its log.",
    )
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    s.set_defaults(func=cmd_build_qemu)

    s = sub.add_parser(
        "build-image",
        help="build (or find cached) the guest: Debian kernel, our module, initramfs",
        description="Builds the Debian guest unless the build cache has it for the current "
        "inputs: Debian's kernel, our module built against its headers, an initramfs from "
        "Debian packages (busybox, dropbear, Python, the agent); prints their paths and the "
        "kernel command line.  It installs the Debian packages it needs with apt: run it as "
        "root on Debian 12.  About 15 s cold, 0.2 s cached.  Output: <cache>/ (the build "
        "cache: $IRQLAB_CACHE_DIR, else ~/.cache/irqlab), one directory per output and "
        f"input hash; logs: {BUILD_LOGS}.",
    )
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    s.add_argument(
        "--arch",
        type=guest_arch,
        help="the guest architecture: x86_64 or aarch64 (default $IRQLAB_ARCH, else x86_64; "
        "aarch64 needs its QEMU: IRQLAB_ARCHES=x86_64,aarch64 irqlab build-qemu)",
    )
    s.set_defaults(func=cmd_build_image)

    s = sub.add_parser(
        "probe-accel",
        help="print the accelerator to use here (kvm only if it boots a guest)",
        description="Prints kvm or tcg on stdout and why on stderr.  KVM counts only if "
        "it runs a tiny long-mode guest within --timeout (where /dev/kvm exists but runs no "
        "guest, as on a nested PVM host, the answer is tcg).  The verdict is cached per QEMU "
        "binary and host boot, in <cache>/accel-probe/ (the build cache, "
        "$IRQLAB_CACHE_DIR or ~/.cache/irqlab): a later run answers from it at once, "
        "whatever --timeout says; --fresh probes again.  Guests choose the same way.",
    )
    s.add_argument("--qemu", help="QEMU binary (default: the built one, see build-qemu)")
    from irqlab.vm.accel import CHOICES

    s.add_argument(
        "--accel",
        choices=CHOICES,
        help="kvm or tcg: force it; auto: probe (default: $IRQLAB_ACCEL, else auto)",
    )
    s.add_argument(
        "--timeout",
        type=positive,
        default=5.0,
        help="probe timeout, seconds (default 5; not used when a cached verdict answers)",
    )
    s.add_argument("--fresh", action="store_true", help="probe again, not from the cached verdict")
    s.set_defaults(func=cmd_probe_accel)

    from irqlab.cli.cachecmd import add_cache_parser

    add_cache_parser(sub)

    from irqlab.cli.bench import add_bench_parser

    add_bench_parser(sub)

    s = sub.add_parser(
        "buildroot-build",
        help="build the Buildroot guest image (downloads Buildroot and its toolchain; "
        "30-60 min cold)",
        description="BR2_DL_DIR and BR2_CCACHE_DIR choose Buildroot's download and ccache "
        "directories.",
    )
    s.add_argument(
        "--force", action="store_true", help="rebuild even if the cache has an image for the "
        "current inputs"
    )  # fmt: skip
    s.add_argument(
        "--clean", action="store_true", help="remove Buildroot's output directory first (cold)"
    )
    s.add_argument("--jobs", type=count(0), default=0, help="BR2_JLEVEL (default: Buildroot's)")
    s.add_argument(
        "--verbose", action="store_true", help="all of Buildroot's output, not only its '>>>' lines"
    )
    s.add_argument(
        "--arch",
        type=_buildroot_arch,
        default="x86_64",
        help="the guest architecture: x86_64 (default) or aarch64 (Buildroot cross-builds "
        "with its own toolchain)",
    )
    s.set_defaults(func=cmd_buildroot_build)

    s = sub.add_parser(
        "buildroot-check",
        help="offline checks of buildroot/: defconfig, check-dotconfig, show-info, check-package",
        description="Checks the BR2_EXTERNAL tree buildroot/ against a Buildroot source tree "
        "without building or downloading anything of Buildroot's: for each architecture's "
        "defconfig (or --arch's), that it configures, check-dotconfig, show-info (our "
        "packages built from this repository) and the rsync of our sources; then "
        "check-package over the tree. Each check's result is printed; exit status 1 if one "
        "failed. It needs a Buildroot tree: --tree DIR or $IRQLAB_BUILDROOT_DIR, or "
        "--download (the pinned release; needs the internet).",
    )
    where = s.add_mutually_exclusive_group()
    where.add_argument(
        "--tree",
        type=_directory,
        metavar="DIR",
        help="Buildroot source tree (default: $IRQLAB_BUILDROOT_DIR)",
    )
    where.add_argument(
        "--download",
        action="store_true",
        help="use the pinned release, downloading it if needed (needs the internet)",
    )
    s.add_argument(
        "--arch",
        type=_buildroot_arch,
        default=None,
        help="only this architecture's defconfig (default: all)",
    )
    s.add_argument(
        "--python", help="interpreter for check-package (needs the magic and flake8 modules)"
    )
    s.set_defaults(func=cmd_buildroot_check)

    from irqlab.bench.peers_cli import add_bench_peers_parser

    add_bench_peers_parser(sub)

    s = sub.add_parser(
        "kdir",
        help="print the guest kernel's build directory: make -C $(irqlab kdir) M=$PWD",
        description="The Debian guest kernel's headers (extracted into the cache on first "
        f"use): build an out-of-tree module for the guest with `{build_module_command()}`; "
        f"for another architecture's guest `{build_module_command('aarch64')}` (the cross "
        "compiler is installed with apt).  What make runs (the Debian packages "
        f"{', '.join(MODULE_BUILD_PACKAGES)}) is installed with apt when missing (as root; "
        "otherwise the error names them).",
    )
    s.add_argument(
        "--arch",
        type=guest_arch,
        help="the guest architecture (x86_64, aarch64; default $IRQLAB_ARCH, else x86_64)",
    )
    s.add_argument(
        "--make-args",
        action="store_true",
        help="print make's arguments instead: -C <dir> and, for another architecture, "
        "ARCH= and CROSS_COMPILE=",
    )
    s.set_defaults(func=cmd_kdir)

    from irqlab.cli.guestcmd import add_guest_parsers

    add_guest_parsers(sub)

    s = sub.add_parser(
        "regs",
        help="print the register map parsed from irqlab-regs.h",
        description="Prints the device's register offsets, bits and constants as parsed "
        "from qemu-device/irqlab-regs.h (the one definition the device, the driver and the "
        "harness share), one a line: the name and its value in hex.",
    )
    s.add_argument(
        "prefix",
        nargs="?",
        default="",
        metavar="PREFIX",
        help="only names starting so, with or without IRQLAB_, in any case (e.g. REG_)",
    )
    s.set_defaults(func=cmd_regs)
    return p


def command_parser(name: str) -> tuple[argparse.ArgumentParser, str]:
    """Subcommand *name*'s parser (its options are what the invoke task passes on) and its
    one-line help."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return action.choices[name], helps[name]
    raise KeyError(name)


def _option_first(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Sequence[str]:
    """*argv*, unless it starts with an option ``irqlab`` itself does not know: then its
    usage error, naming it (``irqlab --bogus`` said only that COMMAND is required)."""
    first = argv[0].partition("=")[0] if argv else ""
    if first.startswith("-") and first not in parser._option_string_actions:
        parser.error(f"unrecognized arguments: {argv[0]} (irqlab COMMAND --help: its options)")
    return argv


def _to_devnull(stream: TextIO) -> None:
    """Point *stream*'s file descriptor at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _stdout_gone() -> int:
    """The reader of our stdout left (``irqlab regs | head``): quiet exit, as a shell
    tool killed by SIGPIPE, without Python's BrokenPipeError at interpreter exit."""
    _to_devnull(sys.stdout)
    return 141


class Terminated(SignalRaise):
    """SIGTERM or SIGHUP arrived.  Like KeyboardInterrupt it is no ``Exception``, so it
    unwinds through every ``finally`` (terminal restored, guest stopped, temporary
    directories removed) and no ``except Exception`` swallows it; one that C code
    dropped is raised again (:class:`~irqlab.sigsafe.SignalRaise`)."""


TEARDOWN_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# How long the teardown after one of them may take before irqlab gives up on it.  An
# ordinary one takes well under a second.  Its waits are bounded (10 s each), but a
# frozen guest can chain several of them past this limit: the watch then kills QEMU,
# which is what they were waiting for, and the next run removes the socket folder.
TEARDOWN_LIMIT_S = 20.0


@contextlib.contextmanager
def teardown_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP (a closed terminal) into :class:`Terminated` while the
    block runs, as Ctrl-C is turned into KeyboardInterrupt; a second signal of the
    three while the first unwinds is ignored so that the teardown finishes, and a
    teardown still running after TEARDOWN_LIMIT_S is ended (see
    :class:`~irqlab.teardown_watch.TeardownWatch`).
    A signal ignored when we started (``nohup``) stays ignored; outside the main thread
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watch = TeardownWatch(TEARDOWN_LIMIT_S)

    def ours(e: BaseException) -> int | None:
        return watch.signum or None if isinstance(e, KeyboardInterrupt | Terminated) else None

    safe = SafeRaise(ours)

    def handler(signum: int, frame: FrameType | None) -> None:
        if not safe.redelivered(signum) and not watch.start(signum):
            return  # a later signal while the first one's teardown runs: ignored
        if safe.deferred(signum, frame):  # see irqlab.sigsafe: a raise here could wedge us
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum, safe)  # raised again if C code drops it

    # Ctrl-C too: whichever comes first starts the teardown, and any later one of the
    # three (Ctrl-C, then closing the window) is ignored until it has finished
    signals = (*TEARDOWN_SIGNALS, signal.SIGINT)
    safe.set_handlers([s for s in signals if signal.getsignal(s) is not signal.SIG_IGN], handler)
    safe.install_hook()  # a raise lost in a finaliser is delivered again
    try:
        yield
    finally:
        watch.end()  # first: a signal between here and the old handlers is ignored
        safe.restore()  # the old handlers, then what was deferred in the last moments


def _terminated(signum: int) -> int:
    """The one line after a teardown by *signum*, and the shell's status for it.  A
    stream whose terminal hung up is pointed at /dev/null (what is left in it cannot be
    written anywhere, and Python's flush at exit would fail)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            _to_devnull(stream)
    try:
        print(f"irqlab: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    except OSError:
        _to_devnull(sys.stderr)
    return 128 + signum


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints where every thread of a hung irqlab is, on stderr
    (unless SIGUSR1 already has a handler: irqlab called from another program)."""
    import faulthandler

    if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:
        with contextlib.suppress(ValueError, OSError):  # io.UnsupportedOperation: stderr
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # is no file (captured)


# the notes an error's message follows rather than leads (Guest.start's "accelerator:
# kvm forced by --accel kvm, but ..." explains QEMU's assertion above it)
LEADING_NOTES = ("accelerator: ",)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand.  User and environment errors (what irqlab reports, a file or
    directory that cannot be used, a failed external command) end in one line on
    stderr and exit status 1, never a traceback; IRQLAB_DEBUG=1 shows it anyway.  A
    usage error (a :class:`~irqlab.errors.ConfigError`: an option's value malformed or
    naming nothing of the kind it takes, ``run`` without a command, an environment
    variable's value irqlab does not take, a guest configuration that cannot work) exits
    2 instead, as argparse's own do; a value the device refuses (``inject push
    0x1ffffffff``) is no usage error.
    SIGTERM and SIGHUP tear down as Ctrl-C does, then say so in one line and exit with
    128 + the signal's number."""
    try:
        return _main(argv)
    finally:  # the status is ours: not SIGINT's at exit (irqlab.sigsafe's notes)
        clear_caught_interrupt()


def _main(argv: Sequence[str] | None) -> int:
    import subprocess
    import time

    from irqlab.errors import ConfigError

    started = time.monotonic()
    parser = build_parser()
    args = parser.parse_args(_option_first(parser, sys.argv[1:] if argv is None else argv))
    args.started = started  # for "guest ready (...; 11.2 s since irqlab started)"
    debug = os.environ.get("IRQLAB_DEBUG") == "1"
    _stacks_on_sigusr1()
    try:
        with teardown_on_signals():
            rc: int = args.func(args)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except Terminated as e:
        return _terminated(e.signum)
    except BrokenPipeError:
        return _stdout_gone()
    except (IrqlabError, OSError, subprocess.CalledProcessError) as e:
        if debug:
            raise
        msg = str(e).rstrip() or type(e).__name__
        if isinstance(e, OSError) and not isinstance(e, IrqlabError):
            msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        elif isinstance(e, subprocess.CalledProcessError):
            cmd = e.cmd if isinstance(e.cmd, str) else " ".join(map(str, e.cmd))
            msg = f"{cmd!r} failed with exit status {e.returncode}"
        notes = list(getattr(e, "__notes__", ()))  # e.g. where the guest's logs are
        # a note that explains the error (a forced KVM that does not work here) comes
        # first: after QEMU's assertion and console it was the last line, unseen
        first = [n for n in notes if n.startswith(LEADING_NOTES)]
        lines = [*first, msg, *(n for n in notes if n not in first)]
        print("\n".join(f"irqlab: {line}" for line in lines), file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    return rc
