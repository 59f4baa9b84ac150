"""The pytest plugin's options, marker arguments and fixture names, without a VM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.testing.plugin import gpio_mask

pytest_plugins = ["pytester"]


def test_gpio_edges_as_lines_or_mask() -> None:
    assert gpio_mask([0, 5]) == 0b100001
    assert gpio_mask(0x30) == 0x30
    with pytest.raises(pytest.fail.Exception, match="give a bit mask or a list of lines"):
        gpio_mask("all")
    with pytest.raises(pytest.fail.Exception, match="99 is not a line number"):
        gpio_mask([99])


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
        def test_env(irqlab_log_dir):
            print("ACCEL", os.environ["IRQLAB_ACCEL"])
            print("IMAGE", os.environ.get("IRQLAB_IMAGE"))
            print("LOGS", irqlab_log_dir)
        """
    )
    r = pytester.runpytest_subprocess("-s", "--irqlab-accel", "tcg", "--irqlab-image", "debian")
    r.assert_outcomes(passed=1)
    out = r.stdout.str()
    assert "ACCEL tcg" in out and "IMAGE debian" in out
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


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--irqlab-accel", "bogus"], {}, "--irqlab-accel 'bogus': use one of kvm, tcg, auto"),
        ([], {"IRQLAB_ACCEL": "bogus"}, "$IRQLAB_ACCEL='bogus' (no --irqlab-accel given)"),
        (["--irqlab-image", "fedora"], {}, "--irqlab-image 'fedora': use one of debian, buildroot"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_at_startup(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    said: str,
) -> None:
    for var in ("IRQLAB_ACCEL", "IRQLAB_IMAGE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    pytester.makepyfile("def test_never(irqlab_log_dir):\n    pass\n")
    r = pytester.runpytest_subprocess(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert said in err, err
    assert "Traceback" not in err + r.stdout.str()
    r = pytester.runpytest_subprocess("--irqlab-accel", "TCG", "--irqlab-image", "debian")
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
        ('modules="mydrv.ko"', "(modules='mydrv.ko'): give a list of .ko files"),
    ],
)
def test_bad_marker_values_fail_clearly_before_any_guest(
    pytester: pytest.Pytester, marker: str, said: str
) -> None:
    r = _marker_run(pytester, marker)
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert said in out, out
    assert "Traceback" not in out and "ValueError" not in out, out


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
    """Run from another directory: ``modules=["mydrv.ko"]`` is the file beside the test."""
    sub = pytester.mkpydir("drv")
    (sub / "mydrv.ko").write_bytes(b"\x7fELF")
    (sub / "fw.bin").write_bytes(b"fw")
    (sub / "test_paths.py").write_text(
        "import pytest\n"
        "from irqlab.testing.plugin import fresh_guest_config\n\n"
        '@pytest.mark.irqlab(modules=["mydrv.ko"], files={"/fw.bin": "fw.bin"})\n'
        "def test_paths(request):\n"
        "    c = fresh_guest_config(request)\n"
        "    print('MODULES', c.extra_modules, 'FILES', c.extra_files)\n"
    )
    elsewhere = pytester.mkdir("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        r = pytester.runpytest_subprocess(
            str(sub / "test_paths.py"), "-s", "-p", "no:cacheprovider"
        )
    r.assert_outcomes(passed=1)
    out = r.stdout.str()
    assert f"MODULES [PosixPath('{sub / 'mydrv.ko'}')]" in out, out
    assert f"FILES {{'/fw.bin': PosixPath('{sub / 'fw.bin'}')}}" in out, out
