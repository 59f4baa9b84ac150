#!/usr/bin/env python3
"""Graft the irqlab device into a QEMU source tree (idempotent).

    graft.py [--docs] QEMU_SOURCE_DIR

Copies irqlab.c to hw/misc/, irqlab-regs.h to include/hw/misc/, and adds
the Kconfig and meson glue (between "irqlab" marker lines, replaced if it
changed).  With --docs, also copies irqlab.rst to docs/specs/ and lists it
in docs/specs/index.rst.  A file is rewritten only when its content changes,
so a second graft leaves every mtime alone and ninja rebuilds nothing.
Works with QEMU 7.2 (softmmu_ss) and QEMU >= 8.1 (system_ss).  Stdlib only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = "# irqlab: begin (added by qemu-device/graft.py)"
END = "# irqlab: end"


def write_if_changed(path: Path, text: str) -> bool:
    """Write *text* to *path* unless it already holds exactly that."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def with_block(text: str, block: str) -> str:
    """*text* with the marked irqlab block set to *block* (appended if absent)."""
    marked = f"{BEGIN}\n{block.rstrip()}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END) + r"\n", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: marked, text, count=1)
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "\n" + marked


def meson_line(misc_meson: str) -> str:
    """The meson glue with the source-set name this tree uses."""
    template = (HERE / "meson.build").read_text()
    ss = "system_ss" if re.search(r"^system_ss\.add", misc_meson, re.M) else "softmmu_ss"
    lines = [ln for ln in template.splitlines() if ln and not ln.startswith("#")]
    return "\n".join(lines).replace("@SS@", ss) + "\n"


def with_index_entry(index: str) -> str:
    """docs/specs/index.rst with "irqlab" in its toctree (after "edu" if listed)."""
    if re.search(r"^[ \t]+irqlab[ \t]*$", index, re.M):
        return index
    m = re.search(r"^([ \t]+)edu[ \t]*$", index, re.M)
    if m:
        return index[: m.end()] + f"\n{m.group(1)}irqlab" + index[m.end() :]
    entries = list(re.finditer(r"^(   )\S.*$", index, re.M))
    if not entries:
        raise SystemExit("graft: no toctree entries found in docs/specs/index.rst")
    last = entries[-1]
    return index[: last.end()] + "\n   irqlab" + index[last.end() :]


def graft(qemu: Path, docs: bool = False) -> list[Path]:
    """Graft into *qemu*; returns the files that changed."""
    misc = qemu / "hw" / "misc"
    if not (misc / "meson.build").is_file() or not (misc / "Kconfig").is_file():
        raise SystemExit(f"graft: {qemu} does not look like a QEMU source tree")
    changed: list[Path] = []

    def put(path: Path, text: str) -> None:
        if write_if_changed(path, text):
            changed.append(path)

    put(misc / "irqlab.c", (HERE / "irqlab.c").read_text())
    put(qemu / "include" / "hw" / "misc" / "irqlab-regs.h", (HERE / "irqlab-regs.h").read_text())
    kconfig = (misc / "Kconfig").read_text()
    put(misc / "Kconfig", with_block(kconfig, (HERE / "Kconfig").read_text()))
    meson = (misc / "meson.build").read_text()
    put(misc / "meson.build", with_block(meson, meson_line(meson)))
    if docs:
        specs = qemu / "docs" / "specs"
        put(specs / "irqlab.rst", (HERE / "irqlab.rst").read_text())
        put(specs / "index.rst", with_index_entry((specs / "index.rst").read_text()))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qemu_source", type=Path)
    ap.add_argument("--docs", action="store_true", help="also add docs/specs/irqlab.rst")
    args = ap.parse_args(argv)
    changed = graft(args.qemu_source.resolve(), docs=args.docs)
    for p in changed:
        print(f"graft: updated {p}")
    if not changed:
        print("graft: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
