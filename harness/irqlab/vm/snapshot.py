"""Ready-state snapshots: save a booted, ready guest once, start new QEMUs from it.

A snapshot is QEMU's own migration stream of a guest whose module is loaded and
whose agent daemon listens, written with ``migrate`` to the state file while the
VM is stopped, and loaded by a new QEMU started with ``-incoming defer`` and
``migrate-incoming`` from it.  QEMU gets the open file itself (``fd:``, passed over
QMP): no ``cat`` process and pipe in between, which halved the load (133 → 62 ms
under TCG here).  It lives in the build cache like the other outputs
(:func:`irqlab.build.cache.cached_build`): named by the hash of every input that
shapes the saved state (:func:`snapshot_key`), written into a temporary directory
and renamed into place only once QEMU reports the migration completed, so an
interrupted save never looks complete; ``irqlab cache --prune`` prunes it.

The stream holds nothing that ties it to the process that saved it: the host
reaches the guest afterwards through a new SSH connection and a port forward to
the agent daemon (see ``irqlab_agent.daemon``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from irqlab import notice
from irqlab.build import cache, outputs
from irqlab.errors import IrqlabError, hide_frame
from irqlab.paths import PRIVATE_FILE_MODE
from irqlab.vm.machine import Machine, MachineError
from irqlab.vm.qmp.errors import QMPCommandError, QMPFailure

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "META_FILE",
    "STATE_FILE",
    "SnapshotError",
    "SnapshotGone",
    "boot_lock",
    "check",
    "discard",
    "held",
    "intact",
    "keep_snapshots",
    "load",
    "lookup",
    "prune",
    "read_meta",
    "save",
    "snapshot_key",
]

RECIPE = outputs.SNAPSHOT_RECIPE
FORMAT = "2"  # bump when the saved guest's contract changes (agent port, daemon protocol)
STATE_FILE = outputs.SNAPSHOT_STATE_FILE
META_FILE = outputs.SNAPSHOT_META_FILE
STATE_FD_NAME = "irqlab-state"  # the name QEMU knows the state file's descriptor by
FULL_DISK_BYTES = 64 * 2**20  # free space below which a failed save blames the disk
EVENT_SLICE = 0.1  # s: how often a wait for QEMU's migration events checks that QEMU lives


class SnapshotError(IrqlabError, RuntimeError):
    """A snapshot could not be saved or loaded; the message names the file."""


class SnapshotGone(SnapshotError):
    """The snapshot was removed after it was found (another process pruned it): a
    cache miss, not a bad snapshot (nothing to report or discard)."""


def snapshot_key(inputs: Mapping[str, Any]) -> str:
    """The cache key of a snapshot: a hash of *inputs* (JSON-serialisable values:
    QEMU build, image, machine arguments, device properties, module parameters,
    vCPUs, accelerator, ...).  Any change of any input gives another key."""
    h = cache.InputHash(f"{RECIPE}-{FORMAT}")
    for name in sorted(inputs):
        h.add_str(name, json.dumps(inputs[name], sort_keys=True, default=str))
    return h.hexdigest()


def lookup(key: str) -> Path | None:
    """The snapshot directory for *key* marked complete, or None; whether its files are
    all there is :func:`check`'s to say (one without its state file is a bad snapshot,
    to be reported and replaced, not a missing one that a save would find in its way)."""
    d = cache.output_dir(RECIPE, key)
    return d if cache.is_complete(d) else None


@contextlib.contextmanager
def held(directory: Path) -> Iterator[None]:
    """Hold the snapshot *directory* found by :func:`lookup` (a shared lock,
    :func:`irqlab.build.cache.hold`) while it is checked and loaded: :func:`prune` and
    :func:`discard`, another process's too, leave it alone meanwhile.
    :class:`SnapshotGone` when it was removed since the lookup (or a removal under
    way stayed longer than a start waits)."""
    try:
        hold = cache.hold([directory])
    except (cache.OutputGone, cache.CacheBusy) as e:
        raise SnapshotGone(f"snapshot {directory}: {e}") from e
    except OSError as e:
        raise SnapshotError(f"snapshot {directory} cannot be held: {e}") from e
    with hold:
        yield


def intact(directory: Path) -> bool:
    """Whether the snapshot *directory* has its state file, as big as the save wrote."""
    return not outputs.damage(RECIPE, directory)


def check(directory: Path) -> dict[str, Any]:
    """The snapshot *directory*'s meta (:func:`read_meta`); :class:`SnapshotError` naming
    the file when its state file is missing, not a file, or not the size saved."""
    why = outputs.damage(RECIPE, directory)
    if why:
        raise SnapshotError(f"snapshot {why} (its directory is marked complete)")
    return read_meta(directory)


@contextlib.contextmanager
def boot_lock(
    key: str, *, stopped_limit: float | None = None, check: Callable[[], None] | None = None
) -> Iterator[str | None]:
    """Held while a guest cold-boots to make the snapshot *key*: another process that
    misses the same snapshot waits here, then finds it and restores instead of booting
    a second time.  (A lock of its own: :func:`save` takes the output's build lock.)
    Yields None when held, else why it could not be taken (the lock file cannot be
    opened, or its holder stayed stopped *stopped_limit* s): that guest boots without
    it and saves nothing, the snapshot is what it costs, not the guest.  *check* ends
    the wait by raising (:func:`irqlab.build.cache.take_lock`)."""
    path = cache.lock_file(cache.output_dir(RECIPE, key), cache.BOOT_LOCK)
    what = f"cold-booting a guest to save the snapshot {key}"
    try:
        held = cache.take_lock(path, what, stopped_limit=stopped_limit, check=check)
    except (cache.LockError, cache.LockHeld) as e:
        why = str(e)  # yielded outside the handler: a failed boot does not chain to it
    else:
        with held:
            yield None
        return
    yield why


def read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise SnapshotError(f"snapshot {directory / META_FILE} is unreadable: {e}") from e
    return meta


def discard(key: str) -> str | None:
    """Remove the snapshot for *key* (a bad one); None once it is gone, else why it stays:
    a save holds its lock or a guest holds the output (:func:`irqlab.build.cache.hold`),
    or the OS refused (the path and the OS's words)."""
    done = cache.remove_all(e for e in cache.entries(recipe=RECIPE) if e.digest == key)
    if done.held:
        return "another process holds it"
    if done.errors and lookup(key) is not None:
        return "; ".join(done.errors)
    for error in done.errors:  # out of the way, but not all of it is gone
        notice.say(f"irqlab: {error} (irqlab cache --prune removes the rest)")
    return None


def _wait_migration(
    machine: Machine,
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    written: Path | None = None,
) -> dict[str, Any]:
    """Wait for QEMU's MIGRATION event with a final status (completed or failed); a
    QEMU that exits meanwhile ends the wait at once, and so does *check* (run every
    slice) by raising (the health watch's verdict on a frozen QEMU).  *written*: the
    file a save writes (a failure QEMU gives no words for says how full its disk is)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        if not machine.is_running():
            raise SnapshotError(f"{what}: QEMU exited (status {machine.returncode})")
        left = deadline - time.monotonic()
        if left <= 0:
            raise SnapshotError(f"{what}: no result from QEMU within {timeout:.0f} s")
        try:
            ev = machine.wait_event("MIGRATION", min(EVENT_SLICE, left))
        except MachineError:
            ev = None  # out of the handler: a Ctrl-C now does not chain "not seen" to it
        if ev is None:
            # No event in this slice.  Ask QEMU too.  (A wait that timed out as the
            # event came took it with it once, on a loaded host: a finished save waited
            # out its whole timeout.  SyncQMP no longer loses one that way, but a
            # MIGRATION event taken by another reader of the session's events, e.g.
            # Machine.qmp_events(), which takes them all, would still be; the query
            # costs one command a slice.)
            info = machine.qmp("query-migrate") or {}
            status = info.get("status")
            if status == "completed":
                return {"event": "MIGRATION", "data": {"status": status}}
            if status in ("failed", "cancelled"):
                raise SnapshotError(_failed(what, status, info, written)) from None
            continue
        status = (ev.get("data") or {}).get("status")
        if status not in ("completed", "failed", "cancelled"):
            continue
        # An earlier migration's last event comes after query-migrate said it ended
        # when that ended its wait: still queued, it would end this one at once (a
        # save "done" while QEMU went on writing, continued, then stopped the guest
        # for good).  QEMU's answer now says whether this one ended.
        info = {}
        with contextlib.suppress(MachineError, QMPFailure, QMPCommandError):
            info = machine.qmp("query-migrate") or {}
        said = info.get("status")
        if said in _UNDER_WAY:
            continue
        if said in ("completed", "failed", "cancelled"):
            status = said  # QEMU's word on this one, not the event's (maybe the earlier's)
        if status == "completed":
            return {"event": "MIGRATION", "data": {"status": status}}
        raise SnapshotError(_failed(what, status, info, written))


def _failed(what: str, status: str, info: Mapping[str, Any], written: Path | None = None) -> str:
    """A failed migration's error, with QEMU's own words (``error-desc``: "Unable to
    write to file: No space left on device") when it gave them.  QEMU 7.2 gives none
    for a write to a descriptor that failed (a full disk said only "migration failed"):
    then, for a save, how much room the file's file system has left."""
    desc = info.get("error-desc")
    if desc:
        return f"{what}: migration {status}: {desc}"
    said = f"{what}: migration {status}"
    if written is not None and status == "failed":
        try:
            free = shutil.disk_usage(written.parent).free
        except OSError:
            return said
        if free < FULL_DISK_BYTES:
            size = written.stat().st_size if written.exists() else 0
            said += (
                f" (QEMU gave no reason; {written.parent} has {free // 2**20} MiB free "
                f"after {size // 2**20} MiB were written: the disk is full?)"
            )
    return said


@contextlib.contextmanager
def _state_fd(machine: Machine, state: Path, flags: int) -> Iterator[str]:
    """Open *state* with *flags* and hand QEMU a copy of the descriptor; yields the
    migration URI naming it (``fd:NAME``, valid until QEMU's migration takes it; a
    migration command that fails has QEMU close it).  Our copy is closed on leaving."""
    fd = os.open(state, flags | os.O_CLOEXEC, PRIVATE_FILE_MODE)  # guest memory: the user's
    try:
        machine.send_fd(fd, STATE_FD_NAME)
        try:
            yield f"fd:{STATE_FD_NAME}"
        except BaseException:  # the migration did not take it: QEMU would keep it open
            with contextlib.suppress(MachineError, QMPCommandError):
                machine.qmp("closefd", fdname=STATE_FD_NAME)
            raise
    finally:
        os.close(fd)


def _enable_events(machine: Machine) -> None:
    machine.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])


# query-migrate's states of a migration that has not ended
_UNDER_WAY = frozenset({"setup", "active", "pre-switchover", "device", "cancelling", "wait-unplug"})


def _cancel_migration(machine: Machine, timeout: float = 10.0) -> bool:
    """Cancel a save that has not ended (it timed out, or its wait was interrupted)
    and wait until it has: left running, it went on writing and then stopped the VM
    into ``postmigrate`` under the guest that was continued meanwhile.  Whether it
    ended (False: it still runs, or QEMU did not answer: the VM must not go on)."""
    try:
        machine.qmp("migrate_cancel")
        deadline = time.monotonic() + timeout
        while (machine.qmp("query-migrate") or {}).get("status") in _UNDER_WAY:
            if time.monotonic() > deadline:
                return False
            time.sleep(EVENT_SLICE / 10)  # no event is promised for every state: look again
    except (MachineError, QMPFailure, QMPCommandError):
        return False
    return True


def _continue_after_save(machine: Machine, timeout: float = 30.0) -> None:
    """``cont`` once QEMU left ``finish-migrate``: the MIGRATION ``completed`` event
    comes from the migration thread a moment before the run state moves on to
    ``postmigrate``, and a ``cont`` in between is refused ("Migration is not finalized
    yet"), a window that a loaded host (several guests per core) widens."""
    deadline = time.monotonic() + timeout
    while machine.qmp("query-status")["status"] == "finish-migrate":
        if time.monotonic() > deadline:
            raise SnapshotError(f"QEMU stayed in finish-migrate for {timeout:.0f} s")
        time.sleep(EVENT_SLICE / 10)  # no QMP event marks the change: look again
    machine.qmp("cont")


def save(
    machine: Machine,
    key: str,
    meta: Mapping[str, Any],
    *,
    timeout: float = 120.0,
    check: Callable[[], None] | None = None,
) -> Path:
    """Save *machine*'s whole state as the snapshot *key*; the VM runs on afterwards.

    The VM is stopped while QEMU writes the stream (so the state is one instant),
    then continued.  *check* runs while it waits and may end the wait by raising (see
    :func:`_wait_migration`).  Returns the snapshot directory."""

    def write(tmp: Path) -> None:
        state = tmp / STATE_FILE
        _enable_events(machine)
        t0 = time.monotonic()
        machine.qmp("stop")
        ended = True
        try:
            machine.take_events(["MIGRATION"])  # an earlier one's (the load's, a save's)
            with _state_fd(machine, state, os.O_WRONLY | os.O_CREAT | os.O_EXCL) as uri:
                machine.qmp("migrate", uri=uri)
            _wait_migration(machine, timeout, f"saving {state}", check, written=state)
        except BaseException:
            # a save still running would stop the VM later, under a continued guest
            ended = not machine.is_running() or _cancel_migration(machine)
            raise
        finally:
            if ended and machine.is_running():  # else it stays stopped: the start fails
                _continue_after_save(machine)
        info = {
            **meta,
            "key": key,
            "saved_at": time.time(),
            "save_seconds": round(time.monotonic() - t0, 3),
            "bytes": state.stat().st_size,
        }
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")

    keep = keep_snapshots()  # a bad value fails before the save, not after
    there = lookup(key)
    if there is not None:  # a bad one that could not be removed: cached_build returns it
        raise SnapshotError(f"{there} could not be replaced: it is still there")
    try:
        saved = cache.cached_build(RECIPE, key, write, evict=False)  # prune() below
    except (MachineError, QMPFailure, QMPCommandError, OSError) as e:
        raise SnapshotError(f"saving the snapshot {key} failed: {e}") from e
    if keep is not None:
        try:
            prune(keep)
        except OSError as e:  # best effort, as cache.evict_after: the start goes on
            notice.say(f"irqlab: pruning the snapshots after saving {key} failed: {e}")
    return saved


KEEP_ENV = "IRQLAB_SNAPSHOT_KEEP"
DEFAULT_KEEP = 32


def keep_snapshots() -> int | None:
    """How many snapshots the cache keeps: $IRQLAB_SNAPSHOT_KEEP, default 32 (each is
    ~140 MB; every image, module or device-property change makes new ones); None for
    ``0`` (never prune automatically), as $IRQLAB_CACHE_KEEP.  A suite that restores
    more configurations than are kept evicts, in every run, what its next test needs
    and cold-boots most of them again: this repository's own (about 30) keeps 64 unless
    $IRQLAB_SNAPSHOT_KEEP says otherwise (tests/conftest.py)."""
    return cache.keep_count(
        name=KEEP_ENV, default=DEFAULT_KEEP, what="ready-state snapshots (all configurations)"
    )


def prune(keep: int) -> list[Path]:
    """Remove all but the *keep* most recently used snapshots (a load or save marks a
    snapshot used); one that a save holds locked right now, or a start holds from its
    lookup to its load's end (:func:`held`), is left alone."""
    found = sorted(
        (e for e in cache.entries(recipe=RECIPE) if e.complete),
        key=lambda e: e.mtime,
        reverse=True,
    )
    gone = [e.path for e in cache.remove_all(found[keep:]).removed]
    if gone:
        cache.remove_stale_locks()  # theirs, and those of configurations never saved
    return gone


def load(
    machine: Machine,
    directory: Path,
    *,
    timeout: float = 60.0,
    check: Callable[[], None] | None = None,
) -> None:
    """Load the snapshot in *directory* into *machine* (started with ``-incoming
    defer``), which is left paused: the caller continues it (``cont``), and holds
    *directory* from its lookup on (:func:`held`; :class:`SnapshotGone` when its state
    file went all the same, removed by hand).  *check* runs while it waits and may end
    the wait by raising (see :func:`_wait_migration`)."""
    state = directory / STATE_FILE
    what = f"loading the snapshot {state}"
    try:
        _enable_events(machine)
        with _state_fd(machine, state, os.O_RDONLY) as uri:
            machine.qmp("migrate-incoming", uri=uri)
        _wait_migration(machine, timeout, what, check)
    except FileNotFoundError as e:  # removed without the cache's locks (held() holds it)
        raise SnapshotGone(f"{what} failed: {e}") from e
    except (MachineError, QMPFailure, QMPCommandError, OSError) as e:
        raise SnapshotError(f"{what} failed: {e}") from e  # OSError: it cannot be read
    except SnapshotError as e:
        tail = machine.stderr_tail()
        raise SnapshotError(f"{e}" + (f"\nQEMU said:\n{tail}" if tail else "")) from e
    cache.touch(directory)  # recently used: kept by `irqlab cache --prune`
