"""An inner pytest run as a plain user's would be: the build cache of this run, a log
directory of its own, not an xdist worker's."""

from __future__ import annotations

import pytest

from irqlab.paths import cache_dir
from irqlab.testing.parallel import WORKER_ENV

CACHE = cache_dir()  # at import: the pytester fixture moves $HOME


def as_a_user(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment for ``pytester.runpytest_subprocess``: this run's cache; the inner
    run's logs in its own directory (its log pruning would count this run's directories
    otherwise); no xdist worker id (run from one, it inherited the id and named its
    guest 'e2e-gw1')."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
