"""The guest's Python: which parts of Debian's 3.11 stdlib the image ships, and their
precompilation (unchecked-hash pycs, optionally without the sources)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from irqlab.build.initramfs import LIBDIR, Stage
from irqlab.build.steps import StepLog

__all__ = [
    "PY",
    "PY_DROP",
    "PY_DYNLOAD_DROP",
    "compile_python",
    "drop_sources",
    "keep_python_file",
    "ships",
]

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
        "config-3.11-aarch64-linux-gnu",
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


def ships(rel: str) -> bool:
    """Whether a package path (relative to the package's tree) goes into the image, as far
    as Python goes: everything outside ``usr/lib/python3.11/`` does."""
    root = f"usr/lib/{PY}/"
    return not rel.startswith(root) or keep_python_file(rel[len(root) :])


def keep_python_file(rel: str) -> bool:
    """Whether a path below usr/lib/python3.11/ goes into the image."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] in PY_DROP or "__pycache__" in parts:
        return False
    if len(parts) == 2 and parts[0] == "lib-dynload":
        return not parts[1].startswith(PY_DYNLOAD_DROP)
    return True


def compile_python(
    stage: Stage, dirs: Sequence[Path], steps: StepLog, *, legacy: bool = False
) -> None:
    """Precompile (unchecked-hash pycs: no stat of sources on import).

    *legacy*: write ``x.pyc`` beside ``x.py`` (for a sourceless tree, see
    :func:`drop_sources`) instead of ``__pycache__/x.cpython-311.pyc``.
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
    libdir = stage.path(LIBDIR)
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


def drop_sources(tree: Path) -> int:
    """Remove ``.py`` files that have a legacy ``.pyc`` beside them; returns bytes saved."""
    saved = 0
    for py in sorted(tree.rglob("*.py")):
        if py.with_suffix(".pyc").is_file() and not py.is_symlink():
            saved += py.stat().st_size
            py.unlink()
    return saved
