"""The device model's build-time checks of BAR0's layout (``QEMU_BUILD_BUG_ON`` in
irqlab.c) stop a build whose register header breaks it: irqlab.c is compiled (syntax
only) with the command QEMU's build compiles it with, against copies of the header."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from irqlab.build.qemu import QemuInstall, current_build_dir, device_dir

pytestmark = pytest.mark.device

# Options of the recorded command that write files (each with its argument, but -MD).
_OUTPUT_OPTIONS = {"-o": 1, "-MQ": 1, "-MF": 1, "-MD": 0, "-c": 1}


def _compile(header_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Compile this checkout's irqlab.c as QEMU's build does, ``hw/misc/irqlab-regs.h``
    being *header_text*."""
    # the current build's tree (not the first in sort order: an upstream release's
    # beside Debian's)
    commands = current_build_dir() / "compile_commands.json"
    assert commands.is_file(), f"no compile_commands.json of the current QEMU build: {commands}"
    entries = json.loads(commands.read_text(encoding="utf-8"))
    entry = next(e for e in entries if e["file"].endswith("hw/misc/irqlab.c"))
    argv = shlex.split(entry["command"])
    kept: list[str] = []
    skip = 0
    for arg in argv[1:]:
        if skip:
            skip -= 1
        elif arg in _OUTPUT_OPTIONS:
            skip = _OUTPUT_OPTIONS[arg]
        else:
            kept.append(arg)
    include = tmp_path / "include"
    (include / "hw" / "misc").mkdir(parents=True)
    (include / "hw" / "misc" / "irqlab-regs.h").write_text(header_text, encoding="utf-8")
    return subprocess.run(
        [argv[0], "-iquote", str(include), *kept, "-fsyntax-only", str(device_dir() / "irqlab.c")],
        cwd=entry["directory"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        # the MSI-X table moved over the last registers
        ("IRQLAB_MSIX_TABLE_OFFSET  0x800", "IRQLAB_MSIX_TABLE_OFFSET  0x180",
         "IRQLAB_REG_CNT_DROPPED + 4 > IRQLAB_MSIX_TABLE_OFFSET"),
        # the PBA overlaps the table's three entries
        ("IRQLAB_MSIX_PBA_OFFSET    0xc00", "IRQLAB_MSIX_PBA_OFFSET    0x820",
         "IRQLAB_NUM_SOURCES * PCI_MSIX_ENTRY_SIZE"),
        # the PBA lies beyond BAR0
        ("IRQLAB_BAR0_SIZE          0x1000", "IRQLAB_BAR0_SIZE          0xc00",
         "IRQLAB_BAR0_SIZE"),
    ],
)  # fmt: skip
def test_a_header_that_breaks_bar0s_layout_does_not_build(
    irqlab_qemu: QemuInstall, tmp_path: Path, old: str, new: str, said: str
) -> None:
    header = (device_dir() / "irqlab-regs.h").read_text(encoding="utf-8")
    good = _compile(header, tmp_path / "good")
    assert good.returncode == 0, f"irqlab.c with the real header:\n{good.stderr}"
    assert header.count(old) == 1, old
    bad = _compile(header.replace(old, new), tmp_path / "bad")
    assert bad.returncode != 0, f"irqlab.c built with {new!r}"
    assert "not expecting" in bad.stderr and said in bad.stderr, bad.stderr
