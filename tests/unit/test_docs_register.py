"""docs/architecture.md's "Adding a register" stays true: the files it names exist, the
device functions and test lists it names are there, and the README links it; the
device's QEMU checkpatch is documented where the device's checks are."""

from __future__ import annotations

import re

from irqlab.paths import repo_root

DOC = "docs/architecture.md"
SECTION = "## Adding a register"


def section() -> str:
    text = (repo_root() / DOC).read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC} has no {SECTION!r}"
    rest = text.split(SECTION, 1)[1]
    return rest.split("\n## ", 1)[0]


def test_the_files_it_names_exist() -> None:
    named = set(re.findall(r"`((?:qemu-device|guest-kmod|tests)/[\w./-]*)`", section()))
    named |= {f"harness/irqlab/{p}" for p in re.findall(r"`(contract/\w+\.py)`", section())}
    named |= {f"guest-kmod/{p}" for p in re.findall(r"`(include/uapi/[\w./]+)`", section())}
    assert len(named) >= 12
    missing = sorted(p for p in named if not (repo_root() / p).exists())
    assert not missing, f"{DOC} ({SECTION}) names files that do not exist: {missing}"


def test_the_code_it_names_is_there() -> None:
    text = section()
    root = repo_root()
    device = (root / "qemu-device" / "irqlab.c").read_text(encoding="utf-8")
    names = ("IrqlabState", "irqlab_mmio_read", "irqlab_mmio_write", "irqlab_reset",
             "vmstate_irqlab", "irqlab_post_load", "QEMU_BUILD_BUG_ON", "CNT_DROPPED")  # fmt: skip
    for name in names:
        assert name in text, name
        assert name in device, f"irqlab.c has no {name}"
    lists = {
        "tests/device/test_migration.py": ("NOT_COMPARED",),
        "tests/device/test_random_sequence.py": ("READABLE", "GPIO_RW"),
    }
    for path, names in lists.items():
        source = (root / path).read_text(encoding="utf-8")
        for name in names:
            assert f"`{name}`" in text and re.search(rf"^{name} = ", source, re.M), name


def test_readme_links_it_and_names_the_devices_checkpatch() -> None:
    readme = (repo_root() / "README.md").read_text(encoding="utf-8")
    assert f"]({DOC}#adding-a-register)" in readme
    doc = (repo_root() / DOC).read_text(encoding="utf-8")
    for text in (readme, doc):
        assert "scripts/checkpatch.pl" in text and "test_style.py" in text
