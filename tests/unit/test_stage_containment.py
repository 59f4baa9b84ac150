"""Nothing an image build copies from a package lands outside its staging tree: a
package's relative symlink that climbs out of it (enough ``../``) is refused, and a
write, directory or copy whose destination resolves outside the stage (through any
symlink) is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab.build import initramfs


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    return d


def _package(tmp_path: Path, links: dict[str, str]) -> Path:
    tree = tmp_path / "pkg"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_bytes(b"\x7fELF")
    for rel, target in links.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).symlink_to(target)
    return tree


@pytest.mark.parametrize("target", ["../../../outside", "../../../../x", "a/../../../.."])
def test_a_packages_symlink_out_of_the_stage_is_refused(
    tmp_path: Path, outside: Path, target: str
) -> None:
    tree = _package(tmp_path, {"usr/lib/evil": target})
    stage = initramfs.Stage(tmp_path / "stage")
    with pytest.raises(ValueError, match="leads out of the image's tree"):
        initramfs.copy_entry(tree, "usr/lib/evil", stage)
    assert not (stage.root / "usr/lib/evil").is_symlink()


def test_a_packages_symlink_inside_the_stage_is_copied(tmp_path: Path) -> None:
    links = {"usr/bin/alias": "tool", "lib/x/libt.so": "../../usr/bin/tool"}
    tree = _package(tmp_path, links)
    stage = initramfs.Stage(tmp_path / "stage")
    for rel in ("usr/bin/tool", *links):
        initramfs.copy_entry(tree, rel, stage)
    assert (stage.root / "usr/bin/alias").resolve() == (stage.root / "usr/bin/tool").resolve()
    # merged-/usr: lib/x/ is usr/lib/x/ in the stage, one level deeper (dangling, inside)
    assert (stage.root / "usr/lib/x/libt.so").readlink() == Path("../../usr/bin/tool")


def test_writes_through_a_symlink_out_of_the_stage_are_refused(
    tmp_path: Path, outside: Path
) -> None:
    """However such a link got there (made by hand, an older recipe): a write, a copy or
    a directory that would land outside is refused and nothing is made there."""
    stage = initramfs.Stage(tmp_path / "stage")
    stage.root.mkdir()
    (stage.root / "etc").symlink_to(outside)  # absolute
    (stage.root / "root").symlink_to("../outside")  # relative
    src = tmp_path / "src"
    src.write_bytes(b"key")
    attempts = [
        lambda: stage.write("etc/passwd", "root::0:0::/:/bin/sh\n"),
        lambda: stage.write("root/.ssh/authorized_keys", "ssh-ed25519 AAAA"),
        lambda: stage.copy_file(src, "etc/dropbear/key"),
        lambda: stage.copy_file(src, "root"),
        lambda: stage.mkdir("root/.ssh", 0o700),
        lambda: stage.symlink("etc/x", "y"),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="outside the image's tree"):
            attempt()
    assert list(outside.iterdir()) == []
    assert (tmp_path / "outside").stat().st_mode & 0o777 != 0o700


def test_a_dangling_symlink_out_of_the_stage_is_not_written_through(
    tmp_path: Path, outside: Path
) -> None:
    stage = initramfs.Stage(tmp_path / "stage")
    (stage.root / "usr/lib").mkdir(parents=True)
    (stage.root / "usr/lib/libz.so.1").symlink_to(outside / "planted")
    src = tmp_path / "libz"
    src.write_bytes(b"lib")
    with pytest.raises(ValueError, match="outside the image's tree"):
        stage.copy_file(src, "lib/libz.so.1")
    assert not (outside / "planted").exists()


def test_a_library_link_out_of_its_package_is_not_followed(tmp_path: Path) -> None:
    tree = _package(tmp_path, {"usr/lib/libz.so.1": "../../../../etc/shadow"})
    with pytest.raises(ValueError, match="leads out of"):
        initramfs.resolve_in_tree(tree, "usr/lib/libz.so.1")
    inner = _package(tmp_path / "ok", {"usr/lib/libt.so": "/usr/bin/tool"})
    assert initramfs.resolve_in_tree(inner, "usr/lib/libt.so") == inner / "usr/bin/tool"
