"""The guest boot contract both guest images keep (Debian packages, Buildroot).

What the harness relies on whichever image it boots: the :class:`GuestImage` it
gets, the QEMU machine arguments, the kernel command line, the console markers
and the addresses of QEMU user networking, the SSH keys let in
(:func:`authorized_keys`), and the values the guest's init sequence
(``harness/irqlab/build/guest/irqlab-boot.sh``) is given (:func:`boot_values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from irqlab.build.kernel import KernelArtifacts
from irqlab.build.sshkeys import SshKeys

__all__ = [
    "AARCH64_KERNEL_CMDLINE",
    "AARCH64_MACHINE_ARGS",
    "FAILED_MARKER",
    "GATEWAY",
    "GUEST_ADDR",
    "GUEST_IP",
    "HOSTNAME",
    "KERNEL_CMDLINE",
    "MACHINE_ARGS",
    "MAX_VCPUS",
    "READY_MARKER",
    "RESEED_PORT",
    "SSH_USER",
    "GuestImage",
    "authorized_keys",
    "boot_values",
    "cpu_args",
    "guest_image",
    "machine_args",
    "qemu_option_value",
]

READY_MARKER = "IRQLAB-READY"
FAILED_MARKER = "IRQLAB-FAILED"
HOSTNAME = "irqlab"
GUEST_IP = "10.0.2.15"  # QEMU user networking's default guest address
GUEST_ADDR = f"{GUEST_IP}/24"
GATEWAY = "10.0.2.2"
SSH_USER = "root"
# The agent daemon's reseed port (``--reseed``): QEMU forwards a host port to it, so
# the host reseeds a restored guest's RNG before it opens any SSH connection.
RESEED_PORT = 7708

# Kernel command line (not part of the image hash).  Measured under TCG on
# these machines (median of 5-6 interleaved boots, see the image report):
#   cryptomgr.notests  skips the boot-time crypto self-tests: -0.2..0.3 s
#   noreplace-smp      keeps LOCK prefixes on a 1-vCPU boot instead of patching
#                      thousands of sites: -0.1..0.2 s
#   init_on_alloc=0    no zeroing of every allocated page (Debian hardening
#                      default): -0.1..0.3 s with -cpu max (byte-wise rep stos)
#   tsc=reliable       keeps the TSC clocksource with -smp > 1 (latency floor)
#   no_timer_check     not for speed: under TCG on a loaded host the kernel's IO-APIC
#                      timer check can miss its ticks and panic at boot ("IO-APIC +
#                      timer doesn't work!"; seen here with three guests on 2 cores)
# Options that measured within noise were left out (mitigations=off,
# i8042.*, 8250.nr_uarts, audit=0, rodata=off, an initcall_blacklist of the
# kdf108 self-test).
KERNEL_CMDLINE: tuple[str, ...] = (
    "console=ttyS0", "quiet", "panic=-1", "tsc=reliable", "no_timer_check",
    "cryptomgr.notests", "noreplace-smp", "init_on_alloc=0",
)  # fmt: skip

# What the launcher should add around qemu_args() (machine, memory, no default
# devices; -no-reboot makes the guest's poweroff/reboot/panic end QEMU), plus
# cpu_args().  The serial console (-serial ...) and -accel are the launcher's.
# q35 and pc boot equally fast.
_BOARD_ARGS: tuple[str, ...] = ("-m", "512M", "-nodefaults", "-no-reboot", "-display", "none")
MACHINE_ARGS: tuple[str, ...] = ("-machine", "q35", *_BOARD_ARGS)


# aarch64 (opt-in, see irqlab.build.arch): QEMU's virt board with GICv3 (its ITS
# translates MSI/MSI-X writes; INTx arrives as GIC SPIs through the PCIe host
# bridge's interrupt map), PCIe root bus, PL011 console (ttyAMA0); the kernel's
# Image is booted directly (no firmware).  Debian's arm64 kernel has no pvpanic.
AARCH64_MACHINE_ARGS: tuple[str, ...] = ("-machine", "virt,gic-version=3,its=on", *_BOARD_ARGS)
# The most vCPUs (-smp) each architecture's machine takes here (QEMU 7.2: q35 takes 255
# under TCG -- 256 and more "require kernel irqchip and X2APIC API support", KVM's, and
# 288 is its machine's limit even so; virt with GICv3 takes 512): more is refused before
# QEMU starts (it started, then exited with those words).
MAX_VCPUS: dict[str, int] = {"x86_64": 255, "aarch64": 512}
AARCH64_KERNEL_CMDLINE: tuple[str, ...] = (
    "console=ttyAMA0", "quiet", "panic=-1", "cryptomgr.notests", "init_on_alloc=0",
)  # fmt: skip


def qemu_option_value(value: str) -> str:
    """*value* as one value in QEMU's option syntax (``name,key=value,...``), where a
    comma separates options and ``,,`` is a comma of the value: whatever its commas,
    it reaches QEMU as it is and never as another option (paths, device properties)."""
    return value.replace(",", ",,")


def machine_args(arch: str = "x86_64") -> tuple[str, ...]:
    """:data:`MACHINE_ARGS` for the guest architecture *arch* (``uname -m``)."""
    return AARCH64_MACHINE_ARGS if arch == "aarch64" else MACHINE_ARGS


def cpu_args(accel: str, arch: str = "x86_64") -> list[str]:
    """The CPU model to boot this image with (optional: QEMU's default works).

    Under TCG, ``qemu64,+rdrand`` (RDRAND seeds the CRNG even without the
    virtio-rng device of :meth:`GuestImage.qemu_args`): the plain model boots
    ~0.2-0.3 s faster to the readiness marker than ``max``, whose ERMS turns
    the kernel's memcpy/memset into byte-wise ``rep movsb`` under TCG.
    """
    if arch == "aarch64":
        return ["-cpu", "host"] if accel == "kvm" else ["-cpu", "cortex-a57"]
    return ["-cpu", "host"] if accel == "kvm" else ["-cpu", "qemu64,+rdrand"]


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: pass :meth:`qemu_args` (plus :data:`MACHINE_ARGS`) to QEMU."""

    version: str  # input hash of the image
    kernel: Path  # uncompressed vmlinux (PVH)
    initramfs: Path
    cmdline: str
    kernel_version: str  # uname -r in the guest
    kernel_artifacts: KernelArtifacts
    client_key: Path  # private key authorized for SSH_USER (OpenSSH format, 0600)
    host_key: str  # "ssh-ed25519 AAAA..." the guest's dropbear presents
    directory: Path
    ssh_user: str = SSH_USER
    guest_ip: str = GUEST_IP
    ready_marker: str = READY_MARKER
    failed_marker: str = FAILED_MARKER
    bios: str = "qboot.rom"  # found in QEMU's firmware path (-L)
    kmod: str | None = None  # name of our module in the image (modprobe <it>), if any
    modules: tuple[str, ...] = ()  # every module modprobe can load in the guest
    agent_package: str = "irqlab_agent"  # python3 -m <it> in the guest
    size: int = 0  # initramfs bytes
    arch: str = "x86_64"  # uname -m in the guest (see irqlab.build.arch)

    def append(self, *extra: str) -> str:
        """The kernel command line plus *extra* options (e.g. ``irqlab_modprobe=irqlab``)."""
        return " ".join((self.cmdline, *extra)).strip()

    def qemu_args(
        self, ssh_port: int, *, cmdline_extra: Sequence[str] = (), netdev_id: str = "net0"
    ) -> list[str]:
        """Boot + network arguments; guest port 22 is forwarded to 127.0.0.1:*ssh_port*,
        the agent's reseed port to a port QEMU picks."""
        boot = [
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initramfs),
            "-append",
            self.append(*cmdline_extra),
        ]
        devices = [
            # restrict=on: the guest reaches nothing outside (not the host's loopback
            # services through 10.0.2.2, not the internet); the SSH forward still works.
            # ssh_port 0: QEMU binds a free port itself (HMP `info usernet` tells it).
            "-netdev",
            f"user,id={netdev_id},restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,"
            f"hostfwd=tcp:127.0.0.1:0-:{RESEED_PORT}",
            "-device",
            f"virtio-net-pci,netdev={netdev_id},romfile=",
            # entropy for the guest's CRNG at once whatever the CPU model (no RDRAND
            # with the default qemu64): dropbear's first getrandom() would block ~1.5 s
            "-device",
            "virtio-rng-pci",
        ]
        if self.arch == "aarch64":  # firmware from the virt machine; Debian's arm64
            return [*boot, *devices]  # kernel has no pvpanic driver
        # a guest panic is a QMP event (GUEST_PANICKED) and ends QEMU, whatever the
        # guest's kernel.panic setting
        return ["-bios", self.bios, *boot, *devices, "-device", "pvpanic-pci"]

    def known_hosts_line(self, ssh_port: int, host: str = "127.0.0.1") -> str:
        """An OpenSSH known_hosts line for the forwarded port."""
        return f"[{host}]:{ssh_port} {self.host_key}"


def guest_image(
    *,
    version: str,
    kernel: KernelArtifacts,
    initramfs: Path,
    keys: SshKeys,
    directory: Path,
    kmod: str | None,
    modules: Sequence[str],
    agent_package: str = "irqlab_agent",
) -> GuestImage:
    """A built image as the harness boots it: the kernel's vmlinux through PVH, the
    contract's command line and markers, the cache's SSH keys."""
    aarch64 = kernel.arch.name == "aarch64"
    return GuestImage(
        version=version,
        kernel=kernel.vmlinux,
        initramfs=initramfs,
        cmdline=" ".join(AARCH64_KERNEL_CMDLINE if aarch64 else KERNEL_CMDLINE),
        kernel_version=kernel.version,
        kernel_artifacts=kernel,
        client_key=keys.client_key,
        host_key=keys.host_pub,
        directory=directory,
        kmod=kmod,
        modules=tuple(modules),
        agent_package=agent_package,
        size=initramfs.stat().st_size,
        arch=kernel.arch.name,
    )


def authorized_keys(keys: SshKeys, extra: str | Path | None) -> str:
    """root's authorized_keys in the guest: the cache's client key, plus *extra* (public key
    lines, or a file of them)."""
    lines = [keys.client_pub]
    if extra is not None:
        text = extra.read_text() if isinstance(extra, Path) else extra
        lines += [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines) + "\n"


def boot_values() -> dict[str, str]:
    """What the guest's init sequence is told: console markers, address, gateway, name."""
    return {
        "READY_MARKER": READY_MARKER,
        "FAILED_MARKER": FAILED_MARKER,
        "GUEST_ADDR": GUEST_ADDR,
        "GATEWAY": GATEWAY,
        "HOSTNAME": HOSTNAME,
    }
