"""paramiko, imported without importing invoke at the same time.

``paramiko.config`` imports invoke when it is installed (``try: import invoke``), for
one rarely used feature: an SSH config's ``Match exec``.  Where invoke is installed (a
checkout's ``pip install -e '.[dev]'``, anything that runs ``invoke``), that import
pulled in invoke with ``unittest.mock``, ``asyncio``, ``ssl`` and a vendored YAML:
about 40 ms of a script's start and 20 ms of its exit (2 cores, 2026-12-07), in every
process that imports :mod:`irqlab.vm.guest`.  irqlab uses no SSH config file.

:func:`import_paramiko` imports paramiko with invoke's import failing for that moment
in that thread only (:func:`refused_here`: other threads import invoke as usual) and
then gives ``paramiko.config`` an invoke that is imported on first use
(:class:`LazyModule`): ``Match exec`` works as before, and so does ``import invoke``
anywhere else.  Where invoke is not installed, was imported already or paramiko was,
it is a plain ``import paramiko``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from irqlab.errors import hide_frame

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from importlib.machinery import ModuleSpec

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["LazyModule", "import_paramiko", "paramiko", "refused_here"]

OPTIONAL = "invoke"  # paramiko.config's optional import

_LOCK = threading.Lock()


class LazyModule:
    """Stands for the module *name*, imported on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


class _RefuseInThread:
    """A :data:`sys.meta_path` finder: the import of *name* fails in thread *ident*
    (``ModuleNotFoundError``, as if it were not installed); other threads' imports and
    other names go on to the next finders."""

    def __init__(self, name: str, ident: int) -> None:
        self.name, self.ident = name, ident

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == self.name and threading.get_ident() == self.ident:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def refused_here(name: str) -> Iterator[None]:
    """While in it, ``import name`` fails in this thread only (a ``sys.modules`` entry of
    None made it fail in every thread: another thread's ``import invoke`` then)."""
    finder = _RefuseInThread(name, threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _wanted(name: str) -> bool:
    """Whether *name* is installed and not imported yet."""
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_paramiko() -> ModuleType:
    """``import paramiko``, with ``paramiko.config``'s invoke made lazy (see above)."""
    with _LOCK:
        if "paramiko.config" in sys.modules or not _wanted(OPTIONAL):
            import paramiko as mod

            return mod
        with refused_here(OPTIONAL):
            import paramiko as mod
            import paramiko.config as config
        if getattr(config, OPTIONAL, False) is None:  # it saw the failing import
            setattr(config, OPTIONAL, LazyModule(OPTIONAL))
            setattr(config, f"{OPTIONAL}_import_error", None)
        return mod


if TYPE_CHECKING:
    import paramiko
else:
    paramiko = import_paramiko()
