"""A key on our gpiochip described the way an ARM board describes one (aarch64 only).

QEMU's ``virt`` board writes its device tree itself; :func:`ensure_key_dtb` dumps it
(``-machine virt,...,dumpdtb=``) for the guest's exact machine arguments, adds

- a child node of the PCIe host bridge for our PCI function (``reg`` = its
  bus/device/function), a ``gpio-controller`` with ``#gpio-cells = <2>``: the kernel
  gives the function that ``of_node``, and gpiolib our gpio_chip (its parent is the
  function's device);
- a ``gpio-keys`` node whose key sits on one of our lines with ``debounce-interval``,

and compiles it back with ``dtc``; the guest boots with ``-dtb``.  The kernel's own
``gpio_keys`` driver (a module in Debian's arm64 kernel) then turns the line's edges
into key presses and releases on ``/dev/input/eventN``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from irqlab.build import debs
from irqlab.build.boot import qemu_option_value
from irqlab.build.cache import InputHash, cached_build
from irqlab.build.steps import StepLog
from irqlab.paths import log_dir

__all__ = ["KEY_CODE", "KEY_LABEL", "ensure_key_dtb", "pci_reg", "with_key"]

KEY_LABEL = "irqlab-key"
KEY_CODE = 28  # KEY_ENTER
RECIPE_VERSION = "dtb-1"
DTC_PACKAGE = "device-tree-compiler"


def pci_reg(slot: int, function: int = 0, bus: int = 0) -> int:
    """phys.hi of a PCI node's ``reg`` (IEEE 1275 PCI binding): bus, device, function."""
    if not (0 <= slot < 32 and 0 <= function < 8 and 0 <= bus < 256):
        raise ValueError(f"no PCI address {bus:02x}:{slot:02x}.{function}")
    return (bus << 16) | (slot << 11) | (function << 8)


def with_key(dts: str, *, slot: int, line: int, debounce_ms: int, code: int = KEY_CODE) -> str:
    """*dts* (``dtc -O dts`` of virt's tree) with our function's node and a debounced key."""
    m = re.search(r"^\tpcie@[0-9a-f]+ \{\n(?:.*\n)*?^\t\};\n", dts, re.M)
    if m is None:
        raise ValueError("no PCIe host bridge node (pcie@...) at the top level of the tree")
    reg = pci_reg(slot)
    node = (
        f"\t\tirqlab_gpio: irqlab@{slot:x},0 {{\n"
        f"\t\t\treg = <{reg:#x} 0x00 0x00 0x00 0x00>;\n"
        "\t\t\tgpio-controller;\n"
        "\t\t\t#gpio-cells = <0x02>;\n"
        "\t\t};\n"
    )
    end = m.end() - len("\t};\n")
    out = dts[:end] + node + dts[end:]
    keys = (
        "\tirqlab-keys {\n"
        '\t\tcompatible = "gpio-keys";\n\n'
        "\t\tkey {\n"
        f'\t\t\tlabel = "{KEY_LABEL}";\n'
        f"\t\t\tlinux,code = <{code:#x}>;\n"
        f"\t\t\tgpios = <&irqlab_gpio {line:#x} 0x00>;\n"
        f"\t\t\tdebounce-interval = <{debounce_ms:#x}>;\n"
        "\t\t};\n"
        "\t};\n"
    )
    last = out.rstrip().rfind("};")
    if last < 0:
        raise ValueError("the tree has no root node")
    return out[:last] + keys + out[last:]


def _run(argv: Sequence[str | Path]) -> None:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {r.stderr.strip()}")


def ensure_key_dtb(
    qemu: Path, machine_args: Sequence[str], *, slot: int, line: int, debounce_ms: int
) -> Path:
    """The patched DTB for these machine arguments (cached by them and the key)."""
    h = InputHash(RECIPE_VERSION)
    h.add_str("qemu", str(qemu))
    h.add_str("args", " ".join(machine_args))
    h.add_str("key", f"{slot} {line} {debounce_ms}")
    h.add_file(Path(__file__), label="recipe")

    if shutil.which("dtc") is None:
        with StepLog(log_dir() / "build" / "dtc.log", None) as steps:
            debs.ensure_apt_packages(steps, [DTC_PACKAGE], step="dtc")

    def build(out: Path) -> None:
        args = list(machine_args)
        i = args.index("-machine") + 1
        args[i] = f"{args[i]},dumpdtb={qemu_option_value(str(out / 'virt.dtb'))}"
        _run([qemu, *args, "-accel", "tcg"])
        _run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", out / "virt.dts", out / "virt.dtb"])
        dts = with_key(
            (out / "virt.dts").read_text(), slot=slot, line=line, debounce_ms=debounce_ms
        )
        (out / "key.dts").write_text(dts)
        _run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", out / "key.dtb", out / "key.dts"])

    return cached_build("dtb", h.hexdigest(), build) / "key.dtb"
