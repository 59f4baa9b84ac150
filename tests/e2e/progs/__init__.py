"""Small test-only C programs run in the guest (one ``<name>.c`` each): linked
statically with the host's gcc, as the native responder is (the Debian 12 host and
guest share glibc's ABI), against the driver's uapi header; a warning fails the build."""

from __future__ import annotations

import subprocess
from pathlib import Path

from irqlab.paths import repo_root

HERE = Path(__file__).resolve().parent
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-static", "-pthread")


def build_test_prog(name: str, out_dir: Path) -> Path:
    """Path of the static binary built from ``tests/e2e/progs/<name>.c`` in *out_dir*."""
    out = out_dir / name
    argv = [
        "gcc",
        *CFLAGS,
        f"-I{repo_root() / 'guest-kmod/include/uapi'}",
        "-o",
        str(out),
        str(HERE / f"{name}.c"),
    ]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"gcc exited {r.returncode} building {name}:\n{r.stderr[-3000:]}")
    return out
