"""Every exception class the host package defines derives from IrqlabError (and keeps its
standard base), so ``except IrqlabError`` catches what irqlab reports and nothing else."""

from __future__ import annotations

import copy
import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

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


def _sample_values() -> dict[str, object]:
    """A value for each annotation of a required ``__init__`` argument (the classes'
    annotations are strings: ``from __future__ import annotations``)."""
    from irqlab.vm.exit_signal import ExitSignal
    from irqlab.vm.health import Fault
    from irqlab.vm.qmp.errors import QMPCommandError
    from irqlab.vm.ssh import RunResult

    return {
        "str": "said",
        "int": 7,
        "int | None": 9,
        "Path": Path("/var/log/step.log"),
        "RunResult": RunResult(139, "o", "e", ExitSignal("SEGV", True, "")),
        "Fault": Fault("guest kernel panic: oops", "tail", log_dir="/logs"),
        "QMPCommandError": QMPCommandError("device_add", {"id": "x"}, "GenericError", "no"),
        "Mapping[str, object]": {"id": "irqlab0"},
    }


def _made(cls: type[BaseException]) -> BaseException:
    """An instance of *cls* with every required ``__init__`` argument given a sample
    (a message alone for a class without its own ``__init__``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except ValueError:  # the builtin __init__: a message
        return cls("something failed")
    samples = _sample_values()
    args, kwargs = [], {}
    for p in params:
        if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.annotation not in samples:
            pytest.fail(f"{cls.__qualname__}({p.name}: {p.annotation}): add a sample of it")
        value = samples[p.annotation]
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


def _as_seen(e: BaseException) -> tuple[object, ...]:
    """What a caller sees of *e*: its class, message, args and attributes (an
    exception among them seen the same way)."""
    attrs = {k: _as_seen(v) if isinstance(v, BaseException) else v for k, v in vars(e).items()}
    return (type(e), str(e), e.args, attrs)


@pytest.mark.parametrize("name", sorted(_exception_classes()))
def test_each_exception_survives_pickle_and_copy(name: str) -> None:
    """A process pool's worker that raised one the class could not be made again from
    (OutOfRange, CommandError, QemuExited: ``__init__`` arguments beyond a message)
    broke the pool (BrokenProcessPool) instead of raising it in the caller."""
    e = _made(_exception_classes()[name])
    e.add_note("a note")
    for again in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
        assert _as_seen(again) == _as_seen(e), name


def test_a_process_pools_worker_raising_one_raises_it_in_the_caller() -> None:
    from irqlab.vm.qmp.errors import OutOfRange

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        future = pool.submit(_raise_out_of_range)
        with pytest.raises(OutOfRange, match=r"^period_ns=1 ns is below the minimum, 100 ns$"):
            future.result(timeout=30)


def _raise_out_of_range() -> None:
    from irqlab.vm.qmp.errors import OutOfRange

    raise OutOfRange("period_ns", 1, 100, None, unit="ns")
