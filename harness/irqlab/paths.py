"""Where irqlab finds its sources and keeps generated files."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from irqlab import notice
from irqlab.errors import IrqlabError

__all__ = [
    "BUNDLED_SOURCES",
    "CACHE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "CacheDirError",
    "SourceTreeMissing",
    "agent_package_dir",
    "cache_description",
    "cache_dir",
    "cache_location",
    "checkout_root",
    "log_dir",
    "packaged_file",
    "pid_runs",
    "repo_root",
    "results_dir",
]

_PKG_DIR = Path(__file__).resolve().parent
# A wheel carries the sources the build recipes need (qemu-device/, guest-kmod/)
# here, laid out as in the checkout (pyproject's force-include); not buildroot/:
# the Buildroot image needs a checkout.
BUNDLED_SOURCES = _PKG_DIR / "data" / "src"


class SourceTreeMissing(IrqlabError, RuntimeError):
    """Neither a checkout nor the wheel's bundled sources are there."""


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install), or None."""
    root = _PKG_DIR.parent.parent
    return root if (root / "qemu-device").is_dir() and (root / "harness").is_dir() else None


def repo_root() -> Path:
    """Where the sources the build recipes read are: the checkout (editable install),
    else the copy a wheel carries (:data:`BUNDLED_SOURCES`)."""
    root = checkout_root()
    if root is not None:
        return root
    if (BUNDLED_SOURCES / "qemu-device").is_dir():
        return BUNDLED_SOURCES
    raise SourceTreeMissing(
        f"irqlab's sources (qemu-device/, guest-kmod/) are neither in a checkout above "
        f"{_PKG_DIR} nor in {BUNDLED_SOURCES}: reinstall irqlab from its wheel or a checkout"
    )


class CacheDirError(IrqlabError, RuntimeError):
    """The cache directory cannot be created or written; the message names the variable."""


_WRITABLE: set[Path] = set()  # cache directories found writable in this process
_FULL = (errno.ENOSPC, errno.EDQUOT)  # a probe's errors that are no unwritable directory
CACHE_DIR_MODE = 0o700  # of a cache directory irqlab creates (an existing one is left as is)
PRIVATE_FILE_MODE = 0o600  # of cache files holding secrets: image archives, snapshots


def _check_writable(path: Path, how: str) -> Path:
    if path in _WRITABLE:
        return path
    import tempfile

    try:
        # one irqlab creates is the user's alone (0700: it holds the guest's SSH host
        # key and snapshots of guest memory); one that is there already keeps its mode
        # (a user's own choice, a directory shared on purpose): the secret files in it
        # are written 0600 anyway
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=CACHE_DIR_MODE, exist_ok=True)
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            if e.errno not in _FULL:
                raise
            # A full disk is no reason to refuse: what is cached still serves, and
            # `irqlab cache --prune` must run to free it (it refused, and so did every
            # restore of an intact snapshot).  What needs room fails where it writes.
            notice.say(
                f"irqlab: warning: the cache directory {path} has no room left "
                f"({e.strerror}): what is cached still serves, a build or a new snapshot "
                "fails; `irqlab cache --prune N` frees room"
            )
    except OSError as e:
        raise CacheDirError(
            f"the irqlab cache directory {path} ({how}) is not writable: "
            f"{e.strerror or e}; set IRQLAB_CACHE_DIR to a writable directory"
        ) from None
    _WRITABLE.add(path)
    return path


def cache_dir() -> Path:
    """Build cache (QEMU builds, guest images, keys), keyed by input hash inside.

    $IRQLAB_CACHE_DIR overrides; default is $XDG_CACHE_HOME/irqlab or ~/.cache/irqlab.
    It must be writable (locks, snapshots): :class:`CacheDirError` says so otherwise.
    Created :data:`CACHE_DIR_MODE` (0700) when missing; an existing one keeps its mode.
    """
    return _check_writable(*_cache_location())


def cache_location() -> Path:
    """Where :func:`cache_dir` is, without creating or checking it (e.g. to recognise
    cache paths in a command line)."""
    return _cache_location()[0]


def _cache_location() -> tuple[Path, str]:
    """The cache directory and how it was chosen (for error messages)."""
    env = os.environ.get("IRQLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve(), f"IRQLAB_CACHE_DIR={env}"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec: a relative $XDG_CACHE_HOME is ignored (it built a new cache under
    # the working directory, and a 5-minute QEMU build into it)
    if xdg and Path(xdg).is_absolute():
        return (Path(xdg) / "irqlab").resolve(), "$XDG_CACHE_HOME/irqlab"
    return (Path.home() / ".cache" / "irqlab").resolve(), "the default, ~/.cache/irqlab"


def cache_description() -> str:
    """Where the build cache is and why, for messages: ``/root/.cache/irqlab (the
    default, ~/.cache/irqlab)``."""
    where, how = _cache_location()
    return f"{where} ({how})"


def log_dir() -> Path:
    """Logs of runs (console, agent, build steps): $IRQLAB_LOG_DIR, else
    <checkout>/build/logs, else (an installed wheel) <cache dir>/logs.  The pytest
    plugin sets $IRQLAB_LOG_DIR (default <rootdir>/.irqlab/logs)."""
    env = os.environ.get("IRQLAB_LOG_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = checkout_root()
    return root / "build" / "logs" if root is not None else cache_dir() / "logs"


def results_dir() -> Path:
    """Where commands put what they make that is neither a build output nor a log (bench
    results in bench/, bench-peers' in bench-peers/ and its peer-venv/): <checkout>/build,
    else (an installed wheel) the cache directory, as :func:`log_dir` chooses (an
    installed wheel wrote them into its own venv, <venv>/lib/python3.11/build/bench)."""
    root = checkout_root()
    return root / "build" if root is not None else cache_dir()


def agent_package_dir() -> Path:
    """The guest agent's package (``irqlab_agent``, installed beside this package), found
    by path: the host never imports the guest's code."""
    return _PKG_DIR.parent / "irqlab_agent"


def packaged_file(name: str, repo_rel: str) -> Path:
    """A source-of-truth file: from the checkout if present, else from the wheel's data/."""
    root = checkout_root()
    if root is not None and (root / repo_rel).is_file():
        return root / repo_rel
    p = _PKG_DIR / "data" / name
    if p.is_file():
        return p
    raise FileNotFoundError(f"{repo_rel} not found in the checkout or in {_PKG_DIR / 'data'}")


RUN_OUTCOME = "outcome"  # a pytest run directory's file: "passed" or "failed ..."
LATEST_RUN = "latest"  # the log directory's symlink to the newest pytest run


def run_passed(run: Path) -> bool:
    """Whether the pytest run directory *run* says its run passed (one that failed, was
    interrupted or never finished has no ``passed`` outcome)."""
    try:
        return (run / RUN_OUTCOME).read_text().split(maxsplit=1)[:1] == ["passed"]
    except OSError:
        return False


def prune_logs(
    root: Path | None = None,
    *,
    keep_runs: int | None = 10,
    keep_failed: int = 10,
    keep_other: int = 50,
) -> int:
    """Keep the newest *keep_runs* pytest run directories (``pytest-*``; None: leave them
    all, a pytest controller prunes its own), and beyond them the newest *keep_failed*
    that did not pass (:func:`run_passed`: ten passing runs removed the failing one
    whose logs were wanted), and the newest *keep_other* other entries (a library's or
    the CLI's guest runs, an agent's log files) in the log directory; returns how many
    were removed.  Only irqlab's own entries are pruned (their names carry its
    ``<stamp>``): a user's files in a log directory they named stay.  ``build/`` (the
    recipes' logs) and the ``latest`` link stay, and so
    does anything whose name carries the pid of a process still running (a guest that
    runs for hours writes into its files, not into its directory: by the directory's
    age it looked old, and its logs went while it ran), but for this process's own
    guests: only those still running stay (:func:`hold_run_dir`; a script that
    started guests in a loop kept every run directory it made)."""
    import shutil

    base = root if root is not None else log_dir()
    if not base.is_dir():
        return 0

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # removed meanwhile (another run's prune)
            return 0.0

    # only what irqlab made: its names carry a <stamp> (a directory given with
    # --irqlab-log-dir or $IRQLAB_LOG_DIR may hold the user's own files: they were
    # pruned as "other entries", the oldest first)
    entries = [
        p for p in sorted(base.iterdir(), key=mtime, reverse=True) if _STAMPED.search(p.name)
    ]
    runs = [p for p in entries if p.is_dir() and p.name.startswith("pytest-")]
    other = [
        p
        for p in entries
        if not p.name.startswith("pytest-") and p.name not in ("build", LATEST_RUN)
    ]
    older = runs[keep_runs:] if keep_runs is not None else []
    kept_failed = [p for p in older if not run_passed(p)][:keep_failed]
    doomed = [p for p in older if p not in kept_failed] + other[keep_other:]
    doomed = [p for p in doomed if not _owner_keeps(p)]
    for p in doomed:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(doomed)


# the <stamp> of every log entry irqlab makes: pytest-20261206-154314-16208,
# e2e-20261206-154314-16208-3, agent-20261206-154314.rx.jsonl, ...
_STAMPED = re.compile(r"-\d{8}-\d{6}(?:[-.]|$)")
# <stamp>-<pid>: pytest-20261206-154314-16208, e2e-20261206-154314-16208-3, ...
_OWNER = re.compile(r"-\d{8}-\d{6}-(\d+)(?:-\d+)?(?:\.|$)")


def _owner_keeps(entry: Path) -> bool:
    """Whether the log *entry* stays for the process its name carries (``<stamp>-<pid>``):
    another process that runs; this one, for a run directory it holds
    (:func:`hold_run_dir`: its guest runs) or a pytest run's."""
    m = _OWNER.search(entry.name)
    if m is None:
        return False
    pid = int(m[1])
    if pid == os.getpid() and not entry.name.startswith("pytest-"):
        return entry.name in _HELD_RUN_DIRS
    return pid_runs(pid)


# the names of this process's run directories in use (a QEMU of its own not closed)
_HELD_RUN_DIRS: set[str] = set()


def hold_run_dir(run_dir: Path) -> None:
    """*run_dir* (a log directory entry of this process) is in use until
    :func:`release_run_dir`: :func:`prune_logs` leaves it."""
    _HELD_RUN_DIRS.add(run_dir.name)


def release_run_dir(run_dir: Path) -> None:
    _HELD_RUN_DIRS.discard(run_dir.name)


def pid_runs(pid: int) -> bool:
    """Whether a process *pid* exists (another user's too): the owner of a log entry or
    of a socket directory (irqlab.vm.machine) that must not be removed under it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's: it runs
        return True
    return True
