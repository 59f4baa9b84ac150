"""``irqlab cache``: groups by recipe and architecture, current and in-use outputs marked
and never pruned, N checked."""

from __future__ import annotations

import re
from pathlib import Path

import fake_cache  # same directory (rootdir-relative import)
import pytest

from irqlab.build import cache, inventory
from irqlab.cli.main import main


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def outputs(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The review's cache: the x86_64 QEMU guests use (current) is older than an aarch64
    one and than another x86_64 build; an older x86_64 build; an arm64 kernel."""
    made = {
        "x86_current": fake_cache.qemu(root, 1, "x86_64", 100),
        "x86_newer": fake_cache.qemu(root, 2, "x86_64", 300),
        "x86_old": fake_cache.qemu(root, 3, "x86_64", 50),
        "arm": fake_cache.qemu(root, 4, "aarch64", 400),
        "kernel_arm": fake_cache.kernel(root, 5, "6.1.0-57-arm64", 10),
        "image_old": fake_cache.image(root, 6, 20),
        "image_held": fake_cache.image(root, 7, 30),
        "image_new": fake_cache.image(root, 8, 500),
    }
    current = inventory.Current({made["x86_current"], made["kernel_arm"]})
    monkeypatch.setattr(inventory, "current", lambda found: current)
    return made


def _line(out: str, path: Path) -> str:
    return next(ln for ln in out.splitlines() if ln.strip().startswith(path.name))


def test_listing_shows_groups_arch_current_and_in_use(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with cache.hold([outputs["image_held"]]):
        assert main(["cache", "--prune", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^qemu x86_64: 3 outputs, ", out, re.M)
    assert re.search(r"^qemu aarch64: 1 output, ", out, re.M)
    assert re.search(r"^image x86_64 \+gpiod: 3 outputs, ", out, re.M)
    assert _line(out, outputs["x86_current"]).endswith("current")
    assert _line(out, outputs["image_held"]).endswith("in use")
    assert _line(out, outputs["kernel_arm"]).endswith("current")
    doomed = {p for p in outputs.values() if _line(out, p).endswith("(remove)")}
    assert doomed == {outputs["x86_old"], outputs["image_old"]}
    assert "--prune 1 would remove 2 outputs" in out
    assert all(p.is_dir() for p in outputs.values())  # a dry run


def test_prune_zero_removes_all_but_current_and_in_use(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with cache.hold([outputs["image_held"]]):
        assert main(["cache", "--prune", "0"]) == 0
    left = {p for p in outputs.values() if p.is_dir()}
    assert left == {outputs["x86_current"], outputs["kernel_arm"], outputs["image_held"]}
    assert "removed 5 outputs" in capsys.readouterr().out


def test_prune_names_what_it_could_not_remove_and_counts_only_the_rest(
    outputs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An immutable output: --prune said "removed 1 outputs, 142.6 MiB", files still there."""
    import os

    real = os.rename

    def rename(src: str | Path, dst: str | Path) -> None:
        if Path(src) == outputs["x86_old"]:
            raise PermissionError(1, "Operation not permitted", str(src))
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    assert main(["cache", "--prune", "1"]) == 1
    out, err = capsys.readouterr()
    assert err == f"irqlab cache: cannot remove {outputs['x86_old']}: Operation not permitted\n"
    assert "removed 2 outputs" in out and "1 could not be removed (said above)" in out
    assert outputs["x86_old"].is_dir() and not outputs["image_held"].exists()


def test_what_irqlab_never_made_is_left_alone(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's project-0123456789abcdef/ in the cache directory: --prune 0 listed it as
    "project (no arch) ... incomplete, (remove)" and deleted it, leaving a lock file."""
    monkeypatch.setattr(inventory, "current", lambda found: inventory.Current())
    theirs = root / "project-0123456789abcdef"
    (theirs / "src").mkdir(parents=True)
    ours = fake_cache.kmod(root, 1, fake_cache.EM_X86_64, 10)
    assert main(["cache", "--prune", "0"]) == 0
    out = capsys.readouterr().out
    assert "not irqlab's, left alone: project-0123456789abcdef\n" in out
    assert "project (no arch)" not in out and "removed 1 outputs" in out
    assert (theirs / "src").is_dir() and not ours.exists()
    assert sorted(p.name for p in root.iterdir()) == [theirs.name]  # ours, its lock: gone
    assert not cache.entries()


def test_a_damaged_output_is_marked_and_said(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot without its state.mig was listed as a normal 0.0 MiB snapshot."""
    monkeypatch.setattr(inventory, "current", lambda found: inventory.Current())
    snap = fake_cache.output(root, "snapshot", 1, {"meta.json": "{}"})
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert _line(out, snap).endswith("damaged")
    assert f"damaged: {snap}/state.mig is missing; --prune removes it" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cache", "--prune", "-1"], "argument --prune: '-1': must be 0 or more"),
        (["cache", "--prune", "some"], "argument --prune: not an integer: 'some'"),
    ],
)
def test_a_bad_n_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_dry_run_needs_prune(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cache.kmod(root, 1, fake_cache.EM_X86_64, 10)
    assert main(["cache", "--dry-run"]) == 2
    assert "--dry-run needs --prune N" in capsys.readouterr().err
    assert len(cache.entries()) == 1


def test_help_says_what_is_never_pruned(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cache", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "so 0 removes all but those" in text
    assert "IRQLAB_CACHE_KEEP" in text and "architecture" in text
