"""A FIFO standing in for a device file of the agent's paths (the unit tests' host agent)."""

from __future__ import annotations

import os
from pathlib import Path


class Fifo:
    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def push(self, *records: bytes) -> None:
        os.write(self.fd, b"".join(records))
