"""Content-addressed build cache: an output directory named by the hash of its inputs.

A recipe computes an :class:`InputHash` over everything that affects its output
(source files, versions, flags), then calls :func:`cached_build`.  If
``<cache>/<name>-<hash>/`` exists, is complete and not damaged (a big file cut short:
:func:`irqlab.build.outputs.damage`), it is returned at once;
otherwise the recipe builds into a temporary directory which is renamed into
place only on success, so an interrupted build never looks complete.

Outputs are grouped by recipe, architecture and variant (:mod:`irqlab.build.outputs`).
Using an output marks it used (:func:`touch`); storing a new one evicts the least
recently used of its group beyond $IRQLAB_CACHE_KEEP (:func:`evict_after`), and
``irqlab cache --prune N`` keeps the N most recently used of every group
(:func:`prune_plan`).  Neither removes an output this checkout resolves to
(:mod:`irqlab.build.inventory`) nor one that a running QEMU holds (:func:`hold`,
taken by :class:`irqlab.vm.machine.Machine` for the outputs its command line names).
Both then remove the shared build parts (QEMU trees, .debs) that no output left needs
(:mod:`irqlab.build.shared`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from irqlab import cancel, notice
from irqlab.build.outputs import SNAPSHOT_RECIPE, Kind, damage, describe, is_recipe
from irqlab.errors import ConfigError, IrqlabError, hide_frame
from irqlab.paths import cache_dir, cache_location

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "BOOT_LOCK",
    "DEFAULT_KEEP",
    "KEEP_ENV",
    "LOCK_PURPOSES",
    "CacheBusy",
    "CacheEntry",
    "CacheKeepError",
    "Held",
    "InputHash",
    "LockError",
    "LockHeld",
    "OutputGone",
    "Removal",
    "RemoveError",
    "Sources",
    "cached_build",
    "check_keep_env",
    "dir_size",
    "entries",
    "evict_after",
    "exclusive_lock",
    "foreign",
    "held_elsewhere",
    "hold",
    "in_use",
    "is_complete",
    "keep_count",
    "lock_file",
    "orphan_locks",
    "output_dir",
    "outputs_named",
    "prune_plan",
    "remove_all",
    "remove_dir",
    "remove_entry",
    "remove_file",
    "remove_stale_lock",
    "remove_stale_locks",
    "remove_stale_temporaries",
    "stale_temporaries",
    "sweep_leftovers",
    "take_lock",
    "touch",
]

_COMPLETE = ".complete"


class InputHash:
    """Accumulates build inputs; ``hexdigest()`` names the output."""

    def __init__(self, recipe_version: str) -> None:
        self._h = hashlib.sha256()
        self.add_str("recipe", recipe_version)

    def add_str(self, label: str, value: str) -> None:
        """Hash *value* as UTF-8; a path's OS bytes undecodable in the locale (a non-ASCII
        cache path under LC_ALL=C: surrogates, a UnicodeEncodeError) as those bytes."""
        data = value.encode(errors="surrogateescape")
        self._h.update(f"{label}:{len(data)}:".encode())
        self._h.update(data)

    def add_file(self, path: Path, label: str | None = None) -> None:
        self.add_bytes(label if label is not None else path.name, path.read_bytes())

    def add_bytes(self, label: str, data: bytes) -> None:
        """A file's content *data* as :meth:`add_file` hashes the file (same digest)."""
        self.add_str("file", label)
        self._h.update(hashlib.sha256(data).digest())

    def add_tree(self, root: Path, files: Iterable[Path] | None = None) -> None:
        """Hash every regular file below *root* (or the given ones), by relative path."""
        paths = sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file()))
        for p in paths:
            if "__pycache__" in p.parts:
                continue
            self.add_file(p, label=str(p.relative_to(root)))

    def hexdigest(self, length: int = 16) -> str:
        return self._h.hexdigest()[:length]


@dataclass(frozen=True)
class Sources:
    """Source files read once: a recipe hashes these bytes and builds from these bytes
    (:meth:`write_to`), never the checkout's files again.  Read twice, an edit made in
    between (while the build waited for its lock) was built and stored under the key of
    the text it replaced, and served from the cache until a forced rebuild."""

    contents: Mapping[str, bytes]  # relative path -> content, in the order hashed
    modes: Mapping[str, int] = field(default_factory=dict)  # permission bits (unhashed)

    @classmethod
    def read(cls, files: Mapping[str, Path]) -> Sources:
        """The content and permission bits of *files* (relative path -> file), now, in
        *files*' order."""
        contents: dict[str, bytes] = {}
        modes: dict[str, int] = {}
        for rel, path in files.items():
            with path.open("rb") as f:
                contents[rel] = f.read()
                modes[rel] = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        return cls(contents, modes)

    def add_to(self, h: InputHash, prefix: str = "") -> None:
        """Hash each file as :meth:`InputHash.add_file` would, labelled *prefix* + its path."""
        for rel, data in self.contents.items():
            h.add_bytes(prefix + rel, data)

    def write_to(self, root: Path) -> None:
        """Write the files, at their relative paths, below *root*."""
        for rel, data in self.contents.items():
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            if rel in self.modes:
                dst.chmod(self.modes[rel])


def touch(path: Path) -> None:
    """Mark an output as just used: pruning keeps the most recently used of each group.
    (The directory's mtime is its last use: an output is never written after it is
    complete.)"""
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)


def output_dir(name: str, digest: str) -> Path:
    return cache_dir() / f"{name}-{digest}"


def is_complete(path: Path) -> bool:
    """Whether the output *path* is marked complete; one this user cannot look into
    (another user's, mode 0700) is not complete, not ours: its PermissionError failed
    every guest start that looked up any snapshot (:func:`entries` leaves it out)."""
    return _marked(path) is True


def _marked(path: Path) -> bool | None:
    """Whether *path* is marked complete; None when this user may not look (EACCES,
    EPERM: another user's output)."""
    try:  # os.stat, not Path.is_file(), which may say False for EACCES (newer Pythons)
        return stat.S_ISREG(os.stat(path / _COMPLETE).st_mode)
    except PermissionError:
        return None
    except (FileNotFoundError, NotADirectoryError):
        return False


BOOT_LOCK = "boot"  # a snapshot's cold boot: an output's lock besides its build's
LOCK_PURPOSES = (BOOT_LOCK,)


def lock_file(output: Path, purpose: str = "") -> Path:
    """The lock file of the cache output *output* (a directory, there or not), beside
    it: ``<output>.lock``, its build's; ``<output>.<purpose>.lock``, another lock of it
    (*purpose* one of :data:`LOCK_PURPOSES`).  :func:`remove_stale_locks` reads the
    output back from the name."""
    if purpose and purpose not in LOCK_PURPOSES:
        raise ValueError(f"a lock's purpose is one of {LOCK_PURPOSES}, not {purpose!r}")
    return output.with_name(f"{output.name}{'.' if purpose else ''}{purpose}.lock")


def _lock_output(lock: Path) -> Path:
    """The output whose lock file (:func:`lock_file`) is *lock*."""
    name = lock.name.removesuffix(".lock")
    for purpose in LOCK_PURPOSES:
        name = name.removesuffix(f".{purpose}")
    return lock.with_name(name)


def _locked_file(path: Path, *, wait: bool) -> IO[str] | None:
    """*path* opened (created if missing) and locked exclusively, or None when another
    holds it and not *wait*.  A lock file whose name a prune unlinked while this process
    waited on it is no lock any more (a third process locks a new file of that name):
    locked, it is checked to still be the file of that name (the same inode on the same
    device), else opened again."""
    while True:
        # returned open (the caller closes it); not "w": that would erase the holder's pid
        f = open(path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:
                named, held = os.stat(path), os.fstat(f.fileno())
                same = (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
            except FileNotFoundError:
                same = False
        except BlockingIOError:
            f.close()
            return None
        except BaseException:  # Ctrl-C while waiting
            f.close()
            raise
        if same:
            _write_pid(f)
            return f
        f.close()


def _write_pid(f: IO[str]) -> None:
    """Write this process's pid into the lock file *f* it holds: whose it is, for a
    waiter's message.  Past the buffer, so a write the OS refuses (a full disk: the
    flush raised, and the start failed with the lock file open) costs that message
    only: the flock is the lock."""
    with contextlib.suppress(OSError):
        os.ftruncate(f.fileno(), 0)
        os.write(f.fileno(), f"{os.getpid()}\n".encode())


class LockHeld(IrqlabError, RuntimeError):
    """Another process holds a lock that :func:`exclusive_lock` was told not to wait
    for; the message names it (``holder``: its pid, None if unknown), what it is doing
    and the lock file."""

    def __init__(self, message: str, holder: int | None) -> None:
        super().__init__(message)
        self.holder = holder


class LockError(IrqlabError, OSError):
    """A lock file could not be opened (an immutable or another user's file, a
    read-only cache); the message names it and says the OS's words."""


LOCK_POLL_S = 0.05  # how often a waiter tries a lock again


def _holder(path: Path) -> int | None:
    """The pid the holder of the lock file *path* wrote into it, None if unknown."""
    try:
        with open(path, "rb") as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def take_lock(
    path: Path,
    what: str,
    *,
    wait: bool = True,
    stopped_limit: float | None = None,
    check: Callable[[], None] | None = None,
) -> IO[str]:
    """The file *path* (created if missing), locked exclusively: closing it lets go.
    When another process holds it, say so once on stderr, naming that process (each
    holder writes its pid into the file) and *what* the lock guards (what the holder is
    doing), then wait: a wait of minutes (another run's QEMU build, a cold boot) was
    silent.  Not *wait*: raise :class:`LockHeld`, saying the same, instead.  A holder
    that is stopped (Ctrl-Z, SIGSTOP, a debugger) is said to be, once; with
    *stopped_limit*, one that stays stopped that many seconds raises :class:`LockHeld`
    (a wait behind it never ended).  *check* runs at every look while it waits and ends
    the wait by raising (the waiter was closed meanwhile: a wait of minutes behind
    another process's cold boot is no one's any more).  :class:`LockError` when the
    file cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = _locked_file(path, wait=False)
    except OSError as e:
        raise LockError(f"cannot take the lock {path}: {e.strerror or e}") from e
    if f is not None:
        return f
    pid = _holder(path)
    who = f"process {pid}" if pid is not None else "another process"
    if not wait:
        raise LockHeld(f"{who} is {what} (lock {path})", pid)
    notice.say(f"irqlab: waiting for {who}, which is {what} (lock {path})")
    return _wait_for_lock(path, what, stopped_limit, check)


def _wait_for_lock(
    path: Path, what: str, stopped_limit: float | None, check: Callable[[], None] | None
) -> IO[str]:
    from irqlab.vm.proc import is_stopped

    stopped_since: float | None = None
    while (f := _locked_file(path, wait=False)) is None:
        if check is not None:
            check()
        pid = _holder(path)
        # the waiter's scope cancelled (its guest closed while its start prepared)
        cancel.check(
            f"waiting for {f'process {pid}' if pid else 'another process'}, "
            f"which is {what} (lock {path})"
        )
        if pid is None or not is_stopped(pid):
            stopped_since = None  # continued (SIGCONT), or another holder now
        elif stopped_since is None:
            stopped_since = time.monotonic()
            limit = "" if stopped_limit is None else f"; waiting at most {stopped_limit:g} s"
            notice.say(f"irqlab: process {pid} is stopped (Ctrl-Z, SIGSTOP or a debugger){limit}")
        elif stopped_limit is not None and time.monotonic() - stopped_since > stopped_limit:
            raise LockHeld(
                f"process {pid}, which is {what}, stayed stopped for {stopped_limit:g} s "
                f"(lock {path})",
                pid,
            )
        time.sleep(LOCK_POLL_S)
    return f


@contextlib.contextmanager
def exclusive_lock(
    path: Path, what: str, *, wait: bool = True, stopped_limit: float | None = None
) -> Iterator[None]:
    """Hold the lock :func:`take_lock` takes for the block."""
    with take_lock(path, what, wait=wait, stopped_limit=stopped_limit):
        yield


def orphan_locks(root: Path | None = None) -> list[Path]:
    """The lock files of outputs that are not in the cache (any more), held or not:
    every build, every snapshot configuration leaves one (``<output>.lock``,
    ``<output>.boot.lock``), and a removed output leaves its own."""
    base = root if root is not None else cache_location()
    found = []
    for path in sorted(base.glob("*.lock")):
        output = _lock_output(path)
        if _output_name(output.name) and not output.exists():
            found.append(path)
    return found


def remove_stale_locks(root: Path | None = None) -> list[Path]:
    """Remove the lock files of outputs that are not in the cache (any more)
    (:func:`orphan_locks`) that nobody holds or waits for (:func:`remove_stale_lock`): a
    cache held a thousand empty files.  A waiter on a removed one locks a new file of
    the same name (:func:`_locked_file`); returns what was removed."""
    return [p for p in orphan_locks(root) if remove_stale_lock(p, _lock_output(p))]


def remove_stale_lock(path: Path, guarded: Path) -> bool:
    """Remove the lock file *path* of *guarded* (an output, an unpacked package) when
    *guarded* is not there and the lock is free: taken here without waiting, the file
    still of that name, and no process blocked waiting for it (:func:`_waited_for`);
    True if removed.  A waiter that polls, as this irqlab does, locks a new file of that
    name (:func:`_locked_file`)."""
    if guarded.exists():
        return False
    try:
        f = _locked_file(path, wait=False)
        if f is None:
            return False
        with f:
            # a build that finished meanwhile keeps its lock; an older irqlab blocked in
            # flock(2) on it does not check, once it holds it, that it is still the file
            # of that name (it and a third process, locking a new file, would both hold)
            if guarded.exists() or _waited_for(f):
                return False
            path.unlink()
            return True
    except OSError:  # e.g. another user's (a sudo run): not ours to remove
        return False


def _waited_for(f: IO[str]) -> bool:
    """Whether a process is blocked in flock(2) on the file *f* (a ``->`` line of
    /proc/locks names its device and inode); True when /proc/locks cannot be read."""
    st = os.fstat(f.fileno())
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return True
    return any(
        len(fields) > 5 and fields[1] == "->" and fields[-3] == file_id
        for fields in map(str.split, text.splitlines())
    )


# A small file written whole under a temporary name, then renamed: ``<name>.<pid>.tmp``
# (a memo of apt's answers, an accelerator verdict, a guest key, the agent's ABI file).
_PID_TMP = re.compile(r"^.+\.(?P<pid>[1-9][0-9]{0,9})\.tmp$")
# Younger ones stay whatever their pid says: a writer in another pid namespace (a
# container sharing the cache) has a pid that names no process, or another, here.
TMP_MIN_AGE_S = 60.0
NOT_SCANNED = frozenset({"ccache"})  # it keeps its own temporaries


def stale_temporaries(root: Path | None = None, now: float | None = None) -> list[Path]:
    """The temporary files ``<name>.<pid>.tmp`` in the cache (its top folder and the
    folders in it that are no output) whose writer was killed before its rename: no
    process *pid* lives (or a zombie), or the one that does started after the file was
    last written (the pid was used again).  Never one younger than
    :data:`TMP_MIN_AGE_S`.  (An output's ``.tmp`` directory is a leftover of
    :func:`entries`, its writer found by its lock: :func:`sweep_leftovers`.)"""
    base = root if root is not None else cache_location()
    when = time.time() if now is None else now
    found = []
    for folder in [base, *_scanned_folders(base)]:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        found += [folder / n for n in names if _PID_TMP.match(n) and _stale(folder / n, when)]
    return found


def _stale(path: Path, now: float) -> bool:
    """Whether *path*, named ``<name>.<pid>.tmp``, is a file whose writer is gone (see
    :func:`stale_temporaries`)."""
    from irqlab.vm.proc import has_exited, started_at

    m = _PID_TMP.match(path.name)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if m is None or not stat.S_ISREG(st.st_mode) or now - st.st_mtime < TMP_MIN_AGE_S:
        return False
    pid = int(m["pid"])
    if has_exited(pid):
        return True
    started = started_at(pid)
    # +1: the boot time that dates a process is in whole seconds
    return started is not None and started > st.st_mtime + 1


def _scanned_folders(base: Path) -> list[Path]:
    """The folders in the cache *base* that may hold a writer's temporary file."""
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    return [
        base / n
        for n in names
        if n not in NOT_SCANNED and not _ENTRY.match(n) and stat.S_ISDIR(_lstat_mode(base / n))
    ]


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def remove_stale_temporaries(root: Path | None = None) -> list[Path]:
    """Remove :func:`stale_temporaries` (each judged again just before: a process
    given that pid since writes it anew); returns what was removed."""
    removed = []
    for path in stale_temporaries(root):
        try:
            if _stale(path, time.time()):
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove (another user's)
            continue
    return removed


def _serves(name: str, final: Path, *, say: bool = False) -> bool:
    """Whether the output *final* of *name* serves as it is: complete and not damaged
    (:func:`irqlab.build.outputs.damage`: a truncated initramfs or vmlinux booted into a
    confusing guest error).  One that does is marked used; a damaged one is said (with
    *say*), to be built again."""
    if not is_complete(final):
        return False
    why = damage(name, final)
    if why:
        if say:
            notice.say(f"irqlab: {final} is damaged ({why}): building it again")
        return False
    touch(final)
    return True


def cached_build(
    name: str,
    digest: str,
    build: Callable[[Path], None],
    *,
    force: bool = False,
    evict: bool = True,
) -> Path:
    """Return ``<cache>/<name>-<digest>``, running ``build(tmpdir)`` first if it is missing.

    ``build`` must fill the directory it is given; on success the directory is
    renamed into place and marked complete.  On failure it is removed and the
    exception propagates.  Concurrent callers (two test runs, two terminals)
    serialise on a lock file, so one builds and the other then finds the result.

    A cached output is marked used (:func:`touch`).  After storing a new one, the
    least recently used outputs of its group beyond :func:`keep_count` go (with *evict*;
    :func:`evict_after` says which never do); a snapshot keeps its own count.
    """
    if not is_recipe(name):  # its outputs would be none of irqlab's (foreign)
        raise ValueError(f"{name!r} is no recipe of irqlab.build.outputs.RECIPES")
    if not _DIGEST.fullmatch(digest):  # the same: never listed, looked up or pruned
        raise ValueError(f"{digest!r} is no digest of an output (16 hex digits)")
    final = output_dir(name, digest)
    keep = keep_count() if evict else None  # a bad value fails on a cache hit too
    if not force and _serves(name, final, say=True):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final.parent)
    with exclusive_lock(lock_file(final), f"building {final.name}"):
        if not force and _serves(name, final):
            return final
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            build(tmp)
            # cancelled meanwhile (its guest closed while its start prepared): a step
            # that swallowed the cancel must not make a whole output of what it left
            cancel.check(f"building {final.name}")
            # inside the try too: a full disk (no inode left for .complete) left the
            # whole output behind as <output>.tmp (a snapshot's: 149 MB) until a prune
            (tmp / _COMPLETE).write_text(digest + "\n")
            remove_dir(final)  # a forced rebuild's old output
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if keep is not None:
        evict_after(final, keep)
    return final


# --- housekeeping --------------------------------------------------------------------

# An output being built is <output>.tmp, one being removed <output>.trash: neither is
# ever looked up, so no interruption leaves a partial output that looks complete.
TRASH = ".trash"  # suffix of an output or shared part being removed (a leftover if cut short)
_ENTRY = re.compile(
    r"^(?P<name>[a-z][a-z0-9_-]*?)-(?P<digest>[0-9a-f]{16})(?P<tmp>\.tmp|\.trash)?$"
)


_DIGEST = re.compile(r"[0-9a-f]{16}")  # an output's digest, as _ENTRY reads it


def _output_name(name: str) -> re.Match[str] | None:
    """*name* read as an output's directory name (recipe, digest, .tmp / .trash), or
    None: not one, or not of a recipe irqlab knows (:func:`foreign`)."""
    m = _ENTRY.match(name)
    return m if m is not None and is_recipe(m["name"]) else None


def foreign(root: Path | None = None) -> list[Path]:
    """What in the cache is named like an output but of no recipe irqlab knows (a
    user's ``project-0123456789abcdef/``): never listed as an output, never removed."""
    base = root if root is not None else cache_dir()
    names = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    return [base / n for n in names if _ENTRY.match(n) and not _output_name(n)]


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the recipe: qemu, kernel, kmod, image, ...
    digest: str
    path: Path
    complete: bool
    mtime: float  # the last use (see touch)
    arch: str = ""  # what the output is for (irqlab.build.outputs): "x86_64", "aarch64"
    variant: str = ""  # within recipe and arch, e.g. an image's extra packages
    detail: str = ""  # the variant for people
    damage: str = ""  # complete but damaged: what is wrong (irqlab.build.outputs.damage)

    @property
    def group(self) -> tuple[str, str, str]:
        """Outputs that compete for the places pruning keeps: recipe, arch, variant."""
        return (self.name, self.arch, self.variant)


def entries(root: Path | None = None, *, recipe: str | None = None) -> list[CacheEntry]:
    """The outputs in the cache (not the shared source trees, ccache or package pool),
    each described by :func:`irqlab.build.outputs.describe`; only *recipe*'s if given."""
    base = root if root is not None else cache_dir()
    found = []
    for p in sorted(base.iterdir()) if base.is_dir() else []:
        m = _output_name(p.name)
        if not m or (recipe is not None and m["name"] != recipe) or not p.is_dir():
            continue
        marked = _marked(p)
        if marked is None:  # another user's: neither listed nor pruned (it raised)
            _say_unreadable(p)
            continue
        complete = marked and not m["tmp"]
        kind = describe(m["name"], p) if complete else Kind()
        found.append(
            CacheEntry(
                m["name"],
                m["digest"],
                p,
                complete,
                p.stat().st_mtime,
                kind.arch,
                kind.variant,
                kind.detail,
                damage(m["name"], p) if complete else "",
            )
        )
    return found


_SAID_UNREADABLE: set[Path] = set()  # outputs :func:`entries` said it leaves out


def _say_unreadable(path: Path) -> None:
    """Say once per process that the output *path* cannot be looked into and is left."""
    if path not in _SAID_UNREADABLE:
        _SAID_UNREADABLE.add(path)
        notice.say(f"irqlab: {path} cannot be read (Permission denied): another user's? left alone")


def dir_size(path: Path) -> int:
    """The bytes of the files under *path*; what another process removes meanwhile (a
    build's temporary directory on a shared cache) counts as gone, not as an error."""
    total = 0
    for root, _dirs, files in os.walk(path):  # os.walk skips a directory that went away
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def prune_plan(
    found: Sequence[CacheEntry], keep: int, protected: Collection[Path] = ()
) -> list[CacheEntry]:
    """What to remove: incomplete leftovers, damaged outputs, and in each group (recipe,
    architecture, variant: :attr:`CacheEntry.group`) all but the *keep* most recently
    used outputs; never one in *protected*.  ``keep=0`` leaves only the protected ones."""
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    doomed = [e for e in found if not e.complete or (e.damage and e.path not in protected)]
    groups: dict[tuple[str, str, str], list[CacheEntry]] = {}
    for e in found:
        if e.complete and not e.damage:
            groups.setdefault(e.group, []).append(e)
    for group in groups.values():
        group.sort(key=lambda e: e.mtime, reverse=True)
        doomed += [e for e in group[keep:] if e.path not in protected]
    return doomed


# --- in use --------------------------------------------------------------------------


class OutputGone(IrqlabError, FileNotFoundError):
    """An output was removed from the cache after it was found (pruned meanwhile)."""


class CacheBusy(IrqlabError, TimeoutError):
    """An output stayed locked for removal longer than a guest start waits."""


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


class Held:
    """Shared locks on output directories (see :func:`hold`); :meth:`release` drops them."""

    def __init__(self, paths: Sequence[Path], fds: Sequence[int]) -> None:
        self.paths = tuple(paths)
        self._fds = list(fds)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing the last descriptor drops its lock

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


HOLD_WAIT_S = 60.0  # the longest a removal under way (an rmtree) is waited for


def hold(paths: Iterable[Path], *, timeout: float = HOLD_WAIT_S) -> Held:
    """Take a shared lock on each output directory in *paths* until :meth:`Held.release`:
    :func:`remove_entry` (``irqlab cache --prune``, the eviction after a build) leaves a
    held output alone.  A removal under way is waited for, up to *timeout* s (a remover
    stopped with Ctrl-Z must not hang every guest start); an output gone by then raises
    :class:`OutputGone`.  The lock is on the directory itself, not on the build's lock
    file, so that a forced rebuild of an output never waits for the guests using it."""
    fds: list[int] = []
    wanted = list(dict.fromkeys(paths))
    deadline = time.monotonic() + timeout
    try:
        for p in wanted:
            try:
                fd = _open_dir(p)
            except FileNotFoundError:
                raise OutputGone(f"{p} is no longer in the cache (pruned meanwhile)") from None
            fds.append(fd)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CacheBusy(
                            f"{p} is locked for removal (irqlab cache --prune, or the "
                            f"eviction after a build) and still was after {timeout:g} s: "
                            "is a pruning process stopped?"
                        ) from None
                    time.sleep(LOCK_POLL_S)  # a lock has no timeout: poll it
            if not is_complete(p):
                raise OutputGone(f"{p} was removed from the cache (pruned meanwhile)")
    except BaseException:
        Held(wanted, fds).release()
        raise
    return Held(wanted, fds)


def in_use(path: Path) -> bool:
    """Whether something holds the output *path* (:func:`hold`) right now."""
    try:
        fd = _open_dir(path)
    except OSError:
        return False
    return held_elsewhere(fd)


def held_elsewhere(fd: int) -> bool:
    """Whether another open file description holds a flock on *fd*'s file; closes *fd*
    (and with it the lock it may have taken to find out)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def outputs_named(args: Iterable[str], root: Path | None = None) -> list[Path]:
    """The output directories below *root* (default: the cache) that *args* (a command
    line) name, e.g. a QEMU binary, a kernel or an initramfs; each once, in order."""
    base = root if root is not None else cache_location()
    pattern = re.compile(re.escape(str(base)) + r"/([a-z][a-z0-9_-]*?-[0-9a-f]{16})(?=[/,:\s]|$)")
    found = (base / m[1] for a in args for m in pattern.finditer(a))
    return list(dict.fromkeys(found))


class RemoveError(IrqlabError, OSError):
    """The OS refused to remove (part of) an output; the message names the path and
    says the OS's words (Permission denied, Operation not permitted, ...)."""


def _removing(path: Path, step: Callable[[], object]) -> None:
    """Run *step*, a step of removing *path* (a missing file is no failure);
    :class:`RemoveError` naming the file the OS refused and its words."""
    try:
        step()
    except RemoveError:
        raise
    except FileNotFoundError:
        return
    except OSError as e:
        raise RemoveError(f"cannot remove {e.filename or path}: {e.strerror or e}") from e


def _rmtree(path: Path) -> None:
    """shutil.rmtree, whose error names the file it could not remove by its whole path
    (the error rmtree raises names it relative to its directory: "state.mig")."""

    def refused(_func: object, name: str, exc_info: tuple[type, BaseException, object]) -> None:
        e = exc_info[1]
        if not isinstance(e, FileNotFoundError):
            words = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise RemoveError(f"cannot remove {name}: {words}") from e

    shutil.rmtree(path, onerror=refused)


def remove_dir(path: Path) -> None:
    """Remove the output directory *path* (its build lock held), or a shared part of the
    cache (:mod:`irqlab.build.shared`, its lock held): first renamed out of the
    names that are looked up (``<output>.trash``), then deleted, so an interruption
    (Ctrl-C, SIGKILL, a full disk) leaves an incomplete leftover, never an output
    marked complete without its big files (rmtree deletes ``.complete`` last)."""
    if path.name.endswith((".tmp", TRASH)):
        _removing(path, lambda: _rmtree(path))
        return
    trash = path.with_name(path.name + TRASH)
    _removing(trash, lambda: _rmtree(trash))  # an earlier removal's, interrupted
    _removing(path, lambda: os.rename(path, trash))
    _removing(trash, lambda: _rmtree(trash))


def remove_file(path: Path) -> None:
    """Remove the file *path* (a shared part's, its lock held); :class:`RemoveError`
    naming it and the OS's words when the OS refuses (a missing file is no failure)."""
    _removing(path, path.unlink)


_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk (or quota)


def remove_entry(entry: CacheEntry) -> bool:
    """Remove one output unless a build holds its lock or something holds the output
    (:func:`hold`: a running guest's QEMU, kernel, image) right now; True if removed,
    False if it stays for that reason.  :class:`RemoveError` when the OS refuses (a
    read-only or immutable entry, another user's): it may stay in part or whole."""
    # the output's build lock, a .tmp entry's too (its build holds that lock)
    output = entry.path.with_name(f"{entry.name}-{entry.digest}")
    lock: IO[str] | contextlib.nullcontext[None] | None
    try:
        lock = _locked_file(lock_file(output), wait=False)
    except OSError as e:
        if e.errno not in _FULL or lock_file(output).exists():
            raise RemoveError(
                f"cannot remove {entry.path}: cannot lock {e.filename}: {e.strerror}"
            ) from e
        # no inode for a lock file that is not there: nobody holds it, nor can a build
        # take it on this disk (a leftover whose lock file had gone stayed on the full
        # disk it filled: `irqlab cache --prune` could not remove it)
        lock = contextlib.nullcontext()
    if lock is None:
        return False
    with lock:
        try:
            fd = _open_dir(entry.path)
        except FileNotFoundError:
            return True
        except OSError:  # not ours to remove (not a directory): leave it
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            remove_dir(entry.path)
        finally:
            os.close(fd)
        # The lock file goes with remove_stale_locks (a waiter on it then takes a new one).
    return True


def sweep_leftovers(root: Path | None = None) -> list[Path]:
    """Best effort: remove the ``.tmp`` and ``.trash`` directories whose writer or
    remover is gone (nobody holds the output's build lock, which each holds: one that
    does is left alone).  A first start SIGKILLed while it saved its snapshot left
    ``snapshot-<key>.tmp/state.mig`` (tens of MB) until a prune; returns what went."""
    try:
        found = [e for e in entries(root) if e.path.name.endswith((".tmp", TRASH))]
    except OSError:
        return []
    return [e.path for e in remove_all(found).removed]


@dataclass
class Removal:
    """What :func:`remove_all` did: the outputs removed, those that stayed because
    something held them, and the OS's refusals (one line each, naming the path)."""

    removed: list[CacheEntry]
    held: list[CacheEntry]
    errors: list[str]


def remove_all(doomed: Iterable[CacheEntry]) -> Removal:
    """:func:`remove_entry` each of *doomed*, going on past the ones that stay."""
    done = Removal([], [], [])
    for e in doomed:
        try:
            (done.removed if remove_entry(e) else done.held).append(e)
        except RemoveError as err:
            done.errors.append(str(err))
    return done


# --- automatic eviction ---------------------------------------------------------------

KEEP_ENV = "IRQLAB_CACHE_KEEP"
DEFAULT_KEEP = 8
# Recipes that keep their own count (irqlab.vm.snapshot: $IRQLAB_SNAPSHOT_KEEP, the most
# recently used across all configurations): a build of theirs evicts nothing here.
OWN_COUNT = frozenset({SNAPSHOT_RECIPE})


class CacheKeepError(ConfigError):
    """$IRQLAB_CACHE_KEEP (or $IRQLAB_SNAPSHOT_KEEP) is not a count: a usage error
    (``irqlab`` exits 2), found before anything is built or started
    (:func:`check_keep_env`)."""


def check_keep_env() -> None:
    """Raise :class:`CacheKeepError` when $IRQLAB_CACHE_KEEP or $IRQLAB_SNAPSHOT_KEEP is
    not a count, up front (a guest's prepare, the pytest plugin's start): a cache hit,
    or a guest that boots cold, reads neither, and a bad value went unsaid."""
    from irqlab.vm import snapshot  # reads its count through keep_count

    keep_count()
    snapshot.keep_snapshots()


def keep_count(
    env: Mapping[str, str] = os.environ,
    *,
    name: str = KEEP_ENV,
    default: int = DEFAULT_KEEP,
    what: str = "outputs of each recipe and variant",
) -> int | None:
    """How many outputs of each group (recipe, architecture, variant) a new output leaves
    in the cache: $IRQLAB_CACHE_KEEP, default :data:`DEFAULT_KEEP`; None for ``0`` (no
    automatic eviction).  *name*, *default* and *what* read another such count the same
    way ($IRQLAB_SNAPSHOT_KEEP)."""
    text = env.get(name, "").strip() or str(default)
    try:
        keep = int(text)
    except ValueError:
        keep = -1
    if keep < 0:
        raise CacheKeepError(
            f"{name}={text!r}: expected how many {what} to keep (0: never remove any automatically)"
        )
    return keep or None


def _current_outputs(recipe: str, group: Sequence[CacheEntry]) -> set[Path]:
    """The outputs in *group* (of *recipe*) that this checkout resolves to."""
    from irqlab.build import inventory

    return inventory.current_paths(recipe, group)


def evict_after(stored: Path, keep: int) -> list[Path]:
    """Best effort, never waiting: remove the least recently used outputs of *stored*'s
    group beyond the *keep* most recently used.  Never *stored*, an output this checkout
    resolves to (:mod:`irqlab.build.inventory`), one a running guest holds (:func:`hold`)
    or one a build holds locked; returns what was removed.  When some went, so do the
    shared parts nothing left needs (:func:`irqlab.build.shared.prune_unused`)."""
    m = _output_name(stored.name)
    if m is None or m["name"] in OWN_COUNT:
        return []
    try:
        found = [e for e in entries(stored.parent, recipe=m["name"]) if e.complete]
        this = next((e for e in found if e.path == stored), None)
        if this is None:
            return []
        group = [e for e in found if e.group == this.group]
        if len(group) <= keep:
            return []
        protected = {stored, *_current_outputs(this.name, group)}
        gone = [e.path for e in remove_all(prune_plan(group, keep, protected)).removed]
        remove_stale_locks(stored.parent)
        if gone:  # the shared parts only the evicted outputs needed (an old QEMU's trees)
            from irqlab.build import shared

            shared.prune_unused(stored.parent)
        return gone
    except Exception:  # best effort: a finished build never fails on its eviction
        return []
