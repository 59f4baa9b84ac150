"""Build recipe for the native responder, ``guest-kmod/responder/irqlab-respond.c``.

A small C program the guest agent starts for the latency hot path (issue 15): it
arms one notification path as the agent does, ACKs each event right after the
wake-up and keeps per-event timestamps in memory.  It includes the driver's uapi
header and the device's register map (nothing retyped) and is linked statically
with the host's gcc: the Debian 12 host and guest share glibc's ABI, and a static
binary needs no library lookup in the initramfs.  Cached by the hash of its
sources, the compiler and the flags; a compiler warning fails the build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from irqlab import cancel
from irqlab.build import debs, hostfacts
from irqlab.build.cache import InputHash, Sources, cached_build
from irqlab.build.steps import Log, StepLog
from irqlab.errors import hide_frame
from irqlab.paths import log_dir, repo_root

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

RECIPE_VERSION = "responder-1"
BINARY = "irqlab-respond"
SOURCE = "guest-kmod/responder/irqlab-respond.c"
# The include directories, relative to the checkout: <linux/irqlab.h>, "irqlab-regs.h".
INCLUDES = ("guest-kmod/include/uapi", "qemu-device")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-static", "-D_FILE_OFFSET_BITS=64")


def source_files() -> dict[str, Path]:
    """Relative path in the checkout -> file: the program and the headers it includes."""
    root = repo_root()
    return {
        rel: root / rel
        for rel in (
            SOURCE,
            "guest-kmod/include/uapi/linux/irqlab.h",
            "qemu-device/irqlab-regs.h",
        )
    }


def compiler() -> str:
    cc = shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("gcc is not installed (apt-get install gcc libc6-dev)")
    return cc


def compiler_version(cc: str) -> str:
    """The first line of ``cc --version`` (asked once while *cc*'s binary is the same)."""

    def ask() -> str:
        r = cancel.run_text([cc, "--version"], doing=f"asking {cc} its version")
        if r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
        return r.stdout.splitlines()[0]

    return hostfacts.remembered("cc-version", [Path(cc)], ask, args=[cc])


LIBC_PACKAGE = "libc6-dev"


def libc_version() -> str:
    """The installed Debian version of :data:`LIBC_PACKAGE` (the static binary links its
    libc.a: a glibc security update is another binary), "not installed" without it.
    Asked of dpkg once while its database is unchanged."""

    def ask() -> str:
        r = cancel.run_text(
            ["dpkg-query", "-W", "-f", "${Version}", LIBC_PACKAGE],
            doing=f"asking dpkg for the version of {LIBC_PACKAGE}",
        )
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "not installed"

    return hostfacts.remembered("dpkg-version", hostfacts.DPKG_DATABASE, ask, args=[LIBC_PACKAGE])


def compile_argv(cc: str, root: Path, out: Path) -> list[str]:
    incs = [f"-I{root / d}" for d in INCLUDES]
    return [cc, *CFLAGS, *incs, "-o", str(out), str(root / SOURCE)]


def warnings_in(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if re.search(r"\bwarning:", ln)]


def read_sources() -> Sources:
    """:func:`source_files` read now, in the order the key hashes them."""
    return Sources.read(dict(sorted(source_files().items())))


def recipe_inputs() -> dict[str, str]:
    """The recipe's own inputs of the binary besides the compiler, libc and sources:
    what :func:`input_digest` hashes of them and the CI cache key
    (:func:`irqlab.build.cachekeys.image_key`) too."""
    return {"recipe": RECIPE_VERSION, "cflags": " ".join(CFLAGS)}


def input_digest(cc: str, sources: Sources | None = None) -> str:
    """The hash naming the binary *cc* makes of *sources* (default: the current ones;
    nothing is built)."""
    h = InputHash(RECIPE_VERSION)
    h.add_str("cc", compiler_version(cc))
    for label, value in recipe_inputs().items():
        h.add_str(label, value)
    h.add_str(LIBC_PACKAGE, libc_version())
    (sources if sources is not None else read_sources()).add_to(h)
    return h.hexdigest()


# gcc names the binary (its version is an input, a cached binary too); libc6-dev for the
# static link.  A QEMU build brings them with its build dependencies, a restored cache not.
BUILD_PACKAGES: tuple[str, ...] = ("gcc", LIBC_PACKAGE)


def ensure_responder(log: Log | None = None, *, force: bool = False) -> Path:
    """Path of the static ``irqlab-respond`` binary (cached); installs
    :data:`BUILD_PACKAGES` with apt first when they are missing (as root)."""
    debs.ensure_host_packages(BUILD_PACKAGES, "the native responder", log)
    cc = compiler()
    sources = read_sources()  # compiled from these bytes, the key's, not the checkout's
    digest = input_digest(cc, sources)

    def build(out: Path) -> None:
        with StepLog(log_dir() / "build" / f"responder-{digest}.log", log) as steps:
            with (
                steps.step("compile irqlab-respond"),
                tempfile.TemporaryDirectory(prefix="irqlab-responder-") as tmp,
            ):
                sources.write_to(Path(tmp))
                argv = compile_argv(cc, Path(tmp), out / BINARY)
                steps.write("$ " + " ".join(argv))
                r = cancel.run_text(argv, doing="build step 'compile irqlab-respond'")
                steps.write(r.stdout + r.stderr)
                if r.returncode != 0:
                    raise RuntimeError(f"gcc exited {r.returncode}:\n{r.stderr[-3000:]}")
                found = warnings_in(r.stdout + r.stderr)
                if found:
                    raise RuntimeError("irqlab-respond builds with warnings:\n" + "\n".join(found))
            (out / BINARY).chmod(0o755)

    return cached_build("responder", digest, build, force=force) / BINARY
