"""docs/examples/test_own_driver.py, the example test for another project's driver
(README: "Your own project's CI"), works as its comments say. Copied to tests/ of a
project whose workflow (docs/examples/own-project-ci.yml) builds the module at the
repository's root, its marker names that module (the marker's paths are relative to the
test file: a user's ``modules=["mydrv.ko"]`` named tests/mydrv.ko), takes only keywords
the plugin parses, and the test uses only the plugin's fixtures and Guest's public
methods; against a guest stand-in it passes when the driver has the device and fails
naming what has it otherwise."""

from __future__ import annotations

import inspect
import re
import shutil
import typing
from pathlib import Path

import pytest
from _pytest.fixtures import getfixturemarker

from irqlab.paths import repo_root
from irqlab.testing import plugin
from irqlab.vm.guest import Guest
from irqlab.vm.ssh import RunResult

pytest_plugins = ["pytester"]

EXAMPLE = repo_root() / "docs" / "examples" / "test_own_driver.py"
WORKFLOW = repo_root() / "docs" / "examples" / "own-project-ci.yml"

# The plugin's own parse of the marker (a module that is not there fails the test as it
# would), then a stand-in for the guest with what the example calls of Guest
# (test_the_example_calls_only_what_guest_has checks those against Guest).
CONFTEST = """
import os
from types import SimpleNamespace

import pytest

from irqlab.testing.plugin import fresh_guest_config


class FakeGuest:
    def __init__(self, bound):
        self.bound = bound

    def pci_address(self):
        return "0000:00:04.0"

    def run(self, cmd, *, timeout=60.0, input=None):
        assert cmd == "readlink /sys/bus/pci/devices/0000:00:04.0/driver", cmd
        out = f"../../../bus/pci/drivers/{self.bound}\\n" if self.bound else ""
        return SimpleNamespace(rc=0 if self.bound else 1, out=out, err="")

    def sh(self, cmd, *, timeout=60.0, check=True):
        assert cmd == "dmesg", cmd
        return "the guest's kernel log"


@pytest.fixture
def irqlab_fresh_guest(request):
    config = fresh_guest_config(request)
    print("MODULES", [str(m) for m in config.extra_modules], "IRQLAB", config.load_irqlab)
    return FakeGuest(os.environ["FAKE_BOUND"])
"""


def _project(pytester: pytest.Pytester, ko: str = "mydrv.ko") -> Path:
    """A project laid out as the workflow expects: the example in tests/, the module the
    workflow's build makes at *ko* (relative to the repository's root)."""
    tests = pytester.mkdir("tests")
    shutil.copy(EXAMPLE, tests / "test_own_driver.py")
    (tests / "conftest.py").write_text(CONFTEST)
    (pytester.path / ko).write_bytes(b"\x7fELF")
    return tests


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bound: str
) -> pytest.RunResult:
    monkeypatch.setenv("FAKE_BOUND", bound)
    monkeypatch.delenv("IRQLAB_LOG_DIR", raising=False)
    return pytester.runpytest_subprocess("tests", "-s", "-p", "no:cacheprovider")


@pytest.mark.parametrize(
    ("bound", "outcome", "said"),
    [
        ("mydrv", "passed", ""),
        ("irqlab", "failed", "0000:00:04.0 is bound to irqlab:"),
        ("", "failed", "0000:00:04.0 is bound to no driver:"),
    ],
)
def test_the_example_passes_when_its_driver_has_the_device(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bound: str, outcome: str, said: str
) -> None:
    """The guest gets the module at the project's root, without irqlab's driver; the
    test fails naming what has the device when it is not the driver."""
    _project(pytester)
    r = _run(pytester, monkeypatch, bound)
    r.assert_outcomes(**{outcome: 1})
    ko = pytester.path.resolve() / "mydrv.ko"
    assert f"MODULES ['{ko}'] IRQLAB False" in r.stdout.str()
    assert said in r.stdout.str()


def test_the_workflow_builds_the_module_where_the_example_names_it() -> None:
    """make M="$PWD" in the checkout's root, then pytest on tests/: from there the
    module is ../mydrv.ko."""
    workflow = WORKFLOW.read_text()
    assert 'make -C "$kdir" M="$PWD" modules' in workflow
    assert "python -m pytest tests " in workflow
    assert 'MODULE = "../mydrv.ko"' in EXAMPLE.read_text()


def test_a_module_beside_the_test_is_not_the_one_at_the_root(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker resolves relative to the test file: a module built in tests/ is not
    found as ../mydrv.ko, and the failure names the path it looked for."""
    _project(pytester, ko="tests/mydrv.ko")
    r = _run(pytester, monkeypatch, "mydrv")
    r.assert_outcomes(errors=1)
    assert f"not found: {pytester.path.resolve() / 'mydrv.ko'}" in r.stdout.str()


def test_the_example_uses_the_plugins_marker_and_fixtures_only() -> None:
    text = EXAMPLE.read_text()
    imports = re.findall(r"^(?:import|from) (\S+)", text, re.M)
    assert imports == ["pytest"], imports
    marks = re.findall(r"^@pytest\.mark\.irqlab\((.*)\)$", text, re.M)
    assert marks == ["modules=[MODULE], load_irqlab=False"], marks
    keywords = {k.strip().split("=")[0] for k in marks[0].split(", ")}
    assert keywords <= plugin.MARKER_KEYWORDS, keywords - plugin.MARKER_KEYWORDS
    tests = re.findall(r"^def (test_\w+)\((.*)\):$", text, re.M)
    assert tests
    for _, args in tests:
        for name in args.split(", "):
            fixture = getattr(plugin, name, None)
            assert name.startswith("irqlab_") and getfixturemarker(fixture), name


def test_the_example_calls_only_what_guest_has() -> None:
    """The stand-in above answers pci_address(), run(cmd) and sh(cmd): Guest has each,
    called so."""
    text = EXAMPLE.read_text()
    called = set(re.findall(r"\bg\.(\w+)\(", text))
    assert called == {"pci_address", "run", "sh"}, called
    inspect.signature(Guest.pci_address).bind(None)
    inspect.signature(Guest.run).bind(None, "readlink x")
    inspect.signature(Guest.sh).bind(None, "dmesg")
    assert typing.get_type_hints(Guest.run)["return"] is RunResult
    assert "out" in RunResult._fields
