"""The cache's inventory: what this checkout resolves to is what the recipes return, found
without building; a lookup that fails protects its group's most recently used output."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fake_cache  # same directory (rootdir-relative import)
import pytest

from irqlab.build import cache, debs, image, inventory, kernel, kmod, qemu, responder
from irqlab.build.arch import X86_64
from irqlab.build.debs import Package

ABI = "6.1.0-57-amd64"
FIRMWARE = {"ipxe-qemu": "1.0-1", "qemu-system-data": "1:7.2+dfsg-7", "seabios": "1.16.2-1"}


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "0")
    monkeypatch.delenv("IRQLAB_QEMU_SOURCE", raising=False)
    return root


def _pkg(name: str, deps: str = "") -> Package:
    return Package(name, "1.0", "amd64", debs.parse_relations(deps))


APT = {
    p.name: p
    for p in (
        _pkg("linux-image-amd64", f"linux-image-{ABI}"),
        _pkg(f"linux-image-{ABI}", "kmod"),
        _pkg(f"linux-headers-{ABI}", "linux-headers-6.1.0-57-common, linux-kbuild-6.1"),
        _pkg("linux-headers-6.1.0-57-common"),
        _pkg("linux-kbuild-6.1"),
        _pkg("kmod"),
    )
}


def _apt_show(names: Sequence[str]) -> Mapping[str, Package]:
    return {n: APT[n] for n in names if n in APT}


def _fake_build(files: Mapping[str, str]) -> Callable[..., Path]:
    """A recipe's ``cached_build`` that writes *files* instead of building (same digest)."""

    def cached_build(name: str, digest: str, _build: object, **kw: Any) -> Path:
        def build(out: Path) -> None:
            for rel, text in files.items():
                (out / rel).write_text(text)

        return cache.cached_build(name, digest, build, **kw)

    return cached_build


@pytest.fixture
def recipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recipe with its inputs from fakes (apt, compiler) and its build a stub."""
    monkeypatch.setattr(qemu, "_apt_versions", lambda names: {n: FIRMWARE[n] for n in names})
    monkeypatch.setattr(debs, "apt_show", _apt_show)
    monkeypatch.setattr(kernel, "_build", lambda pk, final, tmp, steps: None)
    real_ensure_kernel = kernel.ensure_kernel

    def ensure_kernel(log: object = None, **kw: Any) -> kernel.KernelArtifacts:
        return real_ensure_kernel(None, lookup=_apt_show, **kw)  # its default is bound

    monkeypatch.setattr(image, "ensure_kernel", ensure_kernel)
    monkeypatch.setattr(kmod, "cached_build", _fake_build({"irqlab.ko": "ko"}))
    monkeypatch.setattr(responder, "compiler", lambda: "cc")
    monkeypatch.setattr(responder, "compiler_version", lambda cc: "cc (fake) 12")
    monkeypatch.setattr(responder, "cached_build", _fake_build({responder.BINARY: "bin"}))

    def resolve_packages(extra: Sequence[str] = (), **_kw: object) -> list[Package]:
        return [_pkg(n) for n in sorted({*fake_cache.BASE_PACKAGES, *extra})]

    monkeypatch.setattr(image, "resolve_packages", resolve_packages)

    def build_image(
        inp: Any, _read: object, digest: str, tmp: Path, steps: object
    ) -> dict[str, object]:
        (tmp / "initramfs.cpio").write_text("x")
        module = "irqlab" if inp.kmod else None
        return {"initramfs": "initramfs.cpio", "kernel_version": ABI, "kmod": module}

    monkeypatch.setattr(image, "_build", build_image)


def _build_current(agent_dir: Path | None = None, extra: tuple[str, ...] = ("gpiod",)) -> Path:
    k = kernel.ensure_kernel(lookup=_apt_show)
    ko = kmod.ensure_kmod(kernel=k)
    return image.ensure_image(kmod=ko, extra_packages=extra, agent_dir=agent_dir).directory


def test_current_is_what_the_recipes_return(
    recipes: None, cache_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cache.qemu(cache_root, 1, "x86_64", 100)  # an older QEMU build
    digest = qemu.current_digest(X86_64)
    fake_cache.qemu(cache_root, int(digest, 16), "x86_64", 50)
    found_qemu = qemu.find_qemu()
    assert found_qemu is not None
    assert found_qemu.binary.parents[1].stat().st_mtime > 1000  # marked used just now
    gpiod = _build_current()
    bare = image.ensure_image().directory  # no module, no extra packages: its own variant
    rt = _build_current(extra=("gpiod", "rt-tests"))
    agent = tmp_path / "my_agent"
    agent.mkdir()
    (agent / "__init__.py").write_text("")
    other = _build_current(agent_dir=agent)  # built from another agent: not current

    def no_build(*_a: object, **_kw: object) -> Path:
        raise AssertionError("the inventory must not build")

    for module in (cache, kernel, kmod, responder, image):
        monkeypatch.setattr(module, "cached_build", no_build)
    found = cache.entries()
    now = inventory.current(found)
    assert now.unknown == {}
    current_dirs = {p for p in now.paths if p.is_dir()}
    expected = {
        found_qemu.binary.parents[1],
        kernel.current_kernel(kernel.resolve_packages(_apt_show))[1].root.parent,
        gpiod,
        bare,
        rt,
        *(p for p in cache_root.glob("*-*") if p.is_dir() and p.name[:4] in ("kmod", "resp")),
    }
    assert current_dirs == expected
    assert other not in now.paths
    assert json.loads((gpiod / "image.json").read_text())["variant"]["extra_packages"] == ["gpiod"]


def test_a_failed_lookup_protects_the_groups_most_recently_used(
    cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_apt(arch: object) -> str:
        raise debs.AptError("apt knows no candidate for qemu-system-data")

    monkeypatch.setattr(qemu, "current_digest", no_apt)
    old = fake_cache.qemu(cache_root, 1, "aarch64", 100)
    new = fake_cache.qemu(cache_root, 2, "aarch64", 200)
    now = inventory.current(cache.entries())
    assert now.paths == set()
    assert "apt knows no candidate" in now.unknown[("qemu", "aarch64")]
    assert now.protected(cache.entries()) == {new}
    assert old not in now.protected(cache.entries())


def test_outputs_without_a_current_one_are_left_to_recency(cache_root: Path) -> None:
    fake_cache.output(cache_root, "dtb", 1, {"key.dtb": "x"})
    fake_cache.output(cache_root, "snapshot", 2, {"meta.json": "{}"})
    now = inventory.current(cache.entries())
    assert now.paths == set() and now.unknown == {}
