"""The memo of apt's candidate versions: processes writing it at once all succeed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from racers import race  # same directory (rootdir-relative import)

from irqlab.build import debs, qemu

TRIALS = 30
NAMES = [f"pkg{i}" for i in range(3000)]  # a long memo: a wide window between write and rename


def test_processes_writing_the_apt_version_memo_at_once_all_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process wrote the memo through one fixed ``apt-versions.tmp``: of two that
    asked apt at once, one renamed the other's temporary away and the other crashed
    (FileNotFoundError).  Now each writes its own ``.<pid>.tmp``."""

    def apt_answer(names: Sequence[str]) -> debs.AptAnswer:
        return debs.AptAnswer({n: debs.Package(n, "1.0", "all") for n in names})

    monkeypatch.setattr(debs, "apt_answer", apt_answer)
    monkeypatch.setattr(qemu, "apt_lists_state", lambda: "state")

    def versions(trial: int) -> object:
        os.environ["IRQLAB_CACHE_DIR"] = str(tmp_path / f"cache-{trial}")  # a forked worker's
        got = qemu._apt_versions(NAMES)
        return "ok" if got == dict.fromkeys(NAMES, "1.0") else "wrong versions"

    got = race(versions, TRIALS)
    assert [r for _, r in got if r != "ok"] == []
    assert not list(tmp_path.glob("cache-*/qemu/*.tmp"))
