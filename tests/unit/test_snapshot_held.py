"""A snapshot is held (irqlab.build.cache.hold) from its start's lookup until its load
ended: another process's prune (an xdist worker's save, ``irqlab cache --prune``)
leaves it alone meanwhile, and one pruned before it was held is a cache miss, not a
bad snapshot (no "loading the snapshot failed", no discard).  A real cache directory;
QEMU, SSH and the agent are stand-ins."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab import notice
from irqlab.build import cache
from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig

KEY = "0" * 16


@pytest.fixture(autouse=True)
def _notices_on_stderr() -> Iterator[None]:
    old = notice.set_sink(None)
    yield
    notice.set_sink(old)


class LoadingQemu:
    """A QEMU started with ``-incoming defer``: takes the state file's descriptor and
    reports the migration completed; what it read is kept."""

    def __init__(self) -> None:
        self.read: list[bytes] = []
        self.returncode = None
        self.argv = ["q"]
        self.pid = os.getpid()  # running, not stopped

    def send_fd(self, fd: int, name: str) -> None:
        self.read.append(os.pread(fd, 100, 0))

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        return {}

    def wait_event(self, name: str, timeout: float) -> Any:
        return {"event": name, "data": {"status": "completed"}}

    def is_running(self) -> bool:
        return True

    def wait_exit(self, timeout: float) -> int:
        from irqlab.vm.machine import MachineError

        raise MachineError("it runs on")

    def stderr_tail(self) -> str:
        return ""


def _guest(monkeypatch: pytest.MonkeyPatch, root: Path) -> tuple[Guest, Path, dict[str, list]]:
    """A guest whose configuration's good snapshot is in the cache *root*; its QEMU,
    the steps after the load, its cold boot and save are stand-ins (recorded)."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))

    def write(t: Path) -> None:
        (t / snapshot.STATE_FILE).write_bytes(b"QEVM stream")
        (t / snapshot.META_FILE).write_text(json.dumps({"qemu": "/q", "image": "v"}))

    d = cache.cached_build(snapshot.RECIPE, KEY, write)
    g = Guest(GuestConfig(name="t"))
    g.qemu = SimpleNamespace(binary=Path("/q"))  # type: ignore[assignment]
    g.image = SimpleNamespace(version="v")  # type: ignore[assignment]
    did: dict[str, list] = {"cold": [], "saved": [], "discarded": [], "loaded": []}
    monkeypatch.setattr(g, "prepare", lambda: g)
    monkeypatch.setattr(g, "snapshot_key", lambda: KEY)
    monkeypatch.setattr(g, "_cold_start", lambda: did["cold"].append(True))
    monkeypatch.setattr(g, "_save_snapshot", did["saved"].append)
    monkeypatch.setattr(g, "_reseed", lambda: 0)
    monkeypatch.setattr(g, "_connect_ssh", lambda **kw: None)
    monkeypatch.setattr(g, "_connect_agent", lambda: None)
    monkeypatch.setattr(g, "_stop_machine", lambda: setattr(g, "machine", None))
    real_discard = snapshot.discard

    def discard(key: str) -> str | None:
        did["discarded"].append(key)
        return real_discard(key)

    monkeypatch.setattr(snapshot, "discard", discard)
    return g, d, did


def _started_machine(g: Guest, then: Any) -> Any:
    """_start_machine's stand-in: a LoadingQemu, after *then()* (what another process
    does meanwhile)."""

    def start(extra: list[str] | None = None) -> None:
        then()
        g.machine = LoadingQemu()  # type: ignore[assignment]

    return start


def test_a_prune_while_the_snapshot_loads_leaves_it_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another worker pruned it while this one's QEMU started: the load's open failed
    (ENOENT), "loading the snapshot failed", discard and a cold boot."""
    g, d, did = _guest(monkeypatch, tmp_path / "cache")
    pruned: list[list[Path]] = []
    prune = _started_machine(g, lambda: pruned.append(snapshot.prune(0)))  # another worker's
    monkeypatch.setattr(g, "_start_machine", prune)
    g._start()
    assert pruned == [[]], "the prune removed the snapshot being loaded"
    assert g.restored and g.snapshot_error is None and g.snapshot_dir == d
    assert did == {"cold": [], "saved": [], "discarded": [], "loaded": []}
    assert g.machine is not None and g.machine.read == [b"QEVM stream"]  # type: ignore[attr-defined]
    assert capsys.readouterr().err == ""
    assert not cache.in_use(d), "held after the load"
    assert snapshot.prune(0) == [d]  # not held any more


def test_a_snapshot_pruned_after_its_lookup_is_a_miss_not_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pruned between the lookup and the hold: reported as a bad snapshot ("... is
    missing (its directory is marked complete)"), discarded (which could remove a
    good one another worker had saved again by then), then a cold boot."""
    g, d, did = _guest(monkeypatch, tmp_path / "cache")
    real_lookup = snapshot.lookup
    looked: list[Path | None] = []

    def lookup(key: str) -> Path | None:
        found = real_lookup(key)
        if not looked:  # the first start's look: pruned right after it
            assert snapshot.prune(0) == [d]
        looked.append(found)
        return found

    monkeypatch.setattr(snapshot, "lookup", lookup)
    monkeypatch.setattr(g, "_start_machine", _started_machine(g, lambda: pytest.fail("restored")))
    g._start()
    assert looked == [d, None]  # missed, then looked for again under the boot lock
    assert did == {"cold": [True], "saved": [KEY], "discarded": [], "loaded": []}
    assert not g.restored and g.snapshot_error is None
    assert capsys.readouterr().err == ""


def test_a_snapshot_without_its_state_file_is_still_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    g, d, did = _guest(monkeypatch, tmp_path / "cache")
    (d / snapshot.STATE_FILE).unlink()
    monkeypatch.setattr(g, "_start_machine", _started_machine(g, lambda: None))
    g._start()
    assert did["discarded"] == [KEY] and did["cold"] == [True] and not d.exists()
    assert g.snapshot_error is not None and "is missing" in g.snapshot_error


def test_a_state_file_gone_at_the_load_is_a_miss(tmp_path: Path) -> None:
    """The directory went without the prune's locks (removed by hand): ENOENT at the
    open is SnapshotGone, the caller's cache miss."""
    with pytest.raises(snapshot.SnapshotGone, match=f"loading the snapshot {tmp_path}"):
        snapshot.load(LoadingQemu(), tmp_path)  # type: ignore[arg-type]
