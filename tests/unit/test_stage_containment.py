"""Nothing an image build copies from a package lands outside its staging tree: a
package's relative symlink with more ``../`` than it is deep (Debian ships such links:
lintian's symlink-has-too-many-up-segments) means what the kernel makes of it, ``..``
at the root staying at the root, in the guest and in the stage; and a write, directory
or copy whose destination resolves outside the stage (through any symlink) is refused
before anything is written."""

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


@pytest.mark.parametrize(
    ("target", "staged", "lands"),
    [
        ("../../../outside", "../../outside", "outside"),
        ("../../../../etc/x", "../../etc/x", "etc/x"),
        ("../../../../../usr/bin/tool", "../../usr/bin/tool", "usr/bin/tool"),
        ("a/../../../..", "a/../../..", ""),
        ("../../..", "../..", ""),
    ],
)
def test_a_packages_symlink_with_too_many_ups_stops_at_the_stages_root(
    tmp_path: Path, outside: Path, target: str, staged: str, lands: str
) -> None:
    """The ``..`` that would climb above the root are left out: the link leads where the
    guest's kernel takes the original (it stays at ``/``), inside the stage."""
    tree = _package(tmp_path, {"usr/lib/evil": target})
    stage = initramfs.Stage(tmp_path / "stage")
    initramfs.copy_entry(tree, "usr/bin/tool", stage)
    initramfs.copy_entry(tree, "usr/lib/evil", stage)
    link = stage.root / "usr/lib/evil"
    assert link.readlink() == Path(staged)
    root = stage.root.resolve()
    assert link.resolve() == (root / lands if lands else root)
    assert list(outside.iterdir()) == []


def test_a_write_through_a_link_with_too_many_ups_stays_in_the_stage(
    tmp_path: Path, outside: Path
) -> None:
    tree = _package(tmp_path, {"etc/conf": "../../../../outside/conf", "lib/d": "../../../.."})
    stage = initramfs.Stage(tmp_path / "stage")
    for rel in ("etc/conf", "lib/d"):
        initramfs.copy_entry(tree, rel, stage)
    stage.write("lib/d/outside/more", "through a directory link\n")  # makes outside/
    stage.write("etc/conf", "through the link\n")
    assert (stage.root / "outside/conf").read_text() == "through the link\n"
    assert (stage.root / "outside/more").read_text() == "through a directory link\n"
    assert list(outside.iterdir()) == []


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


def test_a_library_link_with_too_many_ups_is_followed_inside_its_package(
    tmp_path: Path,
) -> None:
    """As the kernel would with the package as the root: ``..`` at the root stays there,
    through a link to a directory too."""
    tree = _package(
        tmp_path,
        {
            "usr/lib/libz.so.1": "../../../../etc/shadow",
            "usr/lib/libt.so": "../../../../../usr/bin/tool",
            "usr/lib/up": "../../../..",
            "usr/lib/libu.so": "up/../../usr/bin/tool",
        },
    )
    assert initramfs.resolve_in_tree(tree, "usr/lib/libz.so.1") == tree / "etc/shadow"
    assert initramfs.resolve_in_tree(tree, "usr/lib/libt.so") == tree / "usr/bin/tool"
    assert initramfs.resolve_in_tree(tree, "usr/lib/up/usr/bin/tool") == tree / "usr/bin/tool"
    assert initramfs.resolve_in_tree(tree, "usr/lib/libu.so") == tree / "usr/bin/tool"
    inner = _package(tmp_path / "ok", {"usr/lib/libt.so": "/usr/bin/tool"})
    assert initramfs.resolve_in_tree(inner, "usr/lib/libt.so") == inner / "usr/bin/tool"


def test_a_symlink_loop_in_a_package_is_named(tmp_path: Path) -> None:
    tree = _package(tmp_path, {"usr/lib/a": "b", "usr/lib/b": "../lib/a"})
    with pytest.raises(ValueError, match="too many levels of symbolic links"):
        initramfs.resolve_in_tree(tree, "usr/lib/a")
