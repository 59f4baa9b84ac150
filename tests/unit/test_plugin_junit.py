"""What a failing test's report carries into pytest's JUnit XML, without a VM: the
plugin's sections (logs, diagnostics) in the ``<failure>``/``<error>`` text, log
paths relative to the log directory the run's properties name."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# Stand-ins for what the plugin's fixtures put into a test's stash: a machine the test
# started, and the diagnostics of a guest
CONFTEST = """
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.testing import plugin
from irqlab.testing.logslice import LogSlicer


class FakeMachine:
    def __init__(self, d):
        self.config = SimpleNamespace(name="fake0")
        self.paths = SimpleNamespace(log_dir=d)

    def describe_logs(self):
        return f"logs: {self.paths.log_dir}"


class FakeDiagnostics:
    def __init__(self):
        self.guest = SimpleNamespace(config=SimpleNamespace(name="g1"))
        self.collected = 0

    def collect(self, dest):
        self.collected += 1
        dest.mkdir(parents=True, exist_ok=True)
        log = dest / "dmesg.log"
        log.write_text("[ 1.0] a kernel line\\n")
        return f"FAKE-DIAGNOSTICS collected={self.collected}", [log]


@pytest.fixture
def fake_machine(request, irqlab_log_dir):
    d = irqlab_log_dir / "fake0"
    d.mkdir(parents=True, exist_ok=True)
    request.node.stash.setdefault(plugin._MACHINES, []).append(FakeMachine(d))


@pytest.fixture
def fake_diag(request, irqlab_log_dir):
    request.node.stash.setdefault(plugin._DIAGNOSTICS, []).append(
        (FakeDiagnostics(), irqlab_log_dir / request.node.name)
    )


@pytest.fixture
def fake_guest_logs(request, irqlab_log_dir, fake_diag):
    # a shared guest's logs: the console has nothing new during the test, the agent's
    # stream has; the test's part goes where the diagnostics write theirs
    src = irqlab_log_dir / "guest"
    src.mkdir(parents=True, exist_ok=True)
    (src / "console").write_text("boot\\n")
    (src / "rx").write_text("{}\\n")
    logs = {"console.log": src / "console", "agent.rx.jsonl": src / "rx"}
    request.node.stash[plugin._GUEST_LOGS] = (
        LogSlicer(logs), irqlab_log_dir / request.node.name
    )
    return src


@pytest.fixture
def broken_setup(fake_diag):
    raise RuntimeError("the agent did not answer (in a fixture's setup)")


@pytest.fixture
def broken_teardown(fake_diag):
    yield
    raise RuntimeError("the agent did not answer (in a fixture's teardown)")
"""


def run_inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str, *args: str
) -> tuple[pytest.RunResult, ET.Element, Path]:
    logs = pytester.path / "logs"
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(tests)
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider", *args)
    return r, ET.parse(junit).getroot(), logs


def case_of(root: ET.Element, name: str) -> ET.Element:
    (case,) = [c for c in root.iter("testcase") if c.get("name") == name]
    return case


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_sections_and_relative_log_paths_reach_the_junit_xml(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: bool
) -> None:
    tests = """
        def test_fails(fake_machine, fake_diag):
            assert 3 == 4
        """
    r, root, logs = run_inner(pytester, monkeypatch, tests, *(["-n", "1"] if xdist else []))
    r.assert_outcomes(failed=1)
    case = case_of(root, "test_fails")
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "irqlab logs" in failure.text and "fake0: logs: " in failure.text, failure.text
    assert "FAKE-DIAGNOSTICS" in failure.text, failure.text
    # the terminal shows each section once
    assert r.stdout.str().count("FAKE-DIAGNOSTICS") == 1, r.stdout.str()
    props = {(p.get("name"), p.get("value")) for p in case.iter("property")}
    values = [v for n, v in props if n == "irqlab_log"]
    assert values and all(v is not None and not v.startswith("/") for v in values), props
    assert all(v is not None and (logs / v).exists() for v in values), props
    assert any(v is not None and v.endswith("/test_fails/dmesg.log") for v in values), props
    assert any(v is not None and v.startswith("pytest-") for v in values), props
    suite_props = [
        p.get("value")
        for p in root.find("testsuite").iter("property")  # type: ignore[union-attr]
        if p.get("name") == "irqlab_log_dir"
    ]
    assert suite_props == [str(logs.resolve())], ET.tostring(root)


def test_setup_and_teardown_failures_get_the_diagnostics_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = """
        def test_setup_fails(broken_setup):
            pass

        def test_teardown_fails(broken_teardown):
            pass

        def test_call_and_teardown_fail(broken_teardown):
            assert 3 == 4
        """
    r, root, _ = run_inner(pytester, monkeypatch, tests)
    r.assert_outcomes(passed=1, failed=1, errors=3)
    for name in ("test_setup_fails", "test_teardown_fails"):
        (error,) = case_of(root, name).iter("error")
        assert "FAKE-DIAGNOSTICS collected=1" in (error.text or ""), error.text
        assert "irqlab diagnostics of the session guest ('g1')" in (error.text or "")
    # the test's own failure reports them; its teardown's failure does not again
    # (pytest writes a second test case for the teardown's error)
    both = [c for c in root.iter("testcase") if c.get("name") == "test_call_and_teardown_fail"]
    (failure,) = [f for c in both for f in c.iter("failure")]
    assert "FAKE-DIAGNOSTICS collected=1" in (failure.text or ""), failure.text
    text = "".join(ET.tostring(c, encoding="unicode") for c in both)
    assert "in a fixture's teardown" in text, text
    assert "collected=2" not in text, text


def test_a_failures_list_of_logs_has_dmesg_and_no_empty_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = """
        def test_fails(fake_guest_logs):
            with (fake_guest_logs / "rx").open("a") as f:
                f.write('{"type": "reply"}\\n')
            assert 3 == 4
        """
    r, root, _ = run_inner(pytester, monkeypatch, tests)
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    listing = out.split("irqlab guest logs (this test's part)", 1)[1].split(" irqlab ", 1)[0]
    assert "/test_fails/agent.rx.jsonl" in listing, listing
    assert "/test_fails/dmesg.log" in listing, listing
    assert "console.log" not in listing, listing  # nothing new: 0 bytes
    props = [p.get("value") or "" for p in case_of(root, "test_fails").iter("property")]
    assert not any(v.endswith("console.log") for v in props), props
    assert any(v.endswith("dmesg.log") for v in props), props


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_an_interrupted_run_names_the_test_and_its_logs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, signal_name: str
) -> None:
    logs = pytester.path / "logs"
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    pytester.makepyfile(
        test_stop=f"""
        import os, signal, time

        def test_first():
            pass

        def test_stopped(irqlab_log_dir):
            (irqlab_log_dir / "test_stop.py_test_stopped").mkdir()
            os.kill(os.getpid(), signal.{signal_name})
            time.sleep(5)
        """
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    text = r.stdout.str() + r.stderr.str()
    (line,) = [ln for ln in text.splitlines() if "interrupted during" in ln]
    assert "test_stop.py::test_stopped (its logs: " in line, text
    assert line.rstrip(")").endswith("/test_stop.py_test_stopped"), line
