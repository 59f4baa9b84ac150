"""The Buildroot image per guest architecture (issue 17): ``irqlab buildroot-build --arch``,
the defconfig, output directory and cache key of each architecture, and a missing
aarch64 Buildroot image named with the command that builds it.  The build itself needs
the internet (GitHub Actions); what the finished output becomes is in
test_buildroot_tree.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.build import buildroot
from irqlab.build.arch import AARCH64, ARCHES, X86_64, Arch
from irqlab.build.steps import StepLog
from irqlab.cli.main import main
from irqlab.paths import repo_root
from irqlab.vm.guest import Guest, GuestConfig, PrerequisiteMissing

BUILT = [ARCHES[name] for name in buildroot.DEFCONFIGS]


def test_every_guest_architecture_has_a_defconfig_and_a_kernel_file() -> None:
    assert set(buildroot.DEFCONFIGS) == set(ARCHES) == set(buildroot.KERNEL_IMAGES)
    for name, defconfig in buildroot.DEFCONFIGS.items():
        values = buildroot.defconfig_values(defconfig)
        assert values[f"BR2_{name}"] == "y", defconfig
        # the kernel file the image boots is the one the defconfig asks Buildroot for
        wants = {"vmlinux": "BR2_LINUX_KERNEL_VMLINUX", "Image": "BR2_LINUX_KERNEL_IMAGE"}
        assert values[wants[buildroot.KERNEL_IMAGES[name]]] == "y", defconfig


@pytest.mark.parametrize("arch", BUILT, ids=lambda a: a.name)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_make_invocations_per_architecture(
    arch: Arch, debug: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_build_into runs make with the architecture's defconfig in the architecture's own
    output directory, the debug kernel's fragment line after that defconfig's fragments,
    and collects that architecture's kernel file."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IRQLAB_BUILDROOT_OUTPUT", raising=False)
    monkeypatch.setenv(buildroot.DEBUG_ENV, "1" if debug else "0")
    tree = tmp_path / "buildroot-src"
    monkeypatch.setattr(buildroot, "ensure_source", lambda say: tree)
    checked: list[str] = []
    monkeypatch.setattr(
        buildroot, "_check_dotconfig", lambda t, out, log, defconfig: checked.append(defconfig)
    )
    collected: list[tuple[Path, Arch]] = []
    monkeypatch.setattr(buildroot, "_collect", lambda out, dest, log, a: collected.append((out, a)))
    ran: list[list[str]] = []
    config_at_olddefconfig: list[str] = []

    def stream(cmd: list[str], **_kw: object) -> tuple[int, str]:
        ran.append([str(c) for c in cmd])
        if "olddefconfig" in cmd:
            config_at_olddefconfig.append((out / ".config").read_text())
        return 0, ""

    out = buildroot.output_dir(arch)
    log = StepLog(tmp_path / "build.log", lambda _m: None)
    monkeypatch.setattr(log, "stream", stream)
    try:
        buildroot._build_into(
            tmp_path / "dest", {}, log, arch=arch, clean=False, jobs=3, verbose=False
        )
    finally:
        log.close()

    defconfig = buildroot.DEFCONFIGS[arch.name]
    ext = f"BR2_EXTERNAL={repo_root() / 'buildroot'}"
    make = ["make", "-C", str(tree), f"O={out}", ext]
    resync = [f"{p}-clean-for-rebuild" for p in ("irqlab-kmod", "python-irqlab-agent")]
    assert ran == [  # written out: configure, (debug) resolve, re-sync our packages, build
        [*make, defconfig],
        *([[*make, "olddefconfig"]] if debug else []),
        [*make, *resync],
        ["nice", *make, "BR2_JLEVEL=3"],
    ]
    assert checked == [defconfig] and collected == [(out, arch)]
    if debug:
        (config,) = config_at_olddefconfig
        line = config.splitlines()[-1]
        assert line == buildroot.fragment_files_line(True, defconfig)
        assert f"linux-{arch.name}.fragment" in line and buildroot.DEBUG_FRAGMENT in line
    else:
        assert not config_at_olddefconfig


def test_each_architecture_builds_in_its_own_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x86_64 keeps the directory it always had (incremental rebuilds stay valid);
    aarch64's is beside it, also under $IRQLAB_BUILDROOT_OUTPUT."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IRQLAB_BUILDROOT_OUTPUT", raising=False)
    default = tmp_path / "cache" / f"buildroot-{buildroot.BUILDROOT_VERSION}-output"
    assert buildroot.output_dir() == buildroot.output_dir(X86_64) == default
    assert buildroot.output_dir(AARCH64) == default.with_name(default.name + "-aarch64")
    monkeypatch.setenv("IRQLAB_BUILDROOT_OUTPUT", str(tmp_path / "br-out"))
    assert buildroot.output_dir(X86_64) == tmp_path / "br-out"
    assert buildroot.output_dir(AARCH64) == tmp_path / "br-out-aarch64"


def test_the_architecture_is_part_of_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aarch64 image is its own cache entry; x86_64's key is the one it always was
    (no architecture in it, as the Debian image's)."""
    keys = buildroot.ensure_keys()
    monkeypatch.setattr(buildroot, "image_inputs", lambda: [])  # the files are not the point
    monkeypatch.delenv(buildroot.DEBUG_ENV, raising=False)
    x86 = buildroot.input_digest(keys, "key", X86_64)
    assert buildroot.input_digest(keys, "key") == x86
    assert buildroot.input_digest(keys, "key", AARCH64) != x86


def _no_buildroot_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty cache with both QEMU targets 'built' and IRQLAB_IMAGE=buildroot."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IRQLAB_IMAGE", "buildroot")
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    qemu = SimpleNamespace(binary=Path("q"), datadir=None)
    monkeypatch.setattr("irqlab.build.qemu.find_qemu", lambda: qemu)
    monkeypatch.setattr("irqlab.build.archguest.find_qemu", lambda arch: qemu)


@pytest.mark.parametrize("how", ["config", "env"])
def test_missing_aarch64_buildroot_image_names_the_command(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GuestConfig(arch="aarch64") or IRQLAB_ARCH=aarch64 with IRQLAB_IMAGE=buildroot asks
    for the aarch64 Buildroot image, and says how to build it when there is none."""
    _no_buildroot_image(monkeypatch, tmp_path)
    if how == "env":
        monkeypatch.setenv("IRQLAB_ARCH", "aarch64")
    guest = Guest(GuestConfig(arch="aarch64" if how == "config" else ""))
    with pytest.raises(PrerequisiteMissing) as e:
        guest.find_prerequisites()
    msg = str(e.value)
    assert "no Buildroot aarch64 image" in msg
    assert "build it with 'irqlab buildroot-build --arch aarch64'" in msg


def test_missing_aarch64_qemu_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_buildroot_image(monkeypatch, tmp_path)
    monkeypatch.setattr("irqlab.build.archguest.find_qemu", lambda arch: None)
    with pytest.raises(PrerequisiteMissing, match="IRQLAB_ARCHES=x86_64,aarch64 irqlab build-qemu"):
        Guest(GuestConfig(arch="aarch64")).find_prerequisites()


def test_the_aarch64_buildroot_image_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its image in the cache, the aarch64 guest gets it (and its own module)."""
    _no_buildroot_image(monkeypatch, tmp_path)
    wanted: list[object] = []

    def ensure_image(*, arch: Arch, build: bool) -> SimpleNamespace:
        wanted.append((arch, build))
        return SimpleNamespace(kernel_artifacts=SimpleNamespace(modules_dir=tmp_path / "m"))

    monkeypatch.setattr(buildroot, "ensure_image", ensure_image)
    _qemu, _image, ko = Guest(GuestConfig(arch="aarch64")).find_prerequisites()
    assert wanted == [(AARCH64, False)]
    assert ko == tmp_path / "m" / "updates" / "irqlab.ko"


def test_buildroot_build_refuses_an_unknown_architecture(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["buildroot-build", "--arch", "bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --arch: unknown architecture 'bogus'" in err
    assert "(known: aarch64, x86_64)" in err


@pytest.mark.parametrize("command", ["buildroot-build", "buildroot-check"])
def test_both_buildroot_commands_take_the_same_architecture_names(command: str) -> None:
    """One check for both commands: Debian's names too, and a refusal for the others."""
    from irqlab.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args([command, "--arch", "arm64"]).arch == "aarch64"
    assert parser.parse_args([command, "--arch", "amd64"]).arch == "x86_64"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--arch", "riscv64"])


@pytest.mark.parametrize(
    ("given", "arch"), [("", X86_64), ("aarch64", AARCH64), ("arm64", AARCH64)]
)
def test_buildroot_build_passes_the_architecture(
    given: str, arch: Arch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[object] = []

    def ensure_image(**kw: object) -> SimpleNamespace:
        got.append(kw["arch"])
        return SimpleNamespace(arch=kw["arch"], version="v", kernel="k", initramfs="i", size=1)

    monkeypatch.setattr(buildroot, "ensure_image", ensure_image)
    assert main(["buildroot-build", *(["--arch", given] if given else [])]) == 0
    assert got == [arch.name]


def test_local_packages_build_for_any_architecture() -> None:
    """Our packages name no architecture: Buildroot's kernel-module infrastructure and
    $(TARGET_CC) cross-build them with the defconfig's toolchain."""
    for mk in sorted((repo_root() / "buildroot" / "package").glob("*/*.mk")):
        text = mk.read_text().lower()
        for word in ("x86", "amd64", "i386", "aarch64", "arm64", "-m64", "-march", "arch="):
            assert word not in text, (mk.name, word)
