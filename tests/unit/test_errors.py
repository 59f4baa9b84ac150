"""Every exception class the host package defines derives from IrqlabError (and keeps its
standard base), so ``except IrqlabError`` catches what irqlab reports and nothing else."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import irqlab
from irqlab.errors import IrqlabError

# Internal: raised and caught inside one function, never seen by a caller.
PRIVATE = {"irqlab.contract.cheader._ExprError"}
# Not errors: control flow as KeyboardInterrupt is (a BaseException that no
# ``except Exception`` or ``except IrqlabError`` may stop): SIGTERM/SIGHUP unwinding
# the CLI through its finally blocks.
CONTROL_FLOW = {"irqlab.cli.main.Terminated"}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for mod in pkgutil.walk_packages(irqlab.__path__, "irqlab."):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_exception_class_is_an_irqlab_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 25, sorted(classes)
    outside = [n for n, c in classes.items() if not issubclass(c, IrqlabError)]
    assert sorted(outside) == sorted(PRIVATE | CONTROL_FLOW)
    for name in CONTROL_FLOW:
        assert not issubclass(classes[name], Exception), name


def test_they_keep_their_standard_bases() -> None:
    classes = _exception_classes()
    for name, cls in classes.items():
        if cls is IrqlabError or name in PRIVATE | CONTROL_FLOW:
            continue
        std = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not object]
        assert any(b not in (Exception, BaseException) for b in std), (name, std)
