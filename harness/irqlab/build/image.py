"""The default guest image: Debian's kernel plus an initramfs assembled from Debian packages.

Offline (only the Debian mirror, through apt), no root filesystem image, no
installation: ``.deb`` files are downloaded at exact versions and unpacked;
the initramfs takes busybox, dropbear (+ sftp-server), Python 3.11 with a
trimmed, precompiled stdlib, exactly the shared libraries those binaries need
(found through their ELF DT_NEEDED entries), the virtio and UIO modules, our
kernel module and the guest agent.  ``/init`` brings up the network with QEMU
user networking's static address, starts dropbear (key auth only) and prints
:data:`READY_MARKER` on the serial console.

The kernel is booted as an uncompressed ELF through QEMU's PVH entry with
qboot and a NIC without option ROM: see :meth:`GuestImage.qemu_args`.

Entry point: :func:`ensure_image` (cached by input hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from irqlab.build import debs, elf
from irqlab.build.cache import InputHash, cached_build, output_dir
from irqlab.build.cpio import Entry, tree_entries, write_newc
from irqlab.build.guest import GUEST_DIR, INIT_TEMPLATE
from irqlab.build.kernel import KernelArtifacts, ensure_kernel, run_depmod
from irqlab.build.kernel import module_name as module_name  # re-exported
from irqlab.build.sshkeys import SshKeys, ensure_keys
from irqlab.build.steps import BuildError, Log, StepLog
from irqlab.paths import cache_dir, log_dir, packaged_file

RECIPE_VERSION = "image-1"  # bump to force rebuilds when nothing else changed

READY_MARKER = "IRQLAB-READY"
FAILED_MARKER = "IRQLAB-FAILED"
HOSTNAME = "irqlab"
GUEST_IP = "10.0.2.15"  # QEMU user networking's default guest address
GUEST_ADDR = f"{GUEST_IP}/24"
GATEWAY = "10.0.2.2"
SSH_USER = "root"

ROOT_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "openssh-sftp-server",
    "python3.11-minimal",
    "libpython3.11-stdlib",
)
# Dependencies the image does not ship.  What they would provide is dropped
# below (Python extension modules) or not needed (sftp-server runs without
# the OpenSSH client); the ELF check proves nothing left needs them.
EXCLUDED_PACKAGES = (
    "openssh-client",
    "media-types",
    "mime-support",
    "tzdata",
    "debconf",
    "debconf-2.0",
    "readline-common",
    "libreadline8",
    "libncursesw6",
    "libtinfo6",
    "libsqlite3-0",
    "libdb5.3",
    "libnsl2",
    "libtirpc3",
    "libssl3",
    "dpkg",
    "install-info",
)

BOOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng")  # insmod-ed by /init (Debian: =m)
SHIPPED_MODULES = ("uio", "uio_pci_generic")  # in the image for modprobe

PY = "python3.11"
# Top-level entries of /usr/lib/python3.11 not shipped.
PY_DROP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "venv",
        "pydoc_data",
        "curses",
        "sqlite3",
        "config-3.11-x86_64-linux-gnu",
        "sitecustomize.py",  # Debian's: an absolute link to an apport hook
        "EXTERNALLY-MANAGED",
        "LICENSE.txt",
        "__phello__",
        "__hello__.py",
        "antigravity.py",
    }
)
# Extension modules (lib-dynload, by name prefix) not shipped: tests, and those
# needing the excluded libraries (OpenSSL, sqlite, Berkeley DB, ncurses,
# readline, NIS) or only CJK codecs.
PY_DYNLOAD_DROP = (
    "_test",
    "_ctypes_test",
    "_xxtestfuzz",
    "_xxsubinterpreters",
    "xxlimited",
    "_ssl",
    "_hashlib",
    "_sqlite3",
    "_dbm",
    "_gdbm",
    "_curses",
    "readline",
    "nis",
    "ossaudiodev",
    "_codecs_",
)

# Where package files are taken from: package -> paths (files or whole dirs).
PICK: dict[str, tuple[str, ...]] = {
    "busybox-static": ("bin/busybox",),
    "dropbear-bin": ("usr/sbin/dropbear",),
    "openssh-sftp-server": ("usr/lib/openssh/sftp-server", "usr/lib/sftp-server"),
    "python3.11-minimal": (f"usr/bin/{PY}",),
    "libpython3.11-minimal": (f"usr/lib/{PY}",),
    "libpython3.11-stdlib": (f"usr/lib/{PY}",),
}
# Never copied from extra packages.
_DOC_DIRS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
)

# Kernel command line (not part of the image hash).  Measured under TCG on
# these machines (median of 5-6 interleaved boots, see the image report):
#   cryptomgr.notests  skips the boot-time crypto self-tests: -0.2..0.3 s
#   noreplace-smp      keeps LOCK prefixes on a 1-vCPU boot instead of patching
#                      thousands of sites: -0.1..0.2 s
#   init_on_alloc=0    no zeroing of every allocated page (Debian hardening
#                      default): -0.1..0.3 s with -cpu max (byte-wise rep stos)
#   tsc=reliable       keeps the TSC clocksource with -smp > 1 (latency floor)
#   no_timer_check     not for speed: under TCG on a loaded host the kernel's IO-APIC
#                      timer check can miss its ticks and panic at boot ("IO-APIC +
#                      timer doesn't work!"; seen here with three guests on 2 cores)
# Options that measured within noise were left out (mitigations=off,
# i8042.*, 8250.nr_uarts, audit=0, rodata=off, an initcall_blacklist of the
# kdf108 self-test).
KERNEL_CMDLINE: tuple[str, ...] = (
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "tsc=reliable",
    "no_timer_check",
    "cryptomgr.notests",
    "noreplace-smp",
    "init_on_alloc=0",
)

# What the launcher should add around qemu_args() (machine, memory, no default
# devices; -no-reboot makes the guest's poweroff/reboot/panic end QEMU), plus
# cpu_args().  The serial console (-serial ...) and -accel are the launcher's.
# q35 and pc boot equally fast.
MACHINE_ARGS: tuple[str, ...] = (
    "-machine",
    "q35",
    "-m",
    "512M",
    "-nodefaults",
    "-no-reboot",
    "-display",
    "none",
)


def cpu_args(accel: str) -> list[str]:
    """The CPU model to boot this image with (optional: QEMU's default works).

    Under TCG, ``qemu64,+rdrand`` (RDRAND seeds the CRNG even without the
    virtio-rng device of :meth:`GuestImage.qemu_args`): the plain model boots
    ~0.2-0.3 s faster to the readiness marker than ``max``, whose ERMS turns
    the kernel's memcpy/memset into byte-wise ``rep movsb`` under TCG.
    """
    return ["-cpu", "host"] if accel == "kvm" else ["-cpu", "qemu64,+rdrand"]


COMPRESSORS: dict[str, tuple[tuple[str, ...], str]] = {
    "zstd": (("zstd", "-q", "-9", "-T0", "-c"), ".zst"),
    "gzip": (("gzip", "-9", "-n", "-c"), ".gz"),
    "lz4": (("lz4", "-q", "-l", "-9", "-c"), ".lz4"),  # -l: the legacy frame the kernel reads
    "none": ((), ""),
}
# Uncompressed boots fastest under TCG: unpacking is on the critical path
# (request_module() and /init wait for it) and zstd's decompression there cost
# +0.3-0.4 s; lz4 boots as fast as none; gzip is slowest.
DEFAULT_COMPRESSION = "none"

_MTIME = 1_700_000_000  # fixed timestamp of every initramfs entry (reproducible output)
_LIBDIR = "usr/lib/x86_64-linux-gnu"
_LIB_SEARCH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64")
_MERGED_TOP = ("bin", "sbin", "lib", "lib64")
_SKELETON_DIRS = (
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib64",
    "etc",
    "proc",
    "sys",
    "dev",
    "run",
    "mnt",
    "var",
)


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: pass :meth:`qemu_args` (plus :data:`MACHINE_ARGS`) to QEMU."""

    version: str  # input hash of the image
    kernel: Path  # uncompressed vmlinux (PVH)
    initramfs: Path
    cmdline: str
    kernel_version: str  # uname -r in the guest
    kernel_artifacts: KernelArtifacts
    client_key: Path  # private key authorized for SSH_USER (OpenSSH format, 0600)
    host_key: str  # "ssh-ed25519 AAAA..." the guest's dropbear presents
    directory: Path
    ssh_user: str = SSH_USER
    guest_ip: str = GUEST_IP
    ready_marker: str = READY_MARKER
    failed_marker: str = FAILED_MARKER
    bios: str = "qboot.rom"  # found in QEMU's firmware path (-L)
    kmod: str | None = None  # name of our module in the image (modprobe <it>), if any
    modules: tuple[str, ...] = ()  # every module modprobe can load in the guest
    agent_package: str = "irqlab_agent"  # python3 -m <it> in the guest
    size: int = 0  # initramfs bytes

    def append(self, *extra: str) -> str:
        """The kernel command line plus *extra* options (e.g. ``irqlab_modprobe=irqlab``)."""
        return " ".join((self.cmdline, *extra)).strip()

    def qemu_args(
        self, ssh_port: int, *, cmdline_extra: Sequence[str] = (), netdev_id: str = "net0"
    ) -> list[str]:
        """Boot + network arguments; guest port 22 is forwarded to 127.0.0.1:*ssh_port*."""
        return [
            "-bios",
            self.bios,
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initramfs),
            "-append",
            self.append(*cmdline_extra),
            "-netdev",
            f"user,id={netdev_id},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device",
            f"virtio-net-pci,netdev={netdev_id},romfile=",
            # entropy for the guest's CRNG at once whatever the CPU model (no RDRAND
            # with the default qemu64): dropbear's first getrandom() would block ~1.5 s
            "-device",
            "virtio-rng-pci",
        ]

    def known_hosts_line(self, ssh_port: int, host: str = "127.0.0.1") -> str:
        """An OpenSSH known_hosts line for the forwarded port."""
        return f"[{host}]:{ssh_port} {self.host_key}"


# ---------------------------------------------------------------------------
# pure helpers (unit-tested)


def render_init(template: str, values: Mapping[str, str]) -> str:
    """Fill ``@NAME@`` placeholders; every placeholder must be given, every value used."""
    out = template
    for k, v in values.items():
        token = f"@{k}@"
        if token not in out:
            raise ValueError(f"init template has no placeholder {token}")
        out = out.replace(token, v)
    left = sorted(set(re.findall(r"@[A-Z][A-Z0-9_]*@", out)))
    if left:
        raise ValueError(f"init template placeholders not filled: {', '.join(left)}")
    return out


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep -> {relative path: dependencies as listed}."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = tuple(rest.split())
    return deps


def module_load_order(deps: Mapping[str, Sequence[str]], names: Iterable[str]) -> list[str]:
    """Relative paths of *names* and their dependencies, each after what it needs.

    (modprobe loads a modules.dep line's dependencies last-to-first.)
    """
    by_name = {module_name(rel): rel for rel in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(rel: str, chain: tuple[str, ...]) -> None:
        if rel in seen:
            return
        if rel in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join((*chain, rel))}")
        for d in reversed(deps.get(rel, ())):
            visit(d, (*chain, rel))
        seen.add(rel)
        order.append(rel)

    for n in names:
        rel = by_name.get(n.replace("-", "_"))
        if rel is None:
            raise KeyError(f"module {n} is not in modules.dep")
        visit(rel, ())
    return order


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo (module names)."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not m or not m.group(1):
        return []
    return [n.decode() for n in m.group(1).split(b",") if n]


def merged_path(rel: str) -> str:
    """Debian packages still ship /bin, /lib...; the image is merged-/usr."""
    parts = PurePosixPath(rel).parts
    if parts and parts[0] in _MERGED_TOP:
        return str(PurePosixPath("usr", *parts))
    return str(PurePosixPath(*parts))


def keep_python_file(rel: str) -> bool:
    """Whether a path below usr/lib/python3.11/ goes into the image."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] in PY_DROP or "__pycache__" in parts:
        return False
    if len(parts) == 2 and parts[0] == "lib-dynload":
        return not parts[1].startswith(PY_DYNLOAD_DROP)
    return True


def resolve_in_tree(tree: Path, rel: str, limit: int = 40) -> Path:
    """Follow symlinks inside an extracted package tree (absolute links stay in *tree*)."""
    cur = PurePosixPath(rel)
    for _ in range(limit):
        p = tree / cur
        if not p.is_symlink():
            return p
        target = PurePosixPath(os.readlink(p))
        cur = PurePosixPath(*target.parts[1:]) if target.is_absolute() else cur.parent / target
        cur = PurePosixPath(os.path.normpath(str(cur)))
    raise ValueError(f"{tree}/{rel}: too many levels of symbolic links")


# ---------------------------------------------------------------------------
# staging


class _Stage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / merged_path(rel.lstrip("/"))

    def mkdir(self, rel: str, mode: int = 0o755) -> Path:
        p = self.path(rel)
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        return p

    def write(self, rel: str, data: bytes | str, mode: int = 0o644) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(p, mode)

    def symlink(self, rel: str, target: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target)

    def copy_file(self, src: Path, rel: str) -> None:
        dst = self.path(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, stat.S_IMODE(src.stat().st_mode))


def _copy_entry(tree: Path, rel: str, stage: _Stage) -> None:
    src = tree / rel
    if src.is_symlink():
        target = os.readlink(src)
        if target.startswith("/"):
            raise ValueError(f"{src}: absolute symlink to {target} (handle it in the recipe)")
        stage.symlink(rel, target)
    elif src.is_dir():
        stage.mkdir(rel, stat.S_IMODE(src.stat().st_mode))
    else:
        stage.copy_file(src, rel)


def _copy_pick(tree: Path, rel: str, stage: _Stage) -> int:
    """Copy a file or directory of an extracted package; python trees are filtered."""
    src = tree / rel
    if not src.exists() and not src.is_symlink():
        raise FileNotFoundError(f"{rel} not in {tree.name}")
    if not src.is_dir() or src.is_symlink():
        _copy_entry(tree, rel, stage)
        return 1
    n = 0
    py_root = f"usr/lib/{PY}"
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            r = str(Path(dirpath, name).relative_to(tree))
            if r.startswith(py_root + "/") and not keep_python_file(r[len(py_root) + 1 :]):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            if name in dirnames and Path(dirpath, name).is_symlink():
                dirnames.remove(name)
            _copy_entry(tree, r, stage)
            n += 1
    return n


def _copy_package_all(tree: Path, stage: _Stage) -> int:
    """Every file of an extra package except documentation."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = Path(dirpath).relative_to(tree).as_posix()
        dirnames[:] = sorted(d for d in dirnames if f"{rel_dir}/{d}".lstrip("./") not in _DOC_DIRS)
        for name in sorted(filenames):
            if name == ".complete" and rel_dir == ".":
                continue
            _copy_entry(tree, str(Path(rel_dir, name)), stage)
            n += 1
    return n


def _library_index(trees: Iterable[Path]) -> dict[str, tuple[Path, str]]:
    """Shared library file name -> (package tree, relative path), first package wins."""
    index: dict[str, tuple[Path, str]] = {}
    for tree in trees:
        for d in _LIB_SEARCH:
            ld = tree / d
            if not ld.is_dir():
                continue
            for f in sorted(ld.iterdir()):
                if ".so" in f.name:
                    index.setdefault(f.name, (tree, f"{d}/{f.name}"))
    return index


def _elf_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and elf.is_elf(p):
            out.append(p)
    return out


def add_libraries(stage: _Stage, index: Mapping[str, tuple[Path, str]]) -> list[str]:
    """Copy every shared library the staged ELF files need (transitively); returns them.

    Raises :class:`ValueError` naming the binary and library when one is missing.
    """
    libdir = stage.path(_LIBDIR)
    libdir.mkdir(parents=True, exist_ok=True)
    added: list[str] = []
    todo = _elf_files(stage.root)
    done: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        info = elf.read_dyn_info(f)
        wanted = list(info.needed)
        if info.interp:
            interp = stage.path(info.interp)
            if not interp.exists():
                name = PurePosixPath(info.interp).name
                wanted.append(name)
                rel_interp = merged_path(info.interp.lstrip("/"))
                if PurePosixPath(rel_interp).parent != PurePosixPath(_LIBDIR):
                    target = os.path.relpath(stage.root / _LIBDIR / name, interp.parent)
                    stage.symlink(rel_interp, target)
        for so in wanted:
            dst = libdir / so
            if dst.exists():
                continue
            hit = index.get(so)
            if hit is None:
                raise ValueError(
                    f"{f.relative_to(stage.root)} needs {so}, which no package of the image ships"
                )
            tree, rel = hit
            src = resolve_in_tree(tree, rel)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755)
            added.append(so)
            todo.append(dst)
    return sorted(added)


# The kernel runs CONFIG_MODPROBE_PATH (/sbin/modprobe) for every request_module()
# during boot (crypto self-tests ask for a few): with no such file that fails at
# once instead of costing a process each under TCG.  /init points
# /proc/sys/kernel/modprobe at the real one once booted.
_APPLET_MOVES = {"usr/sbin/modprobe": "usr/bin/modprobe"}


def busybox_links(listing: str) -> dict[str, str]:
    """``busybox --list-full`` -> {merged path: relative symlink target}."""
    links: dict[str, str] = {}
    for line in listing.split():
        rel = merged_path(line.strip().lstrip("/"))
        rel = _APPLET_MOVES.get(rel, rel)
        if "/" not in rel or rel == "usr/bin/busybox":
            continue
        target = os.path.relpath("usr/bin/busybox", PurePosixPath(rel).parent.as_posix())
        links[rel] = target
    return links


# ---------------------------------------------------------------------------
# inputs


def default_agent_dir() -> Path:
    import irqlab_agent

    return Path(irqlab_agent.__file__).resolve().parent


def default_agent_files() -> dict[str, Path]:
    """Files shipped inside the agent package (see irqlab_agent.abi): the uapi header
    and the host's header parser, when they exist."""
    files: dict[str, Path] = {}
    with contextlib.suppress(FileNotFoundError):
        files["irqlab.h"] = packaged_file("irqlab.h", "guest-kmod/include/uapi/linux/irqlab.h")
    uapi = Path(__file__).resolve().parent.parent / "contract" / "uapi.py"
    if uapi.is_file():
        files["_uapi.py"] = uapi
    if "irqlab.h" in files:
        files["abi.json"] = precomputed_abi(files["irqlab.h"])
    return files


def precomputed_abi(header: Path) -> Path:
    """``abi.json`` for the agent: :func:`irqlab.contract.uapi.agent_spec` of *header*, generated
    here so the guest need not parse the header at every start (the agent checks that
    the header text in it is the shipped header's, else it parses)."""
    from irqlab.contract import uapi

    text = header.read_bytes()
    digest = hashlib.sha256(text).hexdigest()
    code = hashlib.sha256(Path(uapi.__file__).read_bytes()).hexdigest()[:16]
    out = cache_dir() / "agent-abi" / f"abi2-{digest[:16]}-{code}.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        data = {"header": text.decode(), "spec": uapi.agent_spec(text.decode())}
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(out)
    return out


def _recipe_sources() -> list[Path]:
    here = Path(__file__).resolve().parent
    srcs = [
        here / n for n in ("image.py", "cpio.py", "elf.py", "debs.py", "sshkeys.py", "kernel.py")
    ]
    srcs += sorted(p for p in GUEST_DIR.iterdir() if p.is_file() and p.suffix != ".pyc")
    return srcs


def _authorized_keys(keys: SshKeys, extra: str | Path | None) -> str:
    lines = [keys.client_pub]
    if extra is not None:
        text = extra.read_text() if isinstance(extra, Path) else extra
        lines += [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Inputs:
    kernel: KernelArtifacts
    packages: tuple[debs.Package, ...]
    extra_packages: tuple[str, ...]
    agent_dir: Path
    agent_files: Mapping[str, Path]
    kmod: Path | None
    authorized_keys: str
    keys: SshKeys
    compression: str
    stdlib_sources: bool = True

    def digest(self) -> str:
        h = InputHash(RECIPE_VERSION)
        for src in _recipe_sources():
            h.add_file(src, label=f"recipe/{src.name}")
        h.add_str("kernel", f"{self.kernel.version} {self.kernel.package_version}")
        for p in self.packages:
            h.add_str("package", f"{p.name}={p.version}")
        h.add_str("extra-packages", ",".join(self.extra_packages))
        h.add_str("agent", self.agent_dir.name)
        h.add_tree(self.agent_dir, [p for p in self.agent_dir.rglob("*") if p.is_file()])
        for name, path in sorted(self.agent_files.items()):
            h.add_file(path, label=f"agent-file/{name}")
        if self.kmod is not None:
            h.add_file(self.kmod, label=f"kmod/{self.kmod.name}")
        else:
            h.add_str("kmod", "none")
        h.add_str("authorized_keys", self.authorized_keys)
        h.add_str("host_key", self.keys.host_pub)
        h.add_str("compression", self.compression)
        h.add_str("stdlib_sources", str(self.stdlib_sources))
        return h.hexdigest()


# ---------------------------------------------------------------------------
# the build


def _compile_python(
    stage: _Stage, dirs: Sequence[Path], steps: StepLog, *, legacy: bool = False
) -> None:
    """Precompile (unchecked-hash pycs: no stat of sources on import).

    *legacy*: write ``x.pyc`` beside ``x.py`` (for a sourceless tree, see
    :func:`_drop_sources`) instead of ``__pycache__/x.cpython-311.pyc``.
    """
    args = [
        "-m",
        "compileall",
        "-q",
        "-j",
        "0",
        "--invalidation-mode",
        "unchecked-hash",
        "-s",
        str(stage.root),
        "-p",
        "/",
        *(["-b"] if legacy else []),
        *(str(d) for d in dirs),
    ]
    if sys.version_info[:2] == (3, 11):
        steps.run("compile python", [sys.executable, *args])
        return
    # another host Python: use the guest's own interpreter through its own loader
    libdir = stage.path(_LIBDIR)
    steps.run(
        "compile python",
        [
            str(libdir / "ld-linux-x86-64.so.2"),
            "--library-path",
            str(libdir),
            str(stage.path(f"usr/bin/{PY}")),
            *args,
        ],
        env={"PYTHONHOME": str(stage.path("usr")), "PYTHONNOUSERSITE": "1"},
    )


def _drop_sources(tree: Path) -> int:
    """Remove ``.py`` files that have a legacy ``.pyc`` beside them; returns bytes saved."""
    saved = 0
    for py in sorted(tree.rglob("*.py")):
        if py.with_suffix(".pyc").is_file() and not py.is_symlink():
            saved += py.stat().st_size
            py.unlink()
    return saved


def _etc_files(stage: _Stage, inp: _Inputs) -> None:
    stage.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    stage.write("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    stage.write("etc/shells", "/bin/sh\n/bin/ash\n/usr/bin/sh\n")
    stage.write("etc/hostname", HOSTNAME + "\n")
    stage.write("etc/hosts", f"127.0.0.1 localhost\n{GUEST_IP} {HOSTNAME}\n::1 localhost\n")
    stage.write(
        "etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
    )
    stage.write("etc/resolv.conf", "nameserver 10.0.2.3\n")
    stage.write(
        "etc/profile",
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
    )
    stage.mkdir("etc/dropbear", 0o700)
    stage.copy_file(inp.keys.host_key, "etc/dropbear/dropbear_ed25519_host_key")
    os.chmod(stage.path("etc/dropbear/dropbear_ed25519_host_key"), 0o600)
    stage.mkdir("root", 0o700)
    stage.mkdir("root/.ssh", 0o700)
    stage.write("root/.ssh/authorized_keys", inp.authorized_keys, 0o600)


def _modules(
    stage: _Stage, inp: _Inputs, steps: StepLog
) -> tuple[list[str], list[str], str | None]:
    """Copy modules + depmod; returns (boot insmod order, all module names, kmod name)."""
    k = inp.kernel
    deps = parse_modules_dep((k.modules_dir / "modules.dep").read_text())
    wanted = list(BOOT_MODULES) + list(SHIPPED_MODULES)
    kmod_name: str | None = None
    if inp.kmod is not None:
        kmod_name = module_name(inp.kmod.name)
        wanted += modinfo_depends(inp.kmod.read_bytes())
    every = module_load_order(deps, wanted)
    modroot = f"usr/lib/modules/{k.version}"
    for rel in every:
        stage.copy_file(k.modules_dir / rel, f"{modroot}/{rel}")
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (k.modules_dir / meta).is_file():
            stage.copy_file(k.modules_dir / meta, f"{modroot}/{meta}")
    if inp.kmod is not None:
        stage.copy_file(inp.kmod, f"{modroot}/extra/{inp.kmod.name}")
    run_depmod(k.kmod, stage.root, k.version, steps)
    boot = module_load_order(deps, BOOT_MODULES)
    names = sorted({module_name(r) for r in every} | ({kmod_name} if kmod_name else set()))
    return boot, names, kmod_name


def _build(inp: _Inputs, digest: str, tmp: Path, steps: StepLog) -> dict[str, object]:
    k = inp.kernel
    stage = _Stage(tmp / "rootfs")
    stage.root.mkdir()
    with steps.step("fetch Debian packages"):
        files = debs.download(inp.packages, steps)
        trees = {name: debs.extracted(deb, steps) for name, deb in files.items()}
    with steps.step("assemble root tree"):
        for d in _SKELETON_DIRS:
            stage.root.joinpath(d).mkdir(parents=True, exist_ok=True)
        stage.mkdir("tmp", 0o1777)
        for top in _MERGED_TOP:
            (stage.root / top).symlink_to(f"usr/{top}")
        for pkg, paths in PICK.items():
            for rel in paths:
                _copy_pick(trees[pkg], rel, stage)
        for pkg in inp.extra_packages:
            _copy_package_all(trees[pkg], stage)
        stage.symlink("usr/bin/python3", PY)
        listing = steps.run(
            "busybox --list-full", [stage.path("usr/bin/busybox"), "--list-full"], capture=True
        )
        for rel, target in busybox_links(listing).items():
            if not stage.path(rel).exists() and not stage.path(rel).is_symlink():
                stage.symlink(rel, target)
        agent_dst = f"usr/lib/python3/dist-packages/{inp.agent_dir.name}"
        stage.mkdir(agent_dst)
        for src in sorted(inp.agent_dir.rglob("*")):
            arel = src.relative_to(inp.agent_dir)
            if "__pycache__" in arel.parts or src.suffix == ".pyc":
                continue
            if src.is_dir():
                stage.mkdir(f"{agent_dst}/{arel}")
            else:
                stage.copy_file(src, f"{agent_dst}/{arel}")
        for name, src in inp.agent_files.items():
            stage.copy_file(src, f"{agent_dst}/{name}")
        _etc_files(stage, inp)
    with steps.step("kernel modules"):
        boot, modnames, kmod_name = _modules(stage, inp, steps)
    with steps.step("shared libraries (ELF DT_NEEDED closure)"):
        libs = add_libraries(stage, _library_index(trees.values()))
        steps.write("libraries: " + " ".join(libs))
    with steps.step("render /init"):
        init = render_init(
            INIT_TEMPLATE.read_text(),
            {
                "KERNEL_VERSION": k.version,
                "BOOT_MODULES": " ".join(boot),
                "GUEST_ADDR": GUEST_ADDR,
                "GATEWAY": GATEWAY,
                "HOSTNAME": HOSTNAME,
                "READY_MARKER": READY_MARKER,
                "FAILED_MARKER": FAILED_MARKER,
            },
        )
        stage.write("init", init, 0o755)
    with steps.step("precompile Python"):
        stdlib = stage.path(f"usr/lib/{PY}")
        if inp.stdlib_sources:
            _compile_python(stage, [stdlib, stage.path(agent_dst)], steps)
        else:
            _compile_python(stage, [stdlib], steps, legacy=True)
            steps.write(f"sourceless stdlib: {_drop_sources(stdlib)} bytes of .py dropped")
            _compile_python(stage, [stage.path(agent_dst)], steps)
    with steps.step(f"write initramfs ({inp.compression})"):
        raw = tmp / "initramfs.cpio"
        entries = [*tree_entries(stage.root), Entry.chardev("dev/console", 5, 1)]
        with raw.open("wb") as f:
            raw_size = write_newc(entries, f, mtime=_MTIME)
        cmd, suffix = COMPRESSORS[inp.compression]
        out = tmp / f"initramfs.cpio{suffix}"
        if cmd:
            with raw.open("rb") as fin, out.open("wb") as fout:
                r = subprocess.run(
                    [*cmd, "-"], stdin=fin, stdout=fout, stderr=subprocess.PIPE, check=False
                )
            if r.returncode != 0:
                raise BuildError(
                    f"{cmd[0]} initramfs", steps.path, r.stderr.decode(errors="replace")
                )
            raw.unlink()
        manifest = "\n".join(f"{oct(e.mode)} {e.path}" for e in entries)
        (tmp / "manifest.txt").write_text(manifest + "\n")
    shutil.rmtree(stage.root)
    return {
        "digest": digest,
        "initramfs": out.name,
        "initramfs_size": out.stat().st_size,
        "cpio_size": raw_size,
        "entries": len(entries),
        "kernel_version": k.version,
        "boot_modules": boot,
        "modules": modnames,
        "kmod": kmod_name,
        "libraries": libs,
        "packages": {p.name: p.version for p in inp.packages},
    }


def resolve_packages(
    extra: Sequence[str] = (), lookup: debs.Lookup = debs.apt_show
) -> list[debs.Package]:
    return debs.closure([*ROOT_PACKAGES, *extra], lookup, exclude=EXCLUDED_PACKAGES)


def ensure_image(
    kmod: Path | None = None,
    agent_dir: Path | None = None,
    authorized_key: str | Path | None = None,
    log: Log | None = None,
    *,
    force: bool = False,
    agent_files: Mapping[str, Path] | None = None,
    extra_packages: Sequence[str] = (),
    compression: str = DEFAULT_COMPRESSION,
    stdlib_sources: bool = True,
) -> GuestImage:
    """The guest image for these inputs, built into the cache if missing.

    kmod: our kernel module (.ko built against ``ensure_kernel().headers_build_dir``), or None.
    agent_dir: the guest agent package directory (default: the installed ``irqlab_agent``).
    authorized_key: an extra public key (line, or a file with lines) besides the cache's
        client key, which is always authorized.
    agent_files: extra files placed in the agent package (default :func:`default_agent_files`
        and the native responder, :func:`irqlab.build.responder.ensure_responder`).
    extra_packages: more Debian packages to ship whole (minus docs), e.g. ``rt-tests``.
    compression: of the initramfs, one of :data:`COMPRESSORS`.
    stdlib_sources: ship the stdlib's .py files (tracebacks show source lines) or only
        its bytecode (a smaller initramfs, which boots faster).
    """
    if compression not in COMPRESSORS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSORS)}")
    if kmod is not None and not kmod.is_file():
        raise FileNotFoundError(f"kernel module {kmod} does not exist (build it first)")
    kernel = ensure_kernel(log)
    keys = ensure_keys()
    agent = (agent_dir or default_agent_dir()).resolve()
    if not agent.is_dir():
        raise FileNotFoundError(f"agent package directory {agent} does not exist")
    files = dict(default_agent_files() if agent_files is None else agent_files)
    if agent_files is None:  # the native responder beside the agent (issue 15)
        from irqlab.build.responder import BINARY, ensure_responder

        files[BINARY] = ensure_responder(log)
    inp = _Inputs(
        kernel=kernel,
        packages=tuple(resolve_packages(extra_packages)),
        extra_packages=tuple(extra_packages),
        agent_dir=agent,
        agent_files=files,
        kmod=kmod.resolve() if kmod is not None else None,
        authorized_keys=_authorized_keys(keys, authorized_key),
        keys=keys,
        compression=compression,
        stdlib_sources=stdlib_sources,
    )
    digest = inp.digest()

    def build(tmp: Path) -> None:
        with StepLog(log_dir() / "build" / f"image-{digest}.log", log) as steps:
            steps.log(f"guest image {digest}: building {output_dir('image', digest)}")
            meta = _build(inp, digest, tmp, steps)
            (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")

    out = cached_build("image", digest, build, force=force)
    meta = json.loads((out / "image.json").read_text())
    return GuestImage(
        version=digest,
        kernel=kernel.vmlinux,
        initramfs=out / str(meta["initramfs"]),
        cmdline=" ".join(KERNEL_CMDLINE),
        kernel_version=kernel.version,
        kernel_artifacts=kernel,
        client_key=keys.client_key,
        host_key=keys.host_pub,
        directory=out,
        kmod=meta.get("kmod"),
        modules=tuple(meta.get("modules", ())),
        agent_package=agent.name,
        size=int(meta["initramfs_size"]),
    )
