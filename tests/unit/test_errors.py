"""Every exception class the host package defines derives from IrqlabError (and keeps its
standard base), so ``except IrqlabError`` catches what irqlab reports and nothing else."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import irqlab
from irqlab.errors import IrqlabError

# Internal: raised and caught inside one function, never seen by a caller.
PRIVATE = {"irqlab.contract.cheader._ExprError", "irqlab.vm.accel._NotProbed"}
# Not errors: control flow as KeyboardInterrupt is (a BaseException that no
# ``except Exception`` or ``except IrqlabError`` may stop): SIGTERM/SIGHUP unwinding
# the CLI through its finally blocks (SignalRaise: its base, raised again if dropped).
CONTROL_FLOW = {"irqlab.cli.main.Terminated", "irqlab.sigsafe.SignalRaise"}


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


def test_each_timeout_is_a_timeout_error_and_keeps_its_irqlab_base() -> None:
    """``except TimeoutError`` catches every wait that ran out (AgentTimeout was one;
    g.sh's SshTimeout, the boot's and push_many's were not), and the clauses written
    for their irqlab bases still do."""
    from irqlab.vm.agent_client import AgentError, AgentTimeout
    from irqlab.vm.guest import GuestError, GuestTimeout
    from irqlab.vm.machine import MachineError, MachineTimeout
    from irqlab.vm.qmp.errors import QMPFailure, QMPNoReply
    from irqlab.vm.ssh import SshError, SshTimeout

    pairs = [
        (AgentTimeout, AgentError),
        (SshTimeout, SshError),
        (GuestTimeout, GuestError),
        (MachineTimeout, MachineError),
        (QMPNoReply, QMPFailure),
    ]
    for timeout, base in pairs:
        e = timeout("waited 3 s")
        assert isinstance(e, TimeoutError) and isinstance(e, base), timeout
        assert isinstance(e, IrqlabError) and str(e) == "waited 3 s", timeout


def test_a_qmp_time_out_is_a_machine_timeout_and_other_failures_are_not() -> None:
    from irqlab.vm.machine import MachineTimeout, _qmp_error
    from irqlab.vm.qmp.errors import QMPFailure, QMPNoReply

    assert type(_qmp_error(QMPNoReply("no reply within 3 s"), "x")) is MachineTimeout
    other = _qmp_error(QMPFailure("QMP qom-set: not connected"), "x")
    assert not isinstance(other, TimeoutError)
