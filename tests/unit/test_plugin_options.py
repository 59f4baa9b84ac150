"""The pytest plugin's options, marker arguments and fixture names, without a VM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_irqlab_kmod import IRQLAB_PARAMS, _fake_ko  # same directory (rootdir-relative)

from irqlab.contract.regs import REGS
from irqlab.errors import IrqlabError
from irqlab.testing.plugin import gpio_mask

pytest_plugins = ["pytester"]


def test_gpio_edges_as_lines_or_mask() -> None:
    assert gpio_mask([0, 5]) == 0b100001
    assert gpio_mask(0x30) == 0x30
    with pytest.raises(pytest.fail.Exception, match="give a bit mask or a list of lines"):
        gpio_mask("all")
    with pytest.raises(pytest.fail.Exception, match="-1 is not a line number"):
        gpio_mask([-1])
    assert gpio_mask([REGS.MAX_GPIO_LINES - 1]) == 1 << (REGS.MAX_GPIO_LINES - 1)
    # the driver refused them after a boot, with "Numerical result out of range"
    with pytest.raises(pytest.fail.Exception) as e:
        gpio_mask([0, 40])
    assert str(e.value) == (
        "@pytest.mark.irqlab(gpio_edges=[0, 40]): line 40 is beyond the device's "
        f"{REGS.MAX_GPIO_LINES} GPIO lines (0 to {REGS.MAX_GPIO_LINES - 1}; "
        "device={'gpio-lines': N} sets how many)"
    )
    with pytest.raises(pytest.fail.Exception, match="line 8 is beyond the device's 8 GPIO"):
        gpio_mask([8], lines=8)
    with pytest.raises(pytest.fail.Exception, match=r"gpio_edges=0x100\): names lines beyond"):
        gpio_mask(0x100, lines=8)
    with pytest.raises(pytest.fail.Exception, match="a bit mask is not negative"):
        gpio_mask(-1)


def test_every_fixture_is_prefixed_and_documented(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    section = r.stdout.split("fixtures defined from irqlab.testing.plugin", 1)[1]
    section = section.split("=====", 1)[0].split(" fixtures defined from ", 1)[0]
    names = [ln.split()[0] for ln in section.splitlines() if " -- " in ln]
    assert len(names) >= 12, section
    for name in names:
        assert name.startswith("irqlab_"), name
    assert "no docstring available" not in section, section
    for old in ("injector", "qtest_machine", "qemu_install", "accel_choice"):
        assert f"\n{old} " not in r.stdout


def test_options_override_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IRQLAB_ACCEL", "kvm")
    monkeypatch.delenv("IRQLAB_LOG_DIR", raising=False)
    monkeypatch.delenv("IRQLAB_IMAGE", raising=False)
    pytester.makepyfile(
        """
        import os
        from pathlib import Path
        from irqlab.vm import accel
        def test_env(irqlab_log_dir):
            print("ACCEL", os.environ["IRQLAB_ACCEL"])
            print("WHY", accel.choose(Path("/nonexistent/qemu")).reason)
            print("IMAGE", os.environ.get("IRQLAB_IMAGE"))
            print("ARCH", os.environ.get("IRQLAB_ARCH"))
            print("LOGS", irqlab_log_dir)
        """
    )
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    r = pytester.runpytest_subprocess(
        "-s", "--irqlab-accel", "tcg", "--irqlab-image", "debian", "--irqlab-arch", "aarch64"
    )
    r.assert_outcomes(passed=1)
    out = r.stdout.str()
    assert "ACCEL tcg" in out and "IMAGE debian" in out and "ARCH aarch64" in out
    # the option said as the cause, not the variable it was copied into
    assert "WHY tcg forced by --irqlab-accel tcg" in out, out
    logs = str(pytester.path / ".irqlab" / "logs" / "pytest-")
    assert logs in out, out
    r = pytester.runpytest_subprocess("-s", "--irqlab-log-dir", str(tmp_path / "L"))
    assert f"LOGS {tmp_path / 'L'}/pytest-" in r.stdout.str()


def test_ini_option_sets_the_default_log_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRQLAB_LOG_DIR", raising=False)
    pytester.makeini("[pytest]\nirqlab_log_dir = out/logs\n")
    pytester.makepyfile("def test_env(irqlab_log_dir):\n    print('LOGS', irqlab_log_dir)\n")
    r = pytester.runpytest_subprocess("-s")
    r.assert_outcomes(passed=1)
    assert f"LOGS {pytester.path / 'out' / 'logs'}/pytest-" in r.stdout.str()


def test_a_log_dir_that_cannot_be_made_is_one_line_naming_the_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-root user's checkout with root's ``build/logs``: each test's setup gave a
    bare PermissionError from pathlib, with the plugin's frames."""
    (pytester.path / "file").write_text("")
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "file" / "logs"))
    pytester.makepyfile("def test_env(irqlab_log_dir):\n    pass\n")
    r = pytester.runpytest_subprocess()
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert f"cannot make the test run's log directory in {pytester.path / 'file' / 'logs'}" in out
    assert "point IRQLAB_LOG_DIR, or pytest's --irqlab-log-dir, at a writable directory" in out
    assert "Traceback" not in out and "parallel.py" not in out, out


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--irqlab-accel", "bogus"], {}, "--irqlab-accel 'bogus': use one of kvm, tcg, auto"),
        ([], {"IRQLAB_ACCEL": "bogus"}, "$IRQLAB_ACCEL='bogus' (no --irqlab-accel given)"),
        (["--irqlab-image", "fedora"], {}, "--irqlab-image 'fedora': use one of debian, buildroot"),
        # every test failed at its setup with it
        ([], {"IRQLAB_ARCH": "riscv64"}, "$IRQLAB_ARCH='riscv64' (no --irqlab-arch given): use"),
        (["--irqlab-arch", "mips"], {}, "--irqlab-arch 'mips': use one of x86_64, aarch64"),
        # read once a build or a snapshot's save ran: a raw traceback from start_guest
        ([], {"IRQLAB_CACHE_KEEP": "many"}, "IRQLAB_CACHE_KEEP='many': expected how many"),
        ([], {"IRQLAB_SNAPSHOT_KEEP": "-1"}, "IRQLAB_SNAPSHOT_KEEP='-1': expected how many"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_at_startup(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    said: str,
) -> None:
    for var in ("IRQLAB_ACCEL", "IRQLAB_IMAGE", "IRQLAB_ARCH", *env):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    pytester.makepyfile("def test_never(irqlab_log_dir):\n    pass\n")
    r = pytester.runpytest_subprocess(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert said in err, err
    assert "Traceback" not in err + r.stdout.str()
    for var in ("IRQLAB_ACCEL", "IRQLAB_ARCH", *env):
        monkeypatch.delenv(var, raising=False)
    r = pytester.runpytest_subprocess(
        "--irqlab-accel", "TCG", "--irqlab-image", "debian", "--irqlab-arch", "arm64"
    )
    assert r.ret == pytest.ExitCode.OK, r.stderr.str()  # as the library reads them


def _marker_run(pytester: pytest.Pytester, marker: str, *files: str) -> pytest.RunResult:
    """A test with ``@pytest.mark.irqlab(<marker>)`` on irqlab_fresh_guest, run by pytest;
    a marker error comes before any guest (none is built or booted here)."""
    pytester.makepyfile(
        test_marker=f"""
        import pytest

        @pytest.mark.irqlab({marker})
        def test_it(irqlab_fresh_guest):
            pass
        """
    )
    for name in files:
        (pytester.path / name).write_bytes(b"\x7fELF")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")


@pytest.mark.parametrize(
    ("marker", "said"),
    [
        (
            'smp="two"',
            "@pytest.mark.irqlab(smp='two'): give the number of vCPUs, an int of at least 1",
        ),
        ("smp=0", "(smp=0): give the number of vCPUs"),
        ('device="irq-mode=intx"', "(device='irq-mode=intx'): give a dict"),
        (
            'module=["mydrv.ko"]',
            "(module=['mydrv.ko']): give a dict of our driver's parameters; your own modules "
            "go in modules=[...]",
        ),
        ('modules="mydrv.ko"', "(modules='mydrv.ko'): give a list of .ko files"),
        ('kernel_modules="crc7"', "(kernel_modules='crc7'): give a list of module names"),
        ("kernel_modules=5", "(kernel_modules=5): give a list of module names"),
        ('device={"irq-mode,id": "x"}', "(device={'irq-mode,id': 'x'}): "),
        (
            'device={"gpio_lines": 8}',
            "(device={'gpio_lines': 8}): device_props key 'gpio_lines': the irqlab device has "
            "no property 'gpio_lines' (did you mean 'gpio-lines'? ",
        ),
        (  # a runtime control: QEMU refused it only once started
            'device={"fifo-push": 1}',
            "(device={'fifo-push': 1}): device_props key 'fifo-push': acts on a running device "
            "(a runtime control); set it after the start with the injector",
        ),
        ('modules=["mydrv.ko =x"]', "(modules=...): 'mydrv.ko =x': '=x' is not PARAM=VALUE"),
        ("bogus_key=1", "gpio_edges=, hotplug=, kernel_modules=, load_irqlab=, module=, "),
        ("bogus_key=1", "modules=, smp=, not bogus_key="),  # was: (got ['bogus_key'] ())
        ('"smp"', "smp=, not 'smp'"),
        ('check_kernel_log="no"', "(check_kernel_log='no'): give True or False"),
        ('devices="edu"', "(devices='edu'): give a list of -device specs, e.g. ['edu']"),
        ('devices=["irqlab"]', "(devices=['irqlab']): the irqlab device is the guest's own"),
        (
            'module={"gpio-edges": 8}, gpio_edges=[4]',
            "@pytest.mark.irqlab(module={'gpio-edges': 8}, gpio_edges=[4]): both set our "
            "driver's gpio_edges: give one of them",
        ),
        (
            'device={"gpio-lines": 16}, gpio_edges=[16]',
            "(gpio_edges=[16]): line 16 is beyond the device's 16 GPIO lines (0 to 15;",
        ),
        (
            'files={"etc/x": "x.bin"}',
            "@pytest.mark.irqlab(files={'etc/x': ...}): guest path 'etc/x' is not absolute",
        ),
        (
            'files={"/proc/x": "x.bin"}',
            "@pytest.mark.irqlab(files={'/proc/x': ...}): /proc/x: no file can be made under",
        ),
    ],
)
def test_bad_marker_values_fail_clearly_before_any_guest(
    pytester: pytest.Pytester, marker: str, said: str
) -> None:
    r = _marker_run(pytester, marker, "x.bin")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert said in out, out
    assert "Traceback" not in out and "ValueError" not in out and "GuestConfigError" not in out


def test_marker_paths_are_the_test_files_and_a_missing_one_is_named(
    pytester: pytest.Pytester,
) -> None:
    r = _marker_run(pytester, 'modules=["mydrv.ko"]')
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert f"not found: {pytester.path / 'mydrv.ko'}" in out, out
    assert "not a kernel module" not in out and "Errno" not in out, out
    r = _marker_run(pytester, 'files={"/lib/firmware/x.bin": "fw/x.bin"}')
    assert f"not found: {pytester.path / 'fw' / 'x.bin'}" in r.stdout.str()


def test_marker_paths_resolve_against_the_test_files_directory(
    pytester: pytest.Pytester,
) -> None:
    """Run from another directory: ``modules=["mydrv.ko"]`` is the file beside the test,
    and so is ``"my dir/x.ko"`` as it stands (it was split: "my" with a parameter)."""
    sub = pytester.mkpydir("drv")
    (sub / "mydrv.ko").write_bytes(b"\x7fELF")
    (sub / "my dir").mkdir()
    (sub / "my dir" / "x.ko").write_bytes(b"\x7fELF")
    (sub / "fw.bin").write_bytes(b"fw")
    (sub / "conftest.py").write_text(  # the plugin's fixture, but for the guest
        "import pytest\n"
        "from irqlab.testing.plugin import fresh_guest_config\n\n"
        "@pytest.fixture\n"
        "def irqlab_fresh_guest(request):\n"
        "    return fresh_guest_config(request)\n"
    )
    (sub / "test_paths.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.irqlab(modules=["mydrv.ko tag=x", "my dir/x.ko"], '
        'files={"/fw.bin": "fw.bin"})\n'
        "def test_paths(irqlab_fresh_guest):\n"
        "    c = irqlab_fresh_guest\n"
        "    print('MODULES', c.extra_modules, 'FILES', c.extra_files)\n"
        "    print('PARAMS', c.extra_module_params)\n"
    )
    elsewhere = pytester.mkdir("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        r = pytester.runpytest_subprocess(
            str(sub / "test_paths.py"), "-s", "-p", "no:cacheprovider"
        )
    r.assert_outcomes(passed=1)
    out = r.stdout.str()
    spaced = sub / "my dir" / "x.ko"
    assert f"MODULES [PosixPath('{sub / 'mydrv.ko'}'), PosixPath('{spaced}')]" in out, out
    assert f"FILES {{'/fw.bin': PosixPath('{sub / 'fw.bin'}')}}" in out, out
    assert "PARAMS {'mydrv': {'tag': 'x'}}" in out, out


@pytest.mark.parametrize(
    ("test", "said"),
    [
        (
            '@pytest.mark.irqlab(device={"irq-mode": "intx"})\n'
            "def test_it(irqlab_agent):\n    pass\n",
            "@pytest.mark.irqlab configures a guest of the test's own, but test_it uses the "
            "shared guest (irqlab_agent), which keeps its defaults: use irqlab_fresh_guest & co "
            "(irqlab_fresh_agent for irqlab_agent)",
        ),
        (
            "@pytest.mark.irqlab(smp=2)\ndef test_it(irqlab_device):\n    pass\n",
            "uses the shared guest (irqlab_agent, irqlab_device), which keeps its defaults: use "
            "irqlab_fresh_guest & co (irqlab_fresh_agent for irqlab_agent, irqlab_fresh_device "
            "for irqlab_device)",
        ),
        (
            "@pytest.mark.irqlab(smp=2)\ndef test_it(irqlab_guest):\n    pass\n",
            "uses the shared guest (irqlab_guest), which keeps its defaults: use "
            "irqlab_fresh_guest & co (irqlab_fresh_guest for irqlab_guest)",
        ),
        (
            "def test_it(irqlab_fresh_device, irqlab_agent):\n    pass\n",
            "test_it uses the shared guest's irqlab_agent and a guest of its own "
            "(irqlab_fresh_guest, irqlab_fresh_device): that is two guests. Use the own "
            "guest's fixtures only (irqlab_fresh_agent for irqlab_agent), or the shared "
            "guest's only",
        ),
        (
            "def test_it(irqlab_fresh_guest, irqlab_wait_stats):\n    pass\n",
            "irqlab.testing.helpers.wait_file_stats(irqlab_fresh_agent, ...) for irqlab_wait_stats",
        ),
        (  # it configured nothing: said once the test ran and passed (at its teardown)
            "@pytest.mark.irqlab(smp=2)\ndef test_it(tmp_path):\n    pass\n",
            "@pytest.mark.irqlab configures a guest of the test's own, but test_it took none: "
            "take irqlab_fresh_guest (or irqlab_fresh_agent, irqlab_fresh_device), as an "
            "argument or through request.getfixturevalue, or drop the marker",
        ),
        (
            "pytestmark = pytest.mark.irqlab(smp=2)\n\ndef test_it():\n    pass\n",
            "but test_it took none: take irqlab_fresh_guest",
        ),
    ],
)
def test_one_guest_per_test_is_checked_before_any_guest_starts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, test: str, said: str
) -> None:
    # were a guest started, it would fail at once on this cache directory, saying so
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makepyfile("import pytest\n\n" + test)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(errors=1, passed=1 if "took none" in said else 0)
    out = " ".join(r.stdout.str().split())  # pytest may wrap the long line
    assert said in out, out
    assert "Traceback" not in out and "prerequisite" not in out, out


# the guest fixtures stand-ins: nothing starts, what they are set up for is what counts
STAND_INS = """
import pytest
from irqlab.testing.plugin import fresh_guest_config

@pytest.fixture
def irqlab_fresh_guest(request):
    return fresh_guest_config(request)

@pytest.fixture
def irqlab_agent():
    return "the shared guest's agent"
"""


@pytest.mark.parametrize(
    ("test", "outcome", "said"),
    [
        (  # the marker's guest taken at run time: no error
            "@pytest.mark.irqlab(smp=2)\ndef test_it(request):\n"
            "    assert request.getfixturevalue('irqlab_fresh_guest').smp == 2\n",
            {"passed": 1},
            "",
        ),
        (
            "def test_it(irqlab_agent, request):\n"
            "    request.getfixturevalue('irqlab_fresh_guest')\n",
            {"failed": 1},
            "test_it uses the shared guest's irqlab_agent and a guest of its own "
            "(irqlab_fresh_guest): that is two guests",
        ),
        (
            "def test_it(request):\n    request.getfixturevalue('irqlab_agent')\n"
            "    request.getfixturevalue('irqlab_fresh_guest')\n",
            {"failed": 1},
            "test_it uses the shared guest's irqlab_agent and a guest of its own",
        ),
        (
            "def test_it(irqlab_fresh_guest, request):\n"
            "    request.getfixturevalue('irqlab_agent')\n",
            {"failed": 1},
            "test_it uses the shared guest's irqlab_agent and a guest of its own",
        ),
        (
            "@pytest.mark.irqlab(smp=2)\ndef test_it(request):\n"
            "    request.getfixturevalue('irqlab_agent')\n",
            {"failed": 1},
            "but test_it uses the shared guest (irqlab_agent), which keeps its defaults",
        ),
    ],
    ids=[
        "marker-guest",
        "agent-then-guest",
        "both-at-run-time",
        "guest-then-agent",
        "marker-agent",
    ],
)
def test_one_guest_per_test_holds_for_fixtures_taken_at_run_time(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    test: str,
    outcome: dict[str, int],
    said: str,
) -> None:
    """request.getfixturevalue takes a fixture the setup's check did not see: the
    marker's guest taken so was refused as "uses none", and two guests went unnoticed."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makeconftest(STAND_INS)
    pytester.makepyfile("import pytest\n\n" + test)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(**outcome)
    out = " ".join(r.stdout.str().split())
    assert said in out, out
    assert "took none" not in out and "uses none" not in out, out


# a session guest stand-in alive to the plugin's look (revive())
LIVE_STAND_IN = """
from types import SimpleNamespace

@pytest.fixture(scope="session")
def irqlab_guest():
    return SimpleNamespace(
        fault=None,
        machine=SimpleNamespace(is_running=lambda: True),
        connection_lost=lambda: None,
    )
"""
IN_A_MODULE_FIXTURE = """
@pytest.fixture(scope="module")
def picks(request):
    return request.getfixturevalue("irqlab_guest")

"""


@pytest.mark.parametrize(
    ("test", "outcome", "said"),
    [
        (
            "def test_it(irqlab_fresh_guest, request):\n"
            "    request.getfixturevalue('irqlab_guest')\n",
            {"failed": 1},
            "test_it uses the shared guest's irqlab_guest and a guest of its own "
            "(irqlab_fresh_guest): that is two guests",
        ),
        (
            "@pytest.mark.irqlab(smp=2)\ndef test_it(request):\n"
            "    request.getfixturevalue('irqlab_guest')\n",
            {"failed": 1},
            "but test_it uses the shared guest (irqlab_guest), which keeps its defaults",
        ),
        (
            IN_A_MODULE_FIXTURE + "def test_it(irqlab_fresh_guest, request):\n"
            "    request.getfixturevalue('picks')\n",
            {"passed": 1, "errors": 1},
            "test_it uses the shared guest's irqlab_guest and a guest of its own "
            "(irqlab_fresh_guest): that is two guests",
        ),
    ],
    ids=["beside-own-guest", "under-marker", "module-fixture-beside-own-guest"],
)
def test_the_session_guest_taken_at_run_time_is_one_guest_too(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    test: str,
    outcome: dict[str, int],
    said: str,
) -> None:
    """The session's irqlab_guest, set up once, taken through getfixturevalue: by the
    test (or a function-scoped fixture of its), refused where it is taken (the plugin's
    watch of the fixture's takes); by a wider-scoped fixture, no fixture setup of the
    test's, said at its teardown, by pytest's list of the fixtures the request used
    (its private ``_request``, which this pins)."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makeconftest(STAND_INS + LIVE_STAND_IN)
    pytester.makepyfile("import pytest\n\n" + test)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(**outcome)
    out = " ".join(r.stdout.str().split())
    assert said in out, out
    assert "took none" not in out, out


def test_a_conftests_autouse_use_of_the_shared_guest_is_not_a_mix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session fixture of the project's (autouse) may hold irqlab_guest, e.g. for a
    kernel-log check after the suite, beside tests of their own guests."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makeconftest(
        "import pytest\n\n"
        "@pytest.fixture(scope='session', autouse=True)\n"
        "def check(irqlab_guest):\n    yield\n"
    )
    pytester.makepyfile("def test_it(irqlab_fresh_guest):\n    pass\n")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert "two guests" not in out and "prerequisite missing" in out, out


def test_path_errors_left_unread_fail_the_test_at_its_end() -> None:
    """irqlab_agent's and irqlab_fresh_agent's end-of-test check."""
    from types import SimpleNamespace

    from irqlab.testing.plugin import _check_path_errors

    events = [{"type": "path_error", "path": "read", "error": "EIO"}, {"type": "event"}]
    client = SimpleNamespace(pending=lambda: list(events), drain_events=events.clear)
    with pytest.raises(AssertionError, match=r"unexpected path errors: .*'path': 'read'"):
        _check_path_errors(SimpleNamespace(fault=None), client)  # type: ignore[arg-type]
    assert events == []  # drained
    events.append({"type": "path_error"})
    _check_path_errors(SimpleNamespace(fault="panic"), client)  # type: ignore[arg-type]


INTERRUPTED_INSIDE = """
import logging, os, signal, time


class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.{sig})
        time.sleep(0.3)  # the handler runs in here


def test_interrupted_while_holding_loggings_lock():
    logging._lock.acquire()
    try:
        os.kill(os.getpid(), signal.{sig})
        time.sleep(0.3)  # the handler runs here: it must not raise now
    except KeyboardInterrupt:
        print("RAISED WHILE HELD")
        raise
    logging._lock.release()
    time.sleep(10)


def test_interrupted_in_a_finaliser():
    Finalised()  # dropped at once: its __del__ runs
    time.sleep(10)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("test", ["holding_loggings_lock", "in_a_finaliser"])
def test_an_interrupt_of_pytest_lands_where_it_cannot_wedge_the_run(
    pytester: pytest.Pytester, sig: str, test: str
) -> None:
    """Ctrl-C (or SIGTERM) raised inside logging's lock left it held (every thread that
    logged then waited for ever: a run that never ended); raised in a finaliser, it was
    "Exception ignored" and the run went on."""
    pytester.makepyfile(INTERRUPTED_INSIDE.replace("{sig}", sig))
    t0 = time.monotonic()
    r = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:xdist", "-s", "-k", test, timeout=60
    )
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == pytest.ExitCode.INTERRUPTED, out
    assert "RAISED WHILE HELD" not in out and "Exception ignored" not in out, out
    assert time.monotonic() - t0 < 9, "the interrupt came only after the test's sleep"


def test_the_plugins_signal_handlers_go_with_the_run(tmp_path: Path) -> None:
    """pytest.main() in a program of one's own: after it, Python's handlers again."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    code = (
        "import signal, sys, pytest\n"
        f"rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', {str(tmp_path)!r}])\n"
        "print(int(rc), signal.getsignal(signal.SIGINT) is signal.default_int_handler,\n"
        "      signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, sys.unraisablehook is\n"
        "      sys.__unraisablehook__)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.stdout.splitlines()[-1] == "0 True True True", (r.stdout, r.stderr)


@pytest.mark.parametrize(
    "error", [EOFError(), OSError(104, "reset"), ValueError("int('x')"), IrqlabError("gone")]
)
def test_the_kernel_log_check_is_quiet_for_a_guest_that_stops_answering(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """A guest that went as its test ended is that test's story: the check added an
    error of its own (SSH's errors but the harness's own escaped it)."""
    import paramiko

    from irqlab.testing import plugin
    from irqlab.vm import kernlog

    def gone(guest: object, *, scan_leaks: bool, raw: bool = False) -> tuple[str, int]:
        raise error

    from types import SimpleNamespace

    monkeypatch.setattr(kernlog, "guest_kernel_log", gone)
    guest = SimpleNamespace(
        fault=None, ssh=object(), machine=SimpleNamespace(is_running=lambda: True)
    )
    log = Path("/nonexistent/dmesg.log")  # never written: nothing to report
    plugin._check_kernel_log(guest, "lead", log)  # type: ignore[arg-type]
    error = paramiko.SSHException("no session")  # paramiko's own: not an OSError
    plugin._check_kernel_log(guest, "lead", log)  # type: ignore[arg-type]


def test_a_workers_notice_starts_a_line_of_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    """Under xdist a worker's notice goes to the controller's stderr, which may be in the
    middle of a test's line (-v): it starts a line of its own."""
    import contextlib
    from types import SimpleNamespace

    from irqlab.testing.plugin import _terminal_sink

    capture = SimpleNamespace(global_and_fixture_disabled=contextlib.nullcontext)
    plugins = {"terminalreporter": object(), "capturemanager": capture}
    config = SimpleNamespace(
        workerinput={"workerid": "gw1"},
        pluginmanager=SimpleNamespace(get_plugin=plugins.get),
    )
    _terminal_sink(config)("irqlab: the session guest died (x); starting a new one")  # type: ignore[arg-type]
    assert capsys.readouterr().err == "\nirqlab: the session guest died (x); starting a new one\n"


def _marked_config_run(pytester: pytest.Pytester, test: str) -> pytest.RunResult:
    """Run *test* (its irqlab_fresh_guest is the GuestConfig the plugin makes of its
    markers, printed, and the merged markers' keywords) without a guest."""
    pytester.makeconftest(
        "import pytest\n"
        "from irqlab.testing.plugin import fresh_guest_config, irqlab_marker\n\n"
        "@pytest.fixture\n"
        "def irqlab_fresh_guest(request):\n"
        "    c = fresh_guest_config(request)\n"
        "    print('CONFIG', c.smp, c.module_params, c.device_props, sorted(c.extra_files))\n"
        "    print('KEYWORDS', dict(irqlab_marker(request.node).kwargs))\n"
        "    return c\n"
    )
    (pytester.path / "x.bin").write_bytes(b"x")
    pytester.makepyfile(test_marked="import pytest\n\n" + test)
    return pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "-p", "no:xdist")


def test_stacked_and_module_level_markers_are_merged(pytester: pytest.Pytester) -> None:
    """``pytestmark = pytest.mark.irqlab(smp=2)`` beside the test's own marker, or two
    markers on one test: only the closest one was read (1 vCPU)."""
    r = _marked_config_run(
        pytester,
        "pytestmark = pytest.mark.irqlab(smp=2, module={'wakeup': 'thread', 'uio': 0},\n"
        "                                 files={'/a': 'x.bin'}, check_kernel_log=False)\n\n"
        "@pytest.mark.irqlab(module={'wakeup': 'workqueue'}, device={'fifo-depth': 8})\n"
        "def test_module_and_own(irqlab_fresh_guest):\n    pass\n\n"
        "class TestClass:\n"
        "    pytestmark = pytest.mark.irqlab(smp=3, files={'/b': 'x.bin'})\n\n"
        "    @pytest.mark.irqlab(device={'fifo-depth': 8, 'evq-depth': 16})\n"
        "    @pytest.mark.irqlab(device={'fifo-depth': 4}, smp=4)\n"
        "    def test_stacked(self, irqlab_fresh_guest):\n        pass\n",
    )
    r.assert_outcomes(passed=2)
    out = r.stdout.str()
    assert (
        "CONFIG 2 {'wakeup': 'workqueue', 'uio': 0} {'fifo-depth': 8} ['/a']\n"
        "KEYWORDS {'smp': 2, 'module': {'wakeup': 'workqueue', 'uio': 0}, "
        "'files': {'/a': 'x.bin'}, 'check_kernel_log': False, 'device': {'fifo-depth': 8}}"
    ) in out, out
    # of two decorators the lower one is the closer (pytest's order)
    assert (
        "CONFIG 4 {'wakeup': 'thread', 'uio': 0} {'fifo-depth': 4, 'evq-depth': 16} ['/a', '/b']"
    ) in out, out


def test_a_bad_dict_in_any_marker_is_named(pytester: pytest.Pytester) -> None:
    """A farther marker's ``module=[...]`` is not dropped behind a closer one's dict."""
    r = _marked_config_run(
        pytester,
        "pytestmark = pytest.mark.irqlab(module=['mydrv.ko'])\n\n"
        "@pytest.mark.irqlab(module={'uio': 1})\n"
        "def test_it(irqlab_fresh_guest):\n    pass\n",
    )
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert "@pytest.mark.irqlab(module=['mydrv.ko']): give a dict" in out, out
    assert "Traceback" not in out, out


HARNESS_FAILURES = """
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.contract import uapi
from irqlab.testing.helpers import DeviceControl
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.qmp.injector import Injector
from irqlab.vm.ssh import RunResult
from qemu_double import Refusing
from ssh_double import silent_ssh


@pytest.fixture
def agent(tmp_path):
    spec = tmp_path / "abi.json"
    spec.write_text(uapi.abi_json(uapi.header_path()))
    client = AgentClient.spawn_local(["--spec", str(spec)], logs=tmp_path / "logs")
    client.wait_hello(20)
    yield client
    client.close()


def test_agent_expect(agent):
    agent.expect(path="read", timeout=0)


def test_agent_events(agent):
    agent.events(2, timeout=0)


def test_agent_request(agent):
    agent.request("no_such_op")


def test_qmp(tmp_path):
    Injector(Refusing()).push(1)


def test_guest_qmp(tmp_path):
    from irqlab.vm.guest import _FaultNamingQmp

    machine = Refusing()
    guest = SimpleNamespace(machine=machine, fault=None, _closes=0)
    Injector(_FaultNamingQmp(guest, machine)).push(1)


def test_device_wait(tmp_path):
    device = DeviceControl.__new__(DeviceControl)
    device.counters = lambda: "the counters"
    device.wait_counters(lambda c: False, timeout=0)


def test_guest_sh(tmp_path):
    g = Guest(GuestConfig())
    g.ssh = SimpleNamespace(run=lambda cmd, **kw: RunResult(1, "", "no such file"))
    g.sh("cat /nonexistent")


def test_ssh_timeout(tmp_path):
    silent_ssh().run("sleep 100", timeout=0.1)


def test_guest_reload_module(tmp_path):
    g = Guest(GuestConfig())
    g.driver_ko = Path(__file__).parent / "irqlab.ko"  # a stand-in: .modinfo only
    g.reload_module(wakup="thread")


def test_wait_file_stats(agent):
    from irqlab.testing.helpers import wait_file_stats

    wait_file_stats(agent, "h", lambda st: True, timeout=0)


def test_a_bug_keeps_its_frames(agent):
    agent.expect(path="read", timeout="soon")
"""


SILENT_SSH = """
import threading

import paramiko

from irqlab.vm.ssh import SshClient


class Channel:
    def __init__(self):
        self.status_event = threading.Event()  # never set: the command never ends

    def settimeout(self, t):
        pass

    def exec_command(self, cmd):
        pass

    def shutdown_write(self):
        pass

    def recv(self, n):
        return b""

    recv_stderr = recv

    def close(self):
        pass


class Transport:
    def __init__(self):
        self.channels = 0

    def is_active(self):
        return True

    def set_keepalive(self, interval):
        pass

    def open_session(self, timeout=None):
        self.channels += 1
        if self.channels > 1:
            raise paramiko.SSHException("no second channel")
        return Channel()


class Client:
    transport = Transport()

    def connect(self, hostname, **kw):
        pass

    def get_transport(self):
        return self.transport

    def close(self):
        pass


def silent_ssh():
    pkey = paramiko.Ed25519Key.__new__(paramiko.Ed25519Key)
    return SshClient("127.0.0.1", 2222, pkey=pkey, client_factory=Client).connect(timeout=5)
"""


def test_a_failure_in_the_harness_shows_the_tests_line_and_the_cause(
    pytester: pytest.Pytester,
) -> None:
    """An agent timeout, a refused QMP command, a failed guest command: pytest showed
    some 35 lines of the harness's source around each raise; now the test's own line
    and the error, whichever harness function raised it (every module of irqlab.vm
    and irqlab.build hides its frames, ``__tracebackhide__ = hide_frame``: functions
    without one of their own showed their source).  A bug's error (here a TypeError)
    keeps the harness's frames."""
    pytester.makepyfile(test_harness=HARNESS_FAILURES)
    pytester.makepyfile(  # QEMU's side, outside the test file (as the harness is)
        qemu_double="from irqlab.vm.qmp.errors import QMPCommandError\n\n"
        "class Refusing:\n"
        "    def qmp(self, command, args=None, /):\n"
        "        raise QMPCommandError(command, args or {}, 'GenericError', 'refused here')\n"
    )
    pytester.makepyfile(ssh_double=SILENT_SSH)  # a guest whose command never ends
    _fake_ko(pytester.path / "irqlab.ko", "irqlab", params=IRQLAB_PARAMS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(failed=11)
    out = r.stdout.str()
    parts = re.split(r"\n_{3,} (test_\w+) _{3,}\n", out.split(" FAILURES ", 1)[1])
    by_name = dict(zip(parts[1::2], parts[2::2], strict=True))
    said = {
        "test_agent_expect": "AgentTimeout: no message matching",
        "test_agent_events": "AgentTimeout: got 0 of 2 event messages",
        "test_agent_request": "AgentRefused: agent op 'no_such_op'",
        "test_qmp": "DeviceRejected: ",
        "test_guest_qmp": "DeviceRejected: ",
        "test_device_wait": "WaitTimeout: the device counters never satisfied",
        "test_guest_sh": "CommandError: ",
        # a harness function without a __tracebackhide__ of its own between them
        # (check_module_params, wait_file_stats' fetch) showed its source, ~40 lines
        "test_guest_reload_module": "GuestConfigError: unknown parameter of irqlab.ko: wakup",
        "test_wait_file_stats": "AgentRefused: agent op 'ioctl' ",
        "test_ssh_timeout": "SshTimeout: timeout (0.1s) running: sleep 100 (it may still run "
        "in the guest: killing it failed: no second channel)",
    }
    for name, error in said.items():
        text = by_name[name]
        assert error in text, text
        # only the test's own source: no frame of the harness
        assert "harness/irqlab" not in text and "irqlab/vm/" not in text, text
        assert len(text.splitlines()) < 25, text
    bug = by_name["test_a_bug_keeps_its_frames"]
    assert "TypeError" in bug and "agent_client.py" in bug, bug


def test_a_cache_that_cannot_be_written_does_not_stop_the_e2e_collection(tmp_path: Path) -> None:
    """tests/e2e's conftest asks which guest architectures are built: with a cache it
    cannot write, collection ended in "ImportError while loading conftest"; now the
    tests are collected and their setup names the cache (end-to-end prerequisite)."""
    from irqlab.paths import repo_root

    (tmp_path / "file").write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/e2e/test_boot.py"],
        capture_output=True, text=True, check=False, cwd=repo_root(),
        env={**os.environ, "IRQLAB_CACHE_DIR": str(tmp_path / "file" / "cache")},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ImportError while loading conftest" not in r.stdout + r.stderr
    assert "test_boot.py::test_boot_and_first_command" in r.stdout


def test_the_markers_devices_become_the_guests_extra_devices(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(  # the plugin's fixture, but for the guest
        "import pytest\n"
        "from irqlab.testing.plugin import fresh_guest_config\n\n"
        "@pytest.fixture\n"
        "def irqlab_fresh_guest(request):\n"
        "    return fresh_guest_config(request)\n"
    )
    pytester.makepyfile(
        test_devices="""
        import pytest

        @pytest.mark.irqlab(devices=["edu", "pci-testdev,id=t"], load_irqlab=False)
        def test_it(irqlab_fresh_guest):
            assert irqlab_fresh_guest.extra_devices == ("edu", "pci-testdev,id=t")
            assert not irqlab_fresh_guest.load_irqlab
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist").assert_outcomes(
        passed=1
    )


def test_a_module_that_is_no_kernel_module_is_the_users_mistake_not_a_missing_build(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker's module that is no ELF file said "end-to-end prerequisite missing",
    as if irqlab had not been built; it is refused before anything boots."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makefile(".ko", mydrv="not a module\n")
    pytester.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.irqlab(modules=['mydrv.ko'], load_irqlab=False)\n"
        "def test_it(irqlab_fresh_guest):\n    pass\n"
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(errors=1)
    out = " ".join(r.stdout.str().split())
    assert "the guest 'fresh' cannot load a module it was given: extra module" in out, out
    assert "mydrv.ko is not a kernel module: not an ELF file" in out, out
    assert "prerequisite missing" not in out and "Traceback" not in out, out


@pytest.mark.parametrize(
    ("marker", "said"),
    [
        ("hotplug='no'", "@pytest.mark.irqlab(hotplug='no'): give True or False"),
        ("load_irqlab='false'", "@pytest.mark.irqlab(load_irqlab='false'): give True or False"),
    ],
)
def test_a_flag_of_the_marker_that_is_no_bool_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, marker: str, said: str
) -> None:
    """bool("false") is True: load_irqlab="false" loaded our driver, hotplug="no" added
    the root port."""
    out = _marker_refused(pytester, monkeypatch, marker)
    assert said in out, out


def _marker_refused(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, marker: str) -> str:
    """The output of a run whose one test's marker (``irqlab(<marker>)``) is refused at
    setup, before any guest starts (one would fail at once on this cache directory)."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makepyfile(
        f"import pytest\n\n@pytest.mark.irqlab({marker})\n"
        "def test_it(irqlab_fresh_guest):\n    pass\n"
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(errors=1)
    return r.stdout.str()


def test_a_bad_device_property_in_the_marker_is_said_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was said, then "During handling of the above exception", then said again."""
    out = _marker_refused(pytester, monkeypatch, "device={'nonesuch': 1}")
    # (the short summary may repeat the message: the error itself is said once)
    assert "has no property 'nonesuch'" in out, out
    assert "During handling" not in out and "another exception occurred" not in out, out


def test_a_relative_log_dir_from_the_environment_is_made_absolute(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that changed directory re-resolved a relative $IRQLAB_LOG_DIR against it."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", "rel-logs")
    pytester.makepyfile(
        "import os\n\n"
        "def test_it(tmp_path):\n"
        "    os.chdir(tmp_path)\n"
        f"    assert os.environ['IRQLAB_LOG_DIR'] == {str(pytester.path / 'rel-logs')!r}\n"
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(passed=1)


@pytest.mark.parametrize("var", ["IRQLAB_CACHE_KEEP", "IRQLAB_SNAPSHOT_KEEP"])
def test_start_guest_fails_a_bad_keep_count_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    """Set after the run's start (a test's monkeypatch): said as another environment
    value a guest cannot take is, before anything is looked for, not a raw traceback."""
    from irqlab.testing.plugin import start_guest
    from irqlab.vm.guest import Guest

    monkeypatch.setenv(var, "all")
    monkeypatch.setattr(Guest, "find_prerequisites", lambda self: pytest.fail("looked further"))
    with pytest.raises(pytest.fail.Exception) as e:
        start_guest()
    assert str(e.value).startswith(
        f"the guest's configuration cannot work: {var}='all': expected how many"
    ), e.value
    assert e.value.pytrace is False


def test_a_configuration_error_the_start_of_a_marked_guest_finds_names_the_marker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module parameter our driver refuses (found at the start, reading the driver:
    the marker's own checks cannot) is said as the marker's other errors are."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(
        "from irqlab.vm.guest import Guest, GuestConfigError\n\n"
        "def start(self):\n"
        "    raise GuestConfigError(\"parameter wakeup of irqlab.ko: 'sometimes' is none of \"\n"
        '                           "hardirq, thread, workqueue")\n\n'
        "Guest.start = start\n"
    )
    pytester.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.irqlab(module={'wakeup': 'sometimes'})\n"
        "def test_marked(irqlab_fresh_guest):\n    pass\n\n"
        "def test_unmarked(irqlab_fresh_guest):\n    pass\n"
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(errors=2)
    out = r.stdout.str()
    assert (
        "\n@pytest.mark.irqlab(module={'wakeup': 'sometimes'}): parameter wakeup of irqlab.ko: "
        "'sometimes' is none of hardirq, thread, workqueue\n"
    ) in out, out
    assert (
        "\nthe guest's configuration cannot work: parameter wakeup of irqlab.ko: 'sometimes'"
    ) in out, out


def test_a_notice_to_a_terminal_that_is_gone_is_lost_not_raised() -> None:
    """``pytest | head`` or a cancelled CI runner: the notice's BrokenPipeError, raised
    in the plugin's pytest_keyboard_interrupt, skipped every other plugin's hook."""
    import contextlib
    from types import SimpleNamespace

    from irqlab.testing.plugin import _terminal_sink

    class GoneReporter:
        def write_line(self, line: str, **kw: object) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    capture = SimpleNamespace(global_and_fixture_disabled=contextlib.nullcontext)
    plugins = {"terminalreporter": GoneReporter(), "capturemanager": capture}
    config = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=plugins.get))
    _terminal_sink(config)("irqlab: the run was interrupted")  # type: ignore[arg-type]
