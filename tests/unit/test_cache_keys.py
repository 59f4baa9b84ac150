"""``irqlab cache --keys``: a CI cache key that changes when a build would make a new
output (``irqlab --version`` is the same for every commit, and the outputs' hashes
include Debian package versions), found without building."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from irqlab.build import cachekeys, debs, image, responder
from irqlab.build.arch import X86_64
from irqlab.cli.main import main


class _Apt:
    """apt's candidates, faked: every package is known, at version 1 unless set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.versions: dict[str, str] = {}
        monkeypatch.setattr(debs, "apt_show", self.show)

    def show(self, names: Sequence[str]) -> dict[str, debs.Package]:
        return {n: debs.Package(n, self.versions.get(n, "1"), "amd64") for n in names}


def test_the_image_key_follows_its_packages_compiler_and_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    apt = _Apt(monkeypatch)
    base = cachekeys.image_key(X86_64, "kmod-digest")
    assert cachekeys.image_key(X86_64, "kmod-digest") == base
    apt.versions[image.ROOT_PACKAGES[0]] = "2"  # a Debian update of a package it ships
    updated = cachekeys.image_key(X86_64, "kmod-digest")
    assert updated != base
    apt.versions["gcc"] = "2"  # the responder's compiler (its version is an input)
    assert cachekeys.image_key(X86_64, "kmod-digest") not in (base, updated)
    assert cachekeys.image_key(X86_64, "other-kmod") != cachekeys.image_key(X86_64, "kmod-digest")


def test_the_image_key_follows_the_responders_flags_and_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The responder's compiler flags and recipe version name its binary (an input of the
    image) but were not in the key: CI's stale key hit, its save was skipped, and every
    run after built the image again."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    _Apt(monkeypatch)
    base = cachekeys.image_key(X86_64, "kmod-digest")
    monkeypatch.setattr(responder, "CFLAGS", ("-O3", *responder.CFLAGS[1:]))
    o3 = cachekeys.image_key(X86_64, "kmod-digest")
    assert o3 != base
    monkeypatch.setattr(responder, "RECIPE_VERSION", responder.RECIPE_VERSION + "-next")
    assert cachekeys.image_key(X86_64, "kmod-digest") not in (base, o3)


def test_cache_keys_prints_each_digest_and_one_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {"qemu x86_64": "a" * 16, "kernel x86_64": "b" * 16, "image x86_64": "c" * 16}
    monkeypatch.setattr(cachekeys, "cache_keys", lambda: dict(keys))
    assert main(["cache", "--keys"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:-1] == [f"{name} {digest}" for name, digest in keys.items()]
    key = out[-1].removeprefix("key ")
    assert key.startswith("irqlab-") and len(key) == len("irqlab-") + 16
    keys["qemu x86_64"] = "d" * 16  # e.g. a new Debian QEMU or firmware version
    assert main(["cache", "--keys"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] != f"key {key}"


def test_cache_keys_takes_no_prune(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "--keys", "--prune", "1"]) == 2
    assert "--keys takes no --prune" in capsys.readouterr().err
