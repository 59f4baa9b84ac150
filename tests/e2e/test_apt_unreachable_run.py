"""A guest from a complete cache while apt cannot be asked: no package lists (the
mirror out of reach, so ``apt-get update`` fetched none) and apt-get failing as with a
dead mirror.  Nothing needs downloading, so the guest starts, said once."""

from __future__ import annotations

import os
from pathlib import Path

from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.vm.guest import Guest

DEAD_APT = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
echo "E: Failed to fetch http://127.0.0.1:9/debian  Could not connect to 127.0.0.1:9" >&2
exit 100
"""


def dead_apt(tmp: Path) -> tuple[dict[str, str], Path, Path]:
    """(environment, its lists directory, the log of apt-get/apt-cache calls): an
    ``APT_CONFIG`` whose only source is a mirror no one answers and whose lists
    directory is empty, and apt-get, apt-cache on ``$PATH`` failing as with that mirror."""
    lists, calls, shims = tmp / "lists", tmp / "apt-calls", tmp / "bin"
    for d in (lists / "partial", shims, tmp / "cache" / "archives" / "partial"):
        d.mkdir(parents=True)
    (tmp / "sources.list").write_text("deb [trusted=yes] http://127.0.0.1:9/debian bookworm main\n")
    (tmp / "apt.conf").write_text(
        f'Dir::State::Lists "{lists}/";\n'
        f'Dir::Etc::sourcelist "{tmp / "sources.list"}";\n'
        f'Dir::Etc::sourceparts "{tmp / "sources.list.d"}/";\n'
        f'Dir::Cache "{tmp / "cache"}/";\n'
    )
    calls.touch()
    for tool in ("apt-get", "apt-cache"):
        (shims / tool).write_text(DEAD_APT.format(calls=calls))
        (shims / tool).chmod(0o755)
    env = {
        **os.environ,
        "APT_CONFIG": str(tmp / "apt.conf"),
        "PATH": f"{shims}:{os.environ['PATH']}",
    }
    return env, lists, calls


def test_a_guest_starts_from_the_cache_without_apt_and_says_so_once(tmp_path: Path) -> None:
    """It was "the irqlab kernel module cannot be built: package linux-image-amd64 not
    found in the apt lists (run apt-get update?)", exit 1, though all was cached."""
    Guest().find_prerequisites()  # with apt: everything built and apt's answer cached
    env, lists, calls = dead_apt(tmp_path)
    r = irqlab("run", "--", "echo", "offline", env=env, timeout=300)
    assert (r.returncode, r.stdout) == (0, "offline\n"), r.stderr
    told = [ln for ln in r.stderr.splitlines() if "apt cannot be asked" in ln]
    assert len(told) == 1, r.stderr
    said = f"apt cannot be asked (no package lists in {lists}): going on with its last answer"
    assert said in told[0], told[0]
    assert told[0].endswith("which may be out of date"), told[0]
    assert "guest ready" in r.stderr and "cannot tell which QEMU" not in r.stderr, r.stderr
    assert calls.read_text() == ""  # neither apt-get nor apt-cache was run
