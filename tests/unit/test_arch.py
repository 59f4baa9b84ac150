"""Guest architectures: selection from the environment and what the QEMU recipe builds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from qemu_opts import qemu_options  # same directory (rootdir-relative import)

from irqlab.build import arch, boot, debs, initramfs, kernel, kmod, qemu, steps
from irqlab.build.arch import AARCH64, X86_64
from irqlab.build.debs import Package


def test_default_is_x86_64_only() -> None:
    assert arch.selected({}) == X86_64
    assert arch.built_arches({}) == (X86_64,)


@pytest.mark.parametrize("name", ["aarch64", "arm64", " AArch64 "])
def test_aarch64_by_either_name(name: str) -> None:
    assert arch.selected({arch.ARCH_ENV: name}) == AARCH64


def test_unknown_arch_is_an_error() -> None:
    with pytest.raises(ValueError, match="riscv64"):
        arch.selected({arch.ARCH_ENV: "riscv64"})


def test_built_arches_always_include_x86_64_once() -> None:
    assert arch.built_arches({arch.ARCHES_ENV: "aarch64"}) == (X86_64, AARCH64)
    env = {arch.ARCHES_ENV: "x86_64, aarch64,arm64,"}
    assert arch.built_arches(env) == (X86_64, AARCH64)


def test_x86_64_configure_flags_are_unchanged() -> None:
    # the x86_64 build keeps its hash (and so its cache) whatever else is built
    assert qemu.configure_flags() == qemu.CONFIGURE_FLAGS
    assert qemu.configure_flags(X86_64) == qemu.CONFIGURE_FLAGS


def test_aarch64_flags_differ_only_in_the_target() -> None:
    flags = qemu.configure_flags(AARCH64)
    assert flags[0] == "--target-list=aarch64-softmmu"
    assert flags[1:] == qemu.CONFIGURE_FLAGS[1:]


def test_each_target_has_its_own_hash(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in qemu.DEVICE_FILES:
        (dev / name).write_text(name)
    src = qemu.QemuSource("debian", "1:7.2+dfsg-7")
    x86 = qemu.input_digest(src, dev, {}, qemu.configure_flags(X86_64))
    a64 = qemu.input_digest(src, dev, {}, qemu.configure_flags(AARCH64))
    assert x86 == qemu.input_digest(src, dev, {})
    assert x86 != a64


def test_binary_names() -> None:
    assert X86_64.qemu_binary == "qemu-system-x86_64"
    assert AARCH64.qemu_binary == "qemu-system-aarch64"


# ---- the arm64 guest's Debian packages -------------------------------------------


def _apt(db: Mapping[str, Package]) -> debs.Lookup:
    """A fake apt that knows "name:arch" for arch-specific packages and plain names for
    the host's (amd64) and Architecture: all ones, like apt-cache show."""

    def look(names: Sequence[str]) -> Mapping[str, Package]:
        return {n: db[n] for n in names if n in db}

    return look


def _p(name: str, arch: str, deps: str = "", version: str = "6.1.300-1") -> Package:
    return Package(name, version, arch, debs.parse_relations(deps))


def _arm64_db() -> dict[str, Package]:
    abi = "6.1.0-99-arm64"
    pkgs = [
        ("linux-image-arm64:arm64", _p("linux-image-arm64", "arm64", f"linux-image-{abi}")),
        (f"linux-image-{abi}:arm64", _p(f"linux-image-{abi}", "arm64", "kmod")),
        (
            f"linux-headers-{abi}:arm64",
            _p(
                f"linux-headers-{abi}",
                "arm64",
                "linux-headers-6.1.0-99-common (= 6.1.300-1), linux-kbuild-6.1, gcc-12",
            ),
        ),
        ("linux-kbuild-6.1:arm64", _p("linux-kbuild-6.1", "arm64")),
        ("linux-kbuild-6.1", _p("linux-kbuild-6.1", "amd64")),
        ("linux-headers-6.1.0-99-common", _p("linux-headers-6.1.0-99-common", "all")),
        ("kmod:arm64", _p("kmod", "arm64", version="30")),
        ("kmod", _p("kmod", "amd64", version="30")),
    ]
    return dict(pkgs)


def test_foreign_lookup_answers_plain_names_and_falls_back_to_arch_all() -> None:
    look = debs.foreign_lookup("arm64", _apt(_arm64_db()))
    got = look(["linux-image-arm64", "linux-headers-6.1.0-99-common", "linux-kbuild-6.1", "nope"])
    assert got["linux-image-arm64"].arch == "arm64"
    assert got["linux-image-arm64"].name == "linux-image-arm64"
    assert got["linux-headers-6.1.0-99-common"].arch == "all"
    assert got["linux-kbuild-6.1"].arch == "arm64"
    assert "nope" not in got


def test_download_spec_qualifies_foreign_packages_only() -> None:
    assert debs._download_spec(_p("a", "arm64")) == "a:arm64=6.1.300-1"
    assert debs._download_spec(_p("a", "all")) == "a=6.1.300-1"
    assert debs._download_spec(_p("a", arch.host_deb_arch())) == "a=6.1.300-1"


@pytest.mark.skipif(arch.host_deb_arch() != "amd64", reason="the x86_64 host's view")
def test_arm64_kernel_takes_kbuild_tools_and_kmod_from_the_host() -> None:
    pk = kernel.resolve_packages(_apt(_arm64_db()), AARCH64)
    assert pk.abi == "6.1.0-99-arm64"
    assert pk.image.arch == "arm64"
    arches = {p.name: p.arch for p in pk.headers}
    assert arches == {
        "linux-headers-6.1.0-99-arm64": "arm64",
        "linux-headers-6.1.0-99-common": "all",
        "linux-kbuild-6.1": "amd64",  # fixdep, modpost... run on this host
    }
    assert pk.kmod.arch == "amd64"  # depmod runs here


def test_arm64_kernel_refuses_a_kbuild_of_another_version() -> None:
    db = _arm64_db()
    db["linux-kbuild-6.1"] = _p("linux-kbuild-6.1", "amd64", version="6.1.299-1")
    if not AARCH64.foreign:
        pytest.skip("an arm64 host builds natively")
    with pytest.raises(debs.AptError, match="same version"):
        kernel.resolve_packages(_apt(db), AARCH64)


def test_lib_dirs() -> None:
    assert initramfs.lib_dirs("x86_64-linux-gnu") == (initramfs.LIBDIR, initramfs.LIB_SEARCH)
    libdir, search = initramfs.lib_dirs("aarch64-linux-gnu")
    assert libdir == "usr/lib/aarch64-linux-gnu"
    assert "lib/aarch64-linux-gnu" in search


def test_cross_args(tmp_path: Path) -> None:
    def art(a: arch.Arch) -> kernel.KernelArtifacts:
        p = tmp_path
        return kernel.KernelArtifacts("v", "1", p, p, p, p, p, p, p, arch=a)

    assert kmod.cross_args(art(X86_64)) == []
    if AARCH64.foreign:
        assert kmod.cross_args(art(AARCH64)) == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]


# ---- booting: machine and image arguments, selection by Guest ------------------------


def _image(tmp_path: Path, arch_name: str) -> boot.GuestImage:
    return boot.GuestImage(
        version="v",
        kernel=tmp_path / "k",
        initramfs=tmp_path / "i",
        cmdline="c",
        kernel_version="6.1",
        kernel_artifacts=None,  # type: ignore[arg-type]
        client_key=tmp_path / "key",
        host_key="ssh-ed25519 x",
        directory=tmp_path,
        arch=arch_name,
    )


def test_x86_64_boot_arguments_are_unchanged(tmp_path: Path) -> None:
    assert boot.machine_args() == boot.MACHINE_ARGS
    assert boot.machine_args("x86_64") == boot.MACHINE_ARGS
    assert boot.cpu_args("tcg") == ["-cpu", "qemu64,+rdrand"]
    args = _image(tmp_path, "x86_64").qemu_args(2222)
    assert args[:2] == ["-bios", "qboot.rom"] and "pvpanic-pci" in args


def test_aarch64_boot_arguments(tmp_path: Path) -> None:
    m = boot.machine_args("aarch64")
    assert m[:2] == ("-machine", "virt,gic-version=3,its=on")
    assert boot.cpu_args("tcg", "aarch64") == ["-cpu", "cortex-a57"]
    args = _image(tmp_path, "aarch64").qemu_args(2222)
    assert "-bios" not in args and "pvpanic-pci" not in args
    assert "virtio-net-pci,netdev=net0,romfile=" in args
    assert any("hostfwd=tcp:127.0.0.1:2222-:22" in a for a in args)


def test_guest_arch_from_config_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError

    monkeypatch.delenv(arch.ARCH_ENV, raising=False)
    assert Guest(GuestConfig()).arch == X86_64
    assert Guest(GuestConfig(arch="aarch64")).arch == AARCH64
    monkeypatch.setenv(arch.ARCH_ENV, "arm64")
    assert Guest(GuestConfig()).arch == AARCH64
    assert Guest(GuestConfig(arch="x86_64")).arch == X86_64
    with pytest.raises(GuestConfigError, match="mips"):
        _ = Guest(GuestConfig(arch="mips")).arch
    monkeypatch.setenv(arch.ARCH_ENV, "mips")
    with pytest.raises(GuestConfigError, match=r"^IRQLAB_ARCH='mips': no such architecture"):
        _ = Guest(GuestConfig()).arch


def test_a_bad_arches_list_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^IRQLAB_ARCHES='bogus': no such architecture \(known"):
        arch.built_arches({arch.ARCHES_ENV: "x86_64,bogus"})


# ---- the device-tree key (aarch64) ------------------------------------------------------

VIRT_DTS = """/dts-v1/;

/ {
\tcompatible = "linux,dummy-virt";

\tpcie@10000000 {
\t\tdevice_type = "pci";
\t\t#address-cells = <0x03>;
\t};

\tgpio-keys {
\t\tcompatible = "gpio-keys";
\t};
};
"""


def test_pci_reg_encodes_bus_device_function() -> None:
    from irqlab.build.devicetree import pci_reg

    assert pci_reg(3) == 0x1800
    assert pci_reg(1, 2, bus=1) == 0x10A00
    with pytest.raises(ValueError):
        pci_reg(32)


def test_with_key_adds_our_function_and_a_debounced_key() -> None:
    from irqlab.build.devicetree import with_key

    out = with_key(VIRT_DTS, slot=3, line=31, debounce_ms=20)
    bridge = out[out.index("pcie@10000000 {") : out.index("gpio-keys {")]
    assert "irqlab_gpio: irqlab@3,0 {" in bridge
    assert "reg = <0x1800 0x00 0x00 0x00 0x00>;" in bridge
    assert "gpio-controller;" in bridge and "#gpio-cells = <0x02>;" in bridge
    keys = out[out.index("irqlab-keys {") :]
    assert "gpios = <&irqlab_gpio 0x1f 0x00>;" in keys
    assert "debounce-interval = <0x14>;" in keys
    assert out.rstrip().endswith("};")
    with pytest.raises(ValueError, match="pcie"):
        with_key("/ {\n};\n", slot=3, line=1, debounce_ms=1)


def test_the_tree_is_dumped_where_the_cache_is_whatever_its_commas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dump's path is one value of -machine (',,' for a comma), not more options."""
    from irqlab.build import devicetree

    out = tmp_path / "cache,x=y"  # e.g. IRQLAB_CACHE_DIR=/tmp/a,b
    ran: list[list[str]] = []

    class Dumped(Exception):
        pass

    def run(argv: list[str]) -> None:
        ran.append([str(a) for a in argv])
        raise Dumped  # what follows reads the dump: stop at QEMU's command

    monkeypatch.setattr(devicetree, "_run", run)
    monkeypatch.setattr(devicetree.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(devicetree, "cached_build", lambda kind, digest, build: build(out))
    with pytest.raises(Dumped):
        devicetree.ensure_key_dtb(
            Path("qemu"), ["-machine", "virt,its=on", "-m", "512M"], slot=3, line=1, debounce_ms=1
        )
    ((qemu, _, machine, *_),) = ran
    assert qemu == "qemu"
    assert qemu_options(machine) == [("", "virt"), ("its", "on"), ("dumpdtb", f"{out}/virt.dtb")]


# ---- the Buildroot aarch64 defconfig (offline: no Buildroot tree here) --------------------

EXT = Path(__file__).resolve().parents[2] / "buildroot"
ARCH_LINES = {
    "BR2_x86_64",
    "BR2_aarch64",
    "BR2_cortex_a57",
    "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_X86_64_GLIBC_BLEEDING_EDGE",
    "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_BLEEDING_EDGE",
    "BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE",
    "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES",
    "BR2_LINUX_KERNEL_VMLINUX",
    "BR2_LINUX_KERNEL_IMAGE",
}


def _cfg(name: str) -> dict[str, str]:
    out = {}
    for line in (EXT / "configs" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_aarch64_defconfig_differs_from_x86_64_only_in_arch_lines() -> None:
    x86, a64 = _cfg("irqlab_x86_64_defconfig"), _cfg("irqlab_aarch64_defconfig")
    assert {k: v for k, v in x86.items() if k not in ARCH_LINES} == {
        k: v for k, v in a64.items() if k not in ARCH_LINES
    }
    assert a64["BR2_aarch64"] == "y" and a64["BR2_LINUX_KERNEL_IMAGE"] == "y"
    assert a64["BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE"] == '"board/qemu/aarch64-virt/linux.config"'


def test_aarch64_fragments_exist_and_are_config_lines() -> None:
    frags = _cfg("irqlab_aarch64_defconfig")["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"]
    paths = frags.strip('"').split()
    assert paths[0].endswith("/linux.fragment")
    for p in paths:
        f = EXT / p.replace("$(BR2_EXTERNAL_IRQLAB_PATH)/", "")
        lines = [ln for ln in f.read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines and all(ln.startswith("CONFIG_") and "=" in ln for ln in lines), f
    extra = (EXT / "board/irqlab/linux-aarch64.fragment").read_text()
    for opt in ("CONFIG_KEYBOARD_GPIO=m", "CONFIG_INPUT_EVDEV=m", "CONFIG_ARM_GIC_V3_ITS=y"):
        assert opt in extra


@pytest.mark.parametrize(
    ("error", "renamed"),
    [
        (steps.BuildError("apt", Path("apt.log")), True),
        (OSError("disk full"), True),
        (KeyError("x"), False),
    ],
)
def test_prerequisites_rename_build_failures_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception, renamed: bool
) -> None:
    """A failing build is a missing prerequisite; a bug in a recipe keeps its own type."""
    from irqlab.build import archguest

    def fail(**_: object) -> None:
        raise error

    monkeypatch.setenv("IRQLAB_IMAGE", "debian")
    monkeypatch.setattr(archguest, "find_qemu", lambda _arch: tmp_path)
    monkeypatch.setattr(archguest, "_foreign_deb_arches", lambda: [AARCH64.deb_arch])
    monkeypatch.setattr(kernel, "ensure_kernel", fail)
    with pytest.raises(archguest.Missing if renamed else type(error)) as caught:
        archguest.prerequisites(AARCH64)
    assert (caught.value.__cause__ is error) if renamed else caught.value is error


def test_archguest_looks_qemu_up_at_the_call_not_at_its_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Imported first while a test had replaced ``qemu.find_qemu`` (an xdist worker's
    order), archguest kept that replacement for the rest of the worker: a later test's
    ``find_qemu(arch)`` was a TypeError."""
    import importlib
    import sys

    import irqlab.build
    from irqlab.build import archguest, qemu

    # both put back at the end: the other tests meet the one module they imported
    monkeypatch.setattr(irqlab.build, "archguest", archguest)
    monkeypatch.delitem(sys.modules, "irqlab.build.archguest")
    with monkeypatch.context() as m:
        m.setattr(qemu, "find_qemu", lambda: None)
        fresh = importlib.import_module("irqlab.build.archguest")
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(fresh.Missing, match="qemu-system-aarch64 with the irqlab device"):
        fresh.arch_qemu(AARCH64)
