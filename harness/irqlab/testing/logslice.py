"""Per-test views of long-running logs.

One booted guest serves many tests, so its console log and the agent's streams
grow across the session.  :class:`LogSlicer` remembers where each log ended
when a test started and, if the test fails, copies just that test's part into
the test's own directory, so a failure points at the lines that matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "LogSlicer",
]


class LogSlicer:
    def __init__(self, logs: Mapping[str, Path]) -> None:
        self._logs = dict(logs)
        self._start = {name: file_size(path) for name, path in self._logs.items()}

    def save(self, dest: Path) -> list[Path]:
        """Write each log's bytes since construction to ``dest/<name>``; return the files."""
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for name, path in self._logs.items():
            if not path.is_file():
                continue
            with path.open("rb") as f:
                f.seek(self._start[name])
                data = f.read()
            out = dest / name
            out.write_bytes(data)
            written.append(out)
        return written


def file_size(path: Path) -> int:
    """*path*'s size now, 0 when it does not exist (yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0
