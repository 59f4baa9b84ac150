"""dpkg's installed set and apt-get's installs, faked for the tests of what a build
installs on the host (nothing is installed or queried)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from irqlab.build import debs


class FakeDpkg:
    """``debs.missing_packages`` answers from :attr:`installed`; ``debs.ensure_apt_packages``
    records its packages in :attr:`apt` and adds them; the effective uid is *uid*."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, installed: set[str], uid: int) -> None:
        self.installed = installed
        self.apt: list[list[str]] = []
        monkeypatch.setattr(debs, "missing_packages", self.missing)
        monkeypatch.setattr(debs, "ensure_apt_packages", self.install)
        monkeypatch.setattr(debs.os, "geteuid", lambda: uid)

    def missing(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n not in self.installed]

    def install(self, _steps: object, names: Sequence[str], step: str = "") -> None:
        self.apt.append(list(names))
        self.installed.update(names)
