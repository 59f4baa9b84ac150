"""paramiko is imported without invoke (:mod:`irqlab.vm.paramiko_import`), and an SSH
config's ``Match exec`` still finds invoke when it runs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from irqlab.vm.paramiko_import import LazyModule, refused_here

pytest.importorskip("invoke")  # the dev install has it: what the module is for


def fresh(code: str) -> dict[str, object]:
    """*code*'s last printed line (JSON) in a fresh interpreter."""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(r.stdout.splitlines()[-1])


def test_importing_the_guest_module_imports_no_invoke() -> None:
    got = fresh(
        "import json, sys\n"
        "import irqlab.vm.guest, irqlab.vm.ssh\n"
        "import paramiko.config as c\n"
        "print(json.dumps({'invoke': 'invoke' in sys.modules, "
        "'lazy': type(c.invoke).__name__, 'error': repr(c.invoke_import_error)}))\n"
    )
    assert got == {"invoke": False, "lazy": "LazyModule", "error": "None"}


def test_match_exec_still_runs_through_invoke() -> None:
    got = fresh(
        "import json, sys\n"
        "import irqlab.vm.ssh\n"
        "import paramiko\n"
        "cfg = paramiko.SSHConfig.from_text('Match exec true\\n  User matched\\n')\n"
        "user = cfg.lookup('guest').get('user')\n"
        "import invoke\n"
        "print(json.dumps({'user': user, 'invoke': 'invoke' in sys.modules, "
        "'real': type(invoke).__name__}))\n"
    )
    assert got == {"user": "matched", "invoke": True, "real": "module"}


def test_invoke_imported_first_is_left_as_it_is() -> None:
    got = fresh(
        "import json\n"
        "import invoke\n"
        "import irqlab.vm.ssh\n"
        "import paramiko.config as c\n"
        "print(json.dumps({'same': c.invoke is invoke}))\n"
    )
    assert got == {"same": True}


def test_lazy_module_imports_on_first_attribute() -> None:
    lazy = LazyModule("json")
    assert lazy.dumps([1]) == "[1]"
    assert "imported on first use" in repr(lazy)


STAND_IN = "irqlab_refused_stand_in"  # a module made for the test, standing for invoke


def test_the_import_is_refused_in_the_importing_thread_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sys.modules["invoke"] = None`` made invoke's import fail in every thread while
    paramiko imported: another thread's ``import invoke`` then failed."""
    (tmp_path / f"{STAND_IN}.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finders = list(sys.meta_path)
    in_window, imported = threading.Event(), threading.Event()
    got: list[object] = []

    def other_thread() -> None:
        try:
            if in_window.wait(30):
                got.append(importlib.import_module(STAND_IN).VALUE)
        except ImportError as e:
            got.append(e)
        finally:
            imported.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        with refused_here(STAND_IN):
            with pytest.raises(ModuleNotFoundError, match=STAND_IN):
                importlib.import_module(STAND_IN)  # this thread's import: refused
            in_window.set()
            assert imported.wait(30), "the other thread's import did not end"
        thread.join(30)
        assert got == [7]
        assert sys.meta_path == finders  # the refusal is gone with the window
    finally:
        in_window.set()
        sys.modules.pop(STAND_IN, None)
