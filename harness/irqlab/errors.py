"""The base class of every error the irqlab host package raises on purpose.

``except IrqlabError`` catches what irqlab reports (a build step that failed, a
guest that did not come up, a malformed header, a rejected injection) and lets
real bugs (``TypeError``, ``AttributeError``, ...) through.  Each subclass also
keeps its standard base (``ValueError``, ``RuntimeError``, ``TimeoutError``) so
that callers catching those still work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "IrqlabError", "hide_frame"]


class IrqlabError(Exception):
    """Something irqlab detected and reports; subclasses say what."""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy called the class with ``args``: the made message of most, not
        # their __init__'s arguments (OutOfRange's bounds, CommandError's result), a
        # TypeError that broke a process pool whose worker raised one; made instead
        # without __init__, from the same args (an OSError's errno and filename too),
        # the attributes set as they are
        reduced = super().__reduce__()
        assert isinstance(reduced, tuple)
        return (_without_init, (type(self), reduced[1]), *reduced[2:])


def _without_init(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An exception of *cls* made from *args* by its builtin base alone, not its own
    ``__init__`` (for :meth:`IrqlabError.__reduce__`: pickle then sets its attributes).
    OSError's for a TimeoutError's (``cls.__new__`` is RuntimeError's first in
    AgentTimeout's bases, which refuses it); OSError reads *args* in its ``__new__`` or
    its ``__init__``, as *cls* has an ``__init__`` of its own or not."""
    base = OSError if issubclass(cls, OSError) else BaseException
    e = base.__new__(cls, *args)
    base.__init__(e, *args)
    return e


class ConfigError(IrqlabError, ValueError):
    """A value the user chose (a command-line option, an environment variable such as
    ``IRQLAB_ACCEL``, a guest's configuration) that cannot work, found before anything
    starts; the message names the value.  The ``irqlab`` command exits with status 2
    for it, as for argparse's usage errors."""


def hide_frame(excinfo: Any) -> bool:
    """``__tracebackhide__ = hide_frame`` in a function a pytest test calls (or one
    between it and the ``raise``): pytest leaves that function's frame out of a failed
    test's traceback when the error is an :class:`IrqlabError` (its message says the
    cause; the harness's source around it only buried it), and shows it for any other
    error, a bug's.  *excinfo*: pytest's ``ExceptionInfo`` (pytest itself is not
    imported); ``--full-trace`` shows every frame."""
    return excinfo is not None and bool(excinfo.errisinstance(IrqlabError))
