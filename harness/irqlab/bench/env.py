"""Where a bench result came from: host machine, load, commit (no guest needed)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_model",
    "git_commit",
    "load",
    "machine",
    "stamp",
]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first ``model name`` of /proc/cpuinfo (or the platform's processor string)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def load(
    getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    cpu_count: Callable[[], int | None] = os.cpu_count,
) -> dict[str, Any]:
    """The host's load average (1, 5, 15 min) and its cores, as the result records them
    (``{"1min": 0.42, "5min": ..., "15min": ..., "cores": 2}``): the report judges
    the load per core (:func:`irqlab.bench.report.load_warning`)."""
    one, five, fifteen = getloadavg()
    return {
        "1min": round(one, 2),
        "5min": round(five, 2),
        "15min": round(fifteen, 2),
        "cores": cpu_count(),
    }


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """HEAD and whether tracked files differ from it (None fields outside a git tree);
    *repo* defaults to the checkout irqlab runs from (none for an installed wheel: its
    venv may lie in some other git tree, whose commit says nothing of irqlab's)."""
    from irqlab.paths import checkout_root

    repo = repo if repo is not None else checkout_root()
    if repo is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head, "dirty": bool(dirty) if dirty is not None else None}


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "host_kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
