"""Each error path a user meets gives one line naming the cause and the fix, and no
traceback: a Buildroot image not built, an unusable cache directory, a failing build,
a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab import paths
from irqlab.build import buildroot
from irqlab.build.arch import build_module_command
from irqlab.build.steps import BuildError
from irqlab.cli.main import main
from irqlab.vm.guest import Guest, PrerequisiteMissing

IRQLAB = [sys.executable, "-m", "irqlab.cli.main"]


def test_buildroot_image_not_built_says_build_it_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IRQLAB_IMAGE", "buildroot")
    monkeypatch.setattr(
        "irqlab.build.qemu.find_qemu", lambda: SimpleNamespace(binary=Path("q"), datadir=None)
    )
    with pytest.raises(PrerequisiteMissing, match=r"build it with 'irqlab buildroot-build'"):
        Guest().find_prerequisites()


def test_buildroot_outside_a_checkout_says_it_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    with pytest.raises(buildroot.BuildrootError, match="from a source checkout of irqlab"):
        buildroot.ensure_image(build=False)


@pytest.mark.parametrize("command", [["build-qemu"], ["run", "--", "true"], ["kdir"]])
def test_an_unusable_cache_dir_is_one_line_naming_the_variable(
    tmp_path: Path, command: list[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    r = subprocess.run(
        [*IRQLAB, *command],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "IRQLAB_CACHE_DIR": str(afile / "cache")},
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"IRQLAB_CACHE_DIR={afile / 'cache'}" in lines[0] and "not writable" in lines[0]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            BuildError("configure", Path("/x/qemu.log")),
            "step 'configure' failed (log: /x/qemu.log)",
        ),
        (PermissionError(13, "Permission denied", "/x/ccache"), "Permission denied: /x/ccache"),
        (
            subprocess.CalledProcessError(100, ["apt-get", "source", "qemu"]),
            "'apt-get source qemu' failed with exit status 100",
        ),
    ],
)
def test_build_qemu_failures_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    line: str,
) -> None:
    def fail(**kw: object) -> None:
        raise error

    monkeypatch.setattr("irqlab.build.qemu.ensure_qemu", fail)
    assert main(["build-qemu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err and "Traceback" not in err, err


def test_a_closed_pipe_ends_quietly() -> None:
    p = subprocess.Popen([*IRQLAB, "regs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader is gone before irqlab writes (like `| head` that exited)
    assert p.wait(60) == 141
    assert p.stderr.read() == b""


def test_regs_piped_into_head() -> None:
    r = subprocess.run(
        f"{' '.join(IRQLAB)} regs | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.stdout.startswith("IRQLAB_") and r.stderr == ""


def test_buildroot_check_without_a_tree_names_the_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(buildroot.SOURCE_DIR_ENV, raising=False)
    assert main(["buildroot-check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "--tree DIR" in err and "--download" in err and buildroot.SOURCE_DIR_ENV in err


def test_qemu_not_built_names_the_irqlab_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a cache of its own: another process building QEMU in the user's (its lock held)
    # made the message "QEMU ... is being built: process N is ..." (a flaky failure)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("irqlab.build.qemu.find_qemu", lambda: None)
    with pytest.raises(PrerequisiteMissing, match="run `irqlab build-qemu`"):
        Guest().find_prerequisites()


def test_no_hint_names_an_invoke_build_task() -> None:
    """invoke and tasks.py are not in the wheel: what the package tells users to run
    is an `irqlab` command (docstrings aside)."""
    import ast
    import re

    hint = re.compile(r"invoke (build|buildroot)")
    root = Path(paths.__file__).parent
    found = []
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        found += [
            f"{f.relative_to(root)}:{n.lineno}: {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and hint.search(n.value)
        ]  # fmt: skip
    assert not found


@pytest.mark.parametrize("guest", ["x86_64", "aarch64"])
def test_kdir_prints_the_path_and_for_a_cross_build_how_to_make(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], guest: str
) -> None:
    from irqlab.build import arch

    def kernel(arch: arch.Arch) -> SimpleNamespace:
        return SimpleNamespace(headers_build_dir=Path(f"/h/{arch.name}"), arch=arch)

    monkeypatch.setattr("irqlab.build.kernel.ensure_kernel", kernel)
    monkeypatch.setattr("irqlab.build.arch.host_deb_arch", lambda: "amd64")
    monkeypatch.setattr("irqlab.build.archguest._foreign_deb_arches", lambda: ["arm64"])
    monkeypatch.setenv("IRQLAB_ARCH", guest)
    assert main(["kdir"]) == 0
    out, err = capsys.readouterr()
    assert out == f"/h/{guest}\n"  # stdout stays the path: $(irqlab kdir)
    if guest == "x86_64":
        assert err == ""
    else:
        assert err.count("\n") == 1
        assert f"`{build_module_command('aarch64')}`" in err
        assert "ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-" in err
    # the Buildroot guest's kernel is another: kdir says so (it printed the Debian
    # headers without a word); stdout stays the path
    monkeypatch.setenv("IRQLAB_IMAGE", "buildroot")
    assert main(["kdir"]) == 0
    out, err = capsys.readouterr()
    assert out == f"/h/{guest}\n"
    assert "these are the Debian image's kernel headers; for the Buildroot guest" in err


def test_kdir_of_an_architecture_apt_does_not_know_says_how_to_add_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`irqlab kdir --arch aarch64` on a host without the arm64 architecture said
    "package linux-image-arm64 not found in the apt lists (run apt-get update?)"."""
    monkeypatch.setattr("irqlab.build.arch.host_deb_arch", lambda: "amd64")
    monkeypatch.setattr("irqlab.build.archguest._foreign_deb_arches", lambda: [])
    monkeypatch.setattr("irqlab.build.kernel.ensure_kernel", None)  # would fail loudly
    assert main(["kdir", "--arch", "aarch64"]) == 1
    assert capsys.readouterr().err == (
        "irqlab: apt does not know Debian's arm64 packages: run "
        "`dpkg --add-architecture arm64 && apt-get update` (as root) once\n"
    )


@pytest.mark.parametrize(
    ("cause", "notes", "printed"),
    [
        # Guest.start notes where the guest's logs are on its error: the command prints it
        ("the cause", ["logs: /some/where"], "irqlab: the cause\nirqlab: logs: /some/where\n"),
        (
            "QEMU failed",
            ["logs: /some/where", "another note"],
            "irqlab: QEMU failed\nirqlab: logs: /some/where\nirqlab: another note\n",
        ),
    ],
    ids=["noted", "two-notes"],
)
def test_an_errors_notes_follow_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cause: str,
    notes: list[str],
    printed: str,
) -> None:
    def fail(**kw: object) -> None:
        e = PrerequisiteMissing(cause)
        for note in notes:
            e.add_note(note)
        raise e

    monkeypatch.setattr("irqlab.build.qemu.ensure_qemu", fail)
    assert main(["build-qemu"]) == 1
    assert capsys.readouterr().err == printed


def test_the_accelerators_explanation_comes_before_qemus_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`irqlab run --accel kvm` where KVM does not work showed QEMU's assertion (and the
    console) first and the KVM probe's explanation last."""

    def fail(**kw: object) -> None:
        e = PrerequisiteMissing("QEMU exited with status 134\n--- QEMU said\nassertion failed")
        e.add_note("logs: /x/logs")
        e.add_note("accelerator: kvm forced by --accel kvm (the probe found no KVM here)")
        raise e

    monkeypatch.setattr("irqlab.build.qemu.ensure_qemu", fail)
    assert main(["build-qemu"]) == 1
    assert capsys.readouterr().err == (
        "irqlab: accelerator: kvm forced by --accel kvm (the probe found no KVM here)\n"
        "irqlab: QEMU exited with status 134\n--- QEMU said\nassertion failed\n"
        "irqlab: logs: /x/logs\n"
    )


@pytest.mark.parametrize(
    ("variable", "command", "said"),
    [
        ("IRQLAB_ACCEL", ["run", "-n", "--", "true"], "$IRQLAB_ACCEL must be kvm, tcg or auto"),
        ("IRQLAB_ACCEL", ["shell"], "$IRQLAB_ACCEL must be kvm, tcg or auto"),
        ("IRQLAB_ACCEL", ["probe-accel", "--qemu", sys.executable], "$IRQLAB_ACCEL must be"),
        ("IRQLAB_ARCH", ["run", "--", "true"], "IRQLAB_ARCH='bogus': no such architecture"),
        ("IRQLAB_ARCH", ["kdir"], "IRQLAB_ARCH='bogus': no such architecture"),
        ("IRQLAB_ARCHES", ["build-qemu"], "IRQLAB_ARCHES='bogus': no such architecture"),
        ("IRQLAB_IMAGE", ["run", "--", "true"], "IRQLAB_IMAGE='bogus': use 'debian'"),
        # exit 1, and only once a build or a snapshot's save ran (a cache hit: never)
        ("IRQLAB_CACHE_KEEP", ["run", "--", "true"], "IRQLAB_CACHE_KEEP='bogus': expected how"),
        ("IRQLAB_CACHE_KEEP", ["shell"], "IRQLAB_CACHE_KEEP='bogus': expected how many"),
        ("IRQLAB_SNAPSHOT_KEEP", ["run", "--", "true"], "IRQLAB_SNAPSHOT_KEEP='bogus': expected"),
        ("IRQLAB_SNAPSHOT_KEEP", ["shell", "--cold"], "IRQLAB_SNAPSHOT_KEEP='bogus': expected"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    command: list[str],
    said: str,
) -> None:
    """One line naming the variable, status 2 as for a bad option (a traceback and 1
    before for IRQLAB_ACCEL and IRQLAB_ARCHES), and nothing built or started."""

    def nothing(*a: object, **kw: object) -> None:
        raise AssertionError("started something")

    started = ("qemu.ensure_qemu", "qemu.find_qemu", "kernel.ensure_kernel")
    for name in started:
        monkeypatch.setattr(f"irqlab.build.{name}", nothing)
    monkeypatch.setattr("irqlab.vm.accel.run_probe_guest", nothing)
    monkeypatch.setenv(variable, "bogus")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and "Traceback" not in err, err


def test_the_accel_option_is_named_as_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--accel`` of probe-accel, run and shell is said as the option (it was "accel='tcg'
    argument", and run's "$IRQLAB_ACCEL=kvm" though the user typed --accel)."""
    from irqlab.cli.guestcmd import guest_config
    from irqlab.cli.main import build_parser
    from irqlab.vm import accel

    monkeypatch.setenv(accel.ENV_VAR, "auto")  # restored afterwards: --accel sets them
    monkeypatch.setenv(accel.SOURCE_ENV, "")
    qemu = _fake_qemu(tmp_path)
    assert main(["probe-accel", "--qemu", str(qemu), "--accel", "tcg"]) == 0
    out, err = capsys.readouterr()
    assert out == "tcg\n" and err.startswith("tcg forced by --accel tcg"), err
    guest_config(build_parser().parse_args(["run", "--accel", "kvm", "--", "true"]), "t")
    assert accel.choose(qemu).reason.startswith("kvm forced by --accel kvm")


@pytest.mark.parametrize("value", ["bogus", ""])
def test_probe_accel_takes_only_its_choices(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["probe-accel", "--accel", value])
    assert e.value.code == 2 and "argument --accel: invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["probe-accel"], ["run", "--", "true"], ["build-qemu"]])
@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"IRQLAB_QEMU_SOURCE": "bogus"}, "IRQLAB_QEMU_SOURCE='bogus': expected 'debian'"),
        (
            {"IRQLAB_QEMU_SOURCE": "upstream", "IRQLAB_QEMU_UPSTREAM_VERSION": "1"},
            "IRQLAB_QEMU_UPSTREAM_VERSION='1': no pinned checksum",
        ),
    ],
)
def test_a_bad_qemu_source_is_named_not_taken_for_an_unbuilt_qemu(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    env: dict[str, str],
    said: str,
) -> None:
    """probe-accel said "no built QEMU", run "QEMU ... is not built": the value is what
    is wrong, as build-qemu says (which said it as a failed build step, status 1)."""

    def no_apt(*a: object) -> None:
        raise AssertionError("asked apt")

    monkeypatch.setattr("irqlab.build.qemu._apt_versions", no_apt)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


def _fake_qemu(tmp_path: Path) -> Path:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.0'\n")
    qemu.chmod(0o755)
    return qemu


@pytest.mark.parametrize(
    ("qemu", "said"),
    [
        ("/bin/true", "--qemu /bin/true: not a QEMU binary (its --version does not say"),
        ("/tmp", "--qemu /tmp: is a directory, not a QEMU binary"),
        ("/nonexistent/qemu", "--qemu /nonexistent/qemu: no such file"),
        # a bare name is looked up on PATH (running it did that): true is found, and is
        # no QEMU; a name PATH lacks is no file here either
        ("true", "/true: not a QEMU binary (its --version does not say"),
        ("irqlab-no-such-qemu", "--qemu irqlab-no-such-qemu: no such file"),
    ],
)
def test_probe_accel_refuses_what_is_no_qemu_binary(
    capsys: pytest.CaptureFixture[str], qemu: str, said: str
) -> None:
    """/bin/true was 'probed' (tcg, exit 0) and /tmp said 'Permission denied', exit 1."""
    assert main(["probe-accel", "--qemu", qemu]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


def test_probe_accel_says_a_qemu_that_cannot_start_could_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cached QEMU in a fresh container lacks its shared libraries: probe-accel said
    "not a QEMU binary (its --version does not say ...)" (exit 2) for a binary that
    never started; it says it could not run it, with the loader's words (exit 1)."""
    qemu = tmp_path / "qemu-system-x86_64"
    loader = (
        "error while loading shared libraries: libslirp.so.0: "
        "cannot open shared object file: No such file or directory"
    )
    qemu.write_text(f"#!/bin/sh\necho '{qemu}: {loader}' >&2\nexit 127\n")
    qemu.chmod(0o755)
    assert main(["probe-accel", "--qemu", str(qemu)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--qemu {qemu}: could not run it: {loader}" in err
    assert "not a QEMU binary" not in err


def test_probe_accel_fresh_probes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cached verdict answered at once whatever --timeout said, with no way to probe
    again."""
    from irqlab.vm import accel

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(accel.ENV_VAR, "auto")
    monkeypatch.setattr(accel, "_kvm_usable", lambda: None)
    monkeypatch.setattr(accel, "_cache", {})
    runs: list[float] = []

    def probe_guest(binary: Path, how: str, *, datadir: object, timeout: float) -> object:
        runs.append(timeout)
        return accel.ProbeResult(False, "no long mode")

    monkeypatch.setattr(accel, "run_probe_guest", probe_guest)
    qemu = str(_fake_qemu(tmp_path))
    assert main(["probe-accel", "--qemu", qemu]) == 0
    accel._cache.clear()  # as in a new process: the verdict on disk
    assert main(["probe-accel", "--qemu", qemu, "--timeout", "0.5"]) == 0
    assert runs == [5.0] and "(cached verdict)" in capsys.readouterr().err
    assert main(["probe-accel", "--qemu", qemu, "--timeout", "0.5", "--fresh"]) == 0
    assert runs == [5.0, 0.5]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--tree", "/nonexistent", "--download"], "'/nonexistent': no such directory"),
        (["--tree", "/nonexistent"], "argument --tree: '/nonexistent': no such directory"),
        (["--tree", "/", "--download"], "argument --download: not allowed with argument --tree"),
    ],
)
def test_buildroot_check_takes_a_tree_or_the_download(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """--download won silently over --tree (and tried the internet)."""
    with pytest.raises(SystemExit) as e:
        main(["buildroot-check", *argv])
    assert e.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--bogus"], "irqlab: error: unrecognized arguments: --bogus"),
        (["kdir", "--arch", ""], "argument --arch: unknown architecture ''"),
        (["inject", "--device-id", "", "push", "1"], "argument --device-id: an empty id"),
        (["inject", "push", "1", "--device-id", " "], "argument --device-id: an empty id"),
    ],
)
def test_an_empty_or_unknown_value_is_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """`irqlab --bogus` said only that COMMAND is required; `kdir --arch ''` meant the
    default; `--device-id ''` got QOM's "Property 'container.counters' not found"."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_an_empty_put_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """It said "--put : is a directory, not a file"."""
    assert main(["run", "--put", "", "--", "true"]) == 2
    assert capsys.readouterr().err == "irqlab: --put '': an empty path: give a file\n"
