"""Where irqlab finds its sources and keeps generated files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "agent_package_dir",
    "cache_dir",
    "log_dir",
    "packaged_file",
    "repo_root",
]

_PKG_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The source checkout this package was installed from (editable install)."""
    root = _PKG_DIR.parent.parent
    if not (root / "qemu-device").is_dir():
        raise RuntimeError(
            f"irqlab source tree not found above {_PKG_DIR}; "
            "install with 'pip install -e <checkout>'"
        )
    return root


def cache_dir() -> Path:
    """Build cache (QEMU builds, guest images, keys), keyed by input hash inside.

    $IRQLAB_CACHE_DIR overrides; default is $XDG_CACHE_HOME/irqlab or ~/.cache/irqlab.
    """
    env = os.environ.get("IRQLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "irqlab").resolve()


def log_dir() -> Path:
    """Logs of runs (console, agent, build steps): $IRQLAB_LOG_DIR or <repo>/build/logs."""
    env = os.environ.get("IRQLAB_LOG_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return repo_root() / "build" / "logs"


def agent_package_dir() -> Path:
    """The guest agent's package (``irqlab_agent``, installed beside this package), found
    by path: the host never imports the guest's code."""
    return _PKG_DIR.parent / "irqlab_agent"


def packaged_file(name: str, repo_rel: str) -> Path:
    """A source-of-truth file: from the checkout if present, else from the wheel's data/."""
    try:
        p = repo_root() / repo_rel
        if p.is_file():
            return p
    except RuntimeError:
        pass
    p = _PKG_DIR / "data" / name
    if p.is_file():
        return p
    raise FileNotFoundError(f"{repo_rel} not found in the checkout or in {_PKG_DIR / 'data'}")


def prune_logs(root: Path | None = None, *, keep_runs: int = 10, keep_other: int = 50) -> int:
    """Keep the newest *keep_runs* pytest run directories (``pytest-*``) and the newest
    *keep_other* other entries (library runs) in the log directory; returns how many
    were removed.  Directories in use are recent, so they are never among the removed."""
    import shutil

    base = root if root is not None else log_dir()
    if not base.is_dir():
        return 0
    entries = sorted(base.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = [p for p in entries if p.is_dir() and p.name.startswith("pytest-")]
    other = [p for p in entries if p.is_dir() and not p.name.startswith("pytest-")]
    doomed = runs[keep_runs:] + [p for p in other if p.name != "build"][keep_other:]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return len(doomed)
