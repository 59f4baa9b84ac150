"""Guest image recipe: the pure parts (no apt, no QEMU, no network)."""

from __future__ import annotations

import gzip
import lzma
import os
import stat
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pytest

from irqlab.build import boot, cpio, debs, elf, image, initramfs, kernel, outputs, pystdlib, sshkeys
from irqlab.build.debs import Package
from irqlab.build.guest import BOOT_SCRIPT_PATH, INIT_TEMPLATE

# ---------------------------------------------------------------- vmlinux


def _fake_elf_kernel(size: int = 50_000) -> bytes:
    return elf.ELF_MAGIC + b"\x02\x01\x01" + bytes(range(256)) * (size // 256)


def _bzimage(payload: bytes, setup_sects: int = 3, offset: int = 0x40) -> bytes:
    """A bzImage-like blob: boot header at 0x1f1.., payload after the setup sectors."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    struct.pack_into("<II", setup, 0x248, offset, len(payload) + 4)
    body = b"\x90" * offset + payload + struct.pack("<I", 12345) + b"\0" * 100
    return bytes(setup) + body


def test_extract_vmlinux_xz_via_boot_header() -> None:
    want = _fake_elf_kernel()
    xz = lzma.compress(want, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    assert kernel.extract_vmlinux(_bzimage(xz)) == want


def test_extract_vmlinux_gzip_via_boot_header() -> None:
    want = _fake_elf_kernel()
    assert kernel.extract_vmlinux(_bzimage(gzip.compress(want))) == want


def test_extract_vmlinux_scans_without_header() -> None:
    want = _fake_elf_kernel()
    blob = b"junk\xfd7zXZ\x00notreally" + lzma.compress(want, format=lzma.FORMAT_XZ) + b"tail"
    assert kernel.extract_vmlinux(blob) == want


def test_extract_vmlinux_rejects_non_elf_payload() -> None:
    xz = lzma.compress(b"not a kernel" * 100, format=lzma.FORMAT_XZ)
    with pytest.raises(kernel.VmlinuxError, match="not an ELF"):
        kernel.extract_vmlinux(_bzimage(xz))
    with pytest.raises(kernel.VmlinuxError):
        kernel.extract_vmlinux(b"\0" * 4096)


# ---------------------------------------------------------------- cpio


def _read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int], int]]:
    """Minimal reader: (name, mode, body, rdev, mtime) per entry, up to the trailer."""
    out = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, mtime, size, rmaj, rmin, namesize = (
            f[1], f[2], f[3], f[5], f[6], f[9], f[10], f[11],
        )  # fmt: skip
        assert (uid, gid) == (0, 0)
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        body = data[pos : pos + size]
        pos += size
        pos += (4 - pos % 4) % 4
        if name == cpio.TRAILER:
            assert pos == len(data)
            return out
        out.append((name, mode, body, (rmaj, rmin), mtime))


def test_cpio_roundtrip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "usr" / "bin" / "tool", 0o755)
    (root / "bin").symlink_to("usr/bin")
    (root / "odd").write_bytes(b"12345")  # length not a multiple of 4
    entries = [*cpio.tree_entries(root), cpio.Entry.chardev("dev/console", 5, 1)]
    entries.insert(0, cpio.Entry.directory("dev"))
    buf = BytesIO()
    n = cpio.write_newc(entries, buf, mtime=1234)
    data = buf.getvalue()
    assert n == len(data) and len(data) % 4 == 0
    got = {name: (mode, body, rdev, mtime) for name, mode, body, rdev, mtime in _read_newc(data)}
    assert list(got)[:2] == ["dev", "bin"]  # given order, then sorted tree order
    assert got["usr/bin/tool"][0] == stat.S_IFREG | 0o755
    assert got["usr/bin/tool"][1] == b"#!/bin/sh\necho hi\n"
    assert got["odd"][1] == b"12345"
    assert got["bin"][0] == stat.S_IFLNK | 0o777 and got["bin"][1] == b"usr/bin"
    assert stat.S_ISDIR(got["usr"][0]) and got["usr"][1] == b""
    assert got["dev/console"][0] == stat.S_IFCHR | 0o600 and got["dev/console"][2] == (5, 1)
    assert {v[3] for v in got.values()} == {1234}
    names = list(got)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")


def test_cpio_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        cpio.write_newc([cpio.Entry.directory("a"), cpio.Entry.directory("/a/")], BytesIO())


# ---------------------------------------------------------------- apt data

SHOW = """\
Package: app
Version: 1:2.0-1
Architecture: amd64
Pre-Depends: libc6 (>= 2.34)
Depends: libfoo1 (>= 1.0) | libfoo-compat, mime-support | media-types,
 virtual-thing, libbar:any
Description: an app
 with a long description

Package: app
Version: 1:1.0-1
Architecture: amd64
"""


def test_parse_show_and_relations() -> None:
    pk = debs.packages_from_show(SHOW)
    assert list(pk) == ["app"]
    app = pk["app"]
    assert app.version == "1:2.0-1"  # first stanza = candidate
    assert app.depends == (
        ("libc6",),
        ("libfoo1", "libfoo-compat"),
        ("mime-support", "media-types"),
        ("virtual-thing",),
        ("libbar",),
    )
    assert app.deb_name == "app_1%3a2.0-1_amd64.deb"
    assert app.spec == "app=1:2.0-1"


def _lookup(db: Mapping[str, Package], calls: list[Sequence[str]]) -> debs.Lookup:
    def look(names: Sequence[str]) -> Mapping[str, Package]:
        calls.append(list(names))
        return {n: db[n] for n in names if n in db}

    return look


def _pkg(name: str, deps: str = "", provides: str = "") -> Package:
    return Package(
        name,
        "1.0",
        "amd64",
        debs.parse_relations(deps),
        tuple(provides.split(",")) if provides else (),
    )


def test_closure_alternatives_exclusions_provides() -> None:
    db = {
        p.name: p
        for p in (
            _pkg("app", "libc6, libfoo-compat | libfoo1, tzdata, virtual-thing, helper"),
            _pkg("libc6", "libgcc-s1"),
            _pkg("libgcc-s1", "libc6"),  # cycles are fine
            _pkg("libfoo1", "libc6"),
            _pkg("helper", "libc6", provides="virtual-thing"),
            _pkg("tzdata", "debconf"),
        )
    }
    calls: list[Sequence[str]] = []
    got = debs.closure(["app"], _lookup(db, calls), exclude=["tzdata"])
    # libfoo-compat is unknown -> next alternative; virtual-thing provided by helper
    # (chosen in the same group list); tzdata excluded so debconf never looked up
    assert [p.name for p in got] == ["app", "helper", "libc6", "libfoo1", "libgcc-s1"]
    assert not any("debconf" in c for c in calls)
    assert not any("tzdata" in c for c in calls)


def test_closure_reports_unresolvable() -> None:
    db = {"app": _pkg("app", "nothere | alsonot")}
    with pytest.raises(debs.AptError, match=r"nothere \| alsonot"):
        debs.closure(["app"], _lookup(db, []))
    with pytest.raises(debs.AptError, match="ghost"):
        debs.closure(["ghost"], _lookup(db, []))


def test_apt_show_memoised_by_apt_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "x_Packages").write_text("a")
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(debs, "APT_STATE_FILES", (lists,))
    calls: list[list[str]] = []

    def fake_query(names: Sequence[str]) -> dict[str, Package]:
        calls.append(list(names))
        return {n: _pkg(n, "libc6 | libc6-compat") for n in names if n != "ghost"}

    monkeypatch.setattr(debs, "_query_apt", fake_query)
    got = debs.apt_show(["app", "ghost"])
    assert list(got) == ["app"] and got["app"].depends == (("libc6", "libc6-compat"),)
    assert debs.apt_show(["ghost", "app"]) == got  # answered from the memo, unknowns too
    assert calls == [["app", "ghost"]]
    debs.apt_show(["app", "other"])
    assert calls[-1] == ["other"]
    (lists / "x_Packages").write_text("after apt-get update")
    debs.apt_show(["app"])
    assert calls[-1] == ["app"]  # new apt state: asked again


def test_kernel_packages_from_meta() -> None:
    abi = "6.1.0-99-amd64"
    db = {
        p.name: p
        for p in (
            _pkg("linux-image-amd64", f"linux-image-{abi} (= 6.1.300-1)"),
            _pkg(f"linux-image-{abi}", "kmod, linux-base, initramfs-tools | linux-initramfs-tool"),
            _pkg(
                f"linux-headers-{abi}",
                "linux-headers-6.1.0-99-common (= 6.1.300-1), linux-kbuild-6.1 (>= 6.1.300-1), "
                "linux-compiler-gcc-12-x86",
            ),
            _pkg("linux-headers-6.1.0-99-common"),
            _pkg("linux-kbuild-6.1", "libc6"),
            _pkg("kmod"),
        )
    }
    pk = kernel.resolve_packages(_lookup(db, []))
    assert pk.abi == abi
    assert [p.name for p in pk.headers] == [
        f"linux-headers-{abi}",
        "linux-headers-6.1.0-99-common",
        "linux-kbuild-6.1",
    ]
    assert [p.name for p in pk.all][-1] == "kmod"


def test_headers_makefile_made_relative(tmp_path: Path) -> None:
    mk = tmp_path / "Makefile"
    mk.write_text("include /usr/src/linux-headers-6.1.0-99-common/Makefile\n")
    kernel._fix_headers_makefile(tmp_path)
    assert mk.read_text() == "include ../linux-headers-6.1.0-99-common/Makefile\n"


# ---------------------------------------------------------------- init script


def _init_values() -> dict[str, str]:
    return {
        "KERNEL_VERSION": "6.1.0-99-amd64",
        "BOOT_MODULES": "kernel/a.ko kernel/b.ko",
        "GUEST_ADDR": boot.GUEST_ADDR,
        "GATEWAY": boot.GATEWAY,
        "HOSTNAME": boot.HOSTNAME,
        "READY_MARKER": boot.READY_MARKER,
        "FAILED_MARKER": boot.FAILED_MARKER,
    }


def test_render_init_real_template(tmp_path: Path) -> None:
    text = image.render_init(INIT_TEMPLATE.read_text(), _init_values())
    assert text.startswith("#!/bin/sh\n")
    assert "@" + "READY_MARKER@" not in text
    assert "READY_MARKER='IRQLAB-READY'\n" in text
    assert "for m in kernel/a.ko kernel/b.ko; do" in text
    assert "GUEST_ADDR='10.0.2.15/24'\n" in text
    assert "GATEWAY='10.0.2.2'\n" in text
    assert f". /{BOOT_SCRIPT_PATH}\n" in text
    script = tmp_path / "init"
    script.write_text(text)
    r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_render_init_checks_placeholders() -> None:
    with pytest.raises(ValueError, match="not filled: @B@"):
        image.render_init("@A@ @B@", {"A": "x"})
    with pytest.raises(ValueError, match="no placeholder @C@"):
        image.render_init("@A@", {"A": "x", "C": "y"})


# ---------------------------------------------------------------- modules

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/uio/uio-pci-generic.ko: kernel/drivers/uio/uio.ko
kernel/drivers/uio/uio.ko:
""".replace("\\\n", "")


def test_module_load_order() -> None:
    deps = kernel.parse_modules_dep(MODULES_DEP)
    order = kernel.module_load_order(deps, ["virtio_pci", "virtio_net", "uio_pci_generic"])
    names = [kernel.module_name(r) for r in order]
    assert names == [
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci",
        "failover",
        "net_failover",
        "virtio_net",
        "uio",
        "uio_pci_generic",
    ]
    with pytest.raises(KeyError, match="nosuch"):
        kernel.module_load_order(deps, ["nosuch"])


def test_modinfo_depends() -> None:
    ko = b"\x7fELF....\0license=GPL\0depends=uio,virtio\0name=irqlab\0"
    assert kernel.modinfo_depends(ko) == ["uio", "virtio"]
    assert kernel.modinfo_depends(b"\0depends=\0name=x\0") == []


# ---------------------------------------------------------------- file selection


def test_merged_path_and_python_filter() -> None:
    assert initramfs.merged_path("bin/busybox") == "usr/bin/busybox"
    assert (
        initramfs.merged_path("lib/x86_64-linux-gnu/libc.so.6")
        == "usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    assert initramfs.merged_path("usr/sbin/dropbear") == "usr/sbin/dropbear"
    assert initramfs.merged_path("etc/passwd") == "etc/passwd"
    keep = pystdlib.keep_python_file
    assert keep("os.py") and keep("json/decoder.py") and keep("lib-dynload/_json.cpython-311.so")
    assert not keep("test/test_os.py") and not keep("ensurepip/__init__.py")
    assert not keep("lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so")
    assert not keep("lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so")
    assert not keep("json/__pycache__/decoder.cpython-311.pyc")


def test_busybox_links_keep_modprobe_off_the_kernel_path() -> None:
    links = initramfs.busybox_links(
        "bin/busybox\nbin/sh\nsbin/modprobe\nusr/bin/env\nsbin/poweroff\nlinuxrc"
    )
    assert links == {
        "usr/bin/sh": "busybox",
        "usr/bin/modprobe": "busybox",  # not /sbin/modprobe: CONFIG_MODPROBE_PATH
        "usr/bin/env": "busybox",
        "usr/sbin/poweroff": "../bin/busybox",
    }


def test_resolve_in_tree_keeps_absolute_links_inside(tmp_path: Path) -> None:
    (tmp_path / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    real = tmp_path / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2"
    real.write_bytes(b"ld")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    (tmp_path / "lib" / "x86_64-linux-gnu" / "libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "lib" / "x86_64-linux-gnu" / "libz.so.1.2.13").write_bytes(b"z")
    assert initramfs.resolve_in_tree(tmp_path, "lib64/ld-linux-x86-64.so.2") == real
    got = initramfs.resolve_in_tree(tmp_path, "lib/x86_64-linux-gnu/libz.so.1")
    assert got.read_bytes() == b"z"


# ---------------------------------------------------------------- ELF + library closure


def _elf(needed: Sequence[str] = (), soname: str | None = None, interp: str | None = None) -> bytes:
    """A minimal x86-64 ELF with PT_LOAD, PT_DYNAMIC (+ PT_INTERP) for the parser."""
    strtab = b"\0"
    offs = []
    for s in [*needed, *([soname] if soname else [])]:
        offs.append(len(strtab))
        strtab += s.encode() + b"\0"
    interp_b = (interp.encode() + b"\0") if interp else b""
    phnum = 3 if interp else 2
    ph_off = 64
    data_off = ph_off + 56 * phnum
    strtab_off = data_off
    interp_off = strtab_off + len(strtab)
    dyn_off = (interp_off + len(interp_b) + 7) // 8 * 8
    dyn = b""
    for o in offs[: len(needed)]:
        dyn += struct.pack("<qQ", 1, o)
    if soname:
        dyn += struct.pack("<qQ", 14, offs[-1])
    vbase = 0x400000
    dyn += struct.pack("<qQ", 5, vbase + strtab_off) + struct.pack("<qQ", 0, 0)
    total = dyn_off + len(dyn)
    hdr = bytearray(64)
    hdr[0:4] = elf.ELF_MAGIC
    hdr[4], hdr[5], hdr[6] = 2, 1, 1
    struct.pack_into("<Q", hdr, 0x20, ph_off)
    struct.pack_into("<HH", hdr, 0x36, 56, phnum)
    phs = struct.pack("<IIQQQQQQ", 1, 5, 0, vbase, vbase, total, total, 0x1000)
    phs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, vbase + dyn_off, 0, len(dyn), len(dyn), 8)
    if interp:
        phs += struct.pack("<IIQQQQQQ", 3, 4, interp_off, 0, 0, len(interp_b), len(interp_b), 1)
    body = bytes(hdr) + phs + strtab + interp_b
    body += b"\0" * (dyn_off - len(body)) + dyn
    return body


def test_elf_dyn_info() -> None:
    info = elf.dyn_info(_elf(["libz.so.1", "libc.so.6"], interp="/lib64/ld-linux-x86-64.so.2"))
    assert info == elf.DynInfo(("libz.so.1", "libc.so.6"), None, "/lib64/ld-linux-x86-64.so.2")
    assert elf.dyn_info(_elf(["libc.so.6"], soname="libz.so.1")).soname == "libz.so.1"
    with pytest.raises(elf.ElfError):
        elf.dyn_info(b"#!/bin/sh\n")


def test_add_libraries_closure(tmp_path: Path) -> None:
    pkg = tmp_path / "libs-pkg"
    libdir = pkg / "lib" / "x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (libdir / "libc.so.6").write_bytes(_elf(soname="libc.so.6"))
    (libdir / "ld-linux-x86-64.so.2").write_bytes(_elf(soname="ld-linux-x86-64.so.2"))
    (libdir / "libz.so.1.2.13").write_bytes(_elf(["libc.so.6"], soname="libz.so.1"))
    (libdir / "libz.so.1").symlink_to("libz.so.1.2.13")
    (libdir / "libunused.so.1").write_bytes(_elf(["libc.so.6"], soname="libunused.so.1"))
    stage = initramfs.Stage(tmp_path / "root")
    stage.root.mkdir()
    (stage.root / "lib64").symlink_to("usr/lib64")
    stage.write("usr/bin/tool", _elf(["libz.so.1"], interp="/lib64/ld-linux-x86-64.so.2"), 0o755)
    index = initramfs.library_index([pkg])
    added = initramfs.add_libraries(stage, index)
    assert added == ["ld-linux-x86-64.so.2", "libc.so.6", "libz.so.1"]
    lib = stage.root / "usr/lib/x86_64-linux-gnu"
    assert not (lib / "libz.so.1").is_symlink()  # copied, not linked
    ld = stage.root / "usr/lib64/ld-linux-x86-64.so.2"
    assert ld.is_symlink() and ld.resolve() == (lib / "ld-linux-x86-64.so.2").resolve()

    stage.write("usr/bin/other", _elf(["libmissing.so.3"]), 0o755)
    with pytest.raises(ValueError, match=r"usr/bin/other needs libmissing\.so\.3"):
        initramfs.add_libraries(stage, index)


# ---------------------------------------------------------------- keys


def test_dropbear_key_format_and_key_files(tmp_path: Path) -> None:
    keys = sshkeys.ensure_keys(tmp_path / "k")
    data = keys.host_key.read_bytes()
    (n,) = struct.unpack_from(">I", data, 0)
    assert data[4 : 4 + n] == b"ssh-ed25519"
    (m,) = struct.unpack_from(">I", data, 4 + n)
    assert m == 64 and len(data) == 4 + n + 4 + 64
    import base64

    pub_blob = base64.b64decode(keys.host_pub.split()[1])
    assert pub_blob.endswith(data[-32:])  # the public half matches the published key
    for p in (keys.client_key, keys.host_key):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert sshkeys.ensure_keys(tmp_path / "k") == keys  # stable once generated
    assert keys.client_pub.startswith("ssh-ed25519 ")


# ---------------------------------------------------------------- input hash + qemu args


def _inputs(tmp_path: Path) -> image._Inputs:
    agent = tmp_path / "irqlab_agent"
    agent.mkdir(exist_ok=True)
    (agent / "__init__.py").write_text("x = 1\n")
    (agent / "__pycache__").mkdir(exist_ok=True)
    (agent / "__pycache__" / "junk.pyc").write_bytes(b"ignored")
    kmod = tmp_path / "irqlab.ko"
    kmod.write_bytes(b"module v1")
    hdr = tmp_path / "irqlab.h"
    hdr.write_text("#define X 1\n")
    k = tmp_path / "k"
    kart = kernel.KernelArtifacts("6.1.0-99-amd64", "6.1.300-1", k, k, k, k, k, k, k)
    keys = sshkeys.SshKeys(k, "ssh-ed25519 AAAA client", k, "ssh-ed25519 BBBB")
    return image._Inputs(
        kernel=kart,
        packages=(Package("busybox-static", "1:1.35", "amd64"),),
        extra_packages=(),
        agent_dir=agent,
        agent_files={"irqlab.h": hdr},
        kmod=kmod,
        authorized_keys="ssh-ed25519 AAAA client\n",
        keys=keys,
        compression="zstd",
    )


def test_input_hash_tracks_every_input(tmp_path: Path) -> None:
    inp = _inputs(tmp_path)
    base = inp.digest()
    assert inp.digest() == base
    (inp.agent_dir / "__pycache__" / "junk.pyc").write_bytes(b"changed")
    assert inp.digest() == base  # bytecode caches are not inputs
    variants = [
        replace(inp, packages=(Package("busybox-static", "1:1.36", "amd64"),)),
        replace(inp, kernel=replace(inp.kernel, package_version="6.1.301-1")),
        replace(inp, kmod=None),
        replace(inp, authorized_keys=inp.authorized_keys + "ssh-rsa other\n"),
        replace(inp, compression="lz4"),
        replace(inp, extra_packages=("rt-tests",)),
        replace(inp, keys=replace(inp.keys, host_pub="ssh-ed25519 CCCC")),
        replace(inp, kernel_modules=("crc_itu_t",)),
    ]
    digests = {v.digest() for v in variants}
    assert base not in digests and len(digests) == len(variants)
    assert inp.kmod is not None
    inp.kmod.write_bytes(b"module v2")
    d2 = inp.digest()
    (inp.agent_dir / "__init__.py").write_text("x = 2\n")
    d3 = inp.digest()
    inp.agent_files["irqlab.h"].write_text("#define X 2\n")
    d4 = inp.digest()
    assert len({base, d2, d3, d4}) == 4


def test_qemu_args(tmp_path: Path) -> None:
    inp = _inputs(tmp_path)
    img = boot.GuestImage(
        version="abc",
        kernel=Path("/c/vmlinux"),
        initramfs=Path("/c/initramfs.cpio.zst"),
        cmdline="console=ttyS0 quiet",
        kernel_version="6.1.0-99-amd64",
        kernel_artifacts=inp.kernel,
        client_key=Path("/c/key"),
        host_key="ssh-ed25519 BBBB",
        directory=Path("/c"),
    )
    args = img.qemu_args(2222, cmdline_extra=["irqlab_modprobe=irqlab"])
    assert args[args.index("-kernel") + 1] == "/c/vmlinux"
    assert args[args.index("-initrd") + 1] == "/c/initramfs.cpio.zst"
    assert args[args.index("-bios") + 1] == "qboot.rom"
    assert args[args.index("-append") + 1] == "console=ttyS0 quiet irqlab_modprobe=irqlab"
    assert (
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:0-:7708"
        in args
    )
    assert "pvpanic-pci" in args
    assert "virtio-net-pci,netdev=net0,romfile=" in args
    assert "virtio-rng-pci" in args
    assert boot.cpu_args("tcg") == ["-cpu", "qemu64,+rdrand"]
    assert boot.cpu_args("kvm") == ["-cpu", "host"]
    assert img.known_hosts_line(2222) == "[127.0.0.1]:2222 ssh-ed25519 BBBB"


def test_kernel_modules_to_ship_are_the_kernels_own(tmp_path: Path) -> None:
    mods = tmp_path / "lib" / "modules" / "6.1.0-99-amd64"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(
        "kernel/lib/crc-itu-t.ko:\nkernel/lib/crc7.ko:\nkernel/drivers/uio/uio.ko:\n"
    )
    (mods / "modules.builtin").write_text("kernel/lib/crc32.ko\n")
    k = tmp_path
    kart = kernel.KernelArtifacts("6.1.0-99-amd64", "6.1.300-1", k, k, mods, k, k, k, k)
    assert image.kernel_modules_to_ship(kart, ()) == ()
    # as the kernel names them, sorted; built-in ones need no shipping
    assert image.kernel_modules_to_ship(kart, ["crc7", "crc-itu-t", "crc32", "crc7"]) == (
        "crc7",
        "crc_itu_t",
    )
    with pytest.raises(image.UnknownKernelModule, match=r"no module named nope.*6\.1\.0-99"):
        image.kernel_modules_to_ship(kart, ["crc7", "nope"])
    # what the image ships anyway is not asked for again (its digest stays the standard's)
    assert image.kernel_modules_to_ship(kart, ["uio", "crc7"], present=["uio"]) == ("crc7",)
    assert image.kernel_modules_to_ship(kart, ["uio"], present=["uio", "not-here"]) == ()


def test_an_image_without_more_kernel_modules_keeps_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipping none is the digest images had before kernel_modules existed: no rebuild."""
    from irqlab.build import cache

    labels: list[str] = []
    add_str = cache.InputHash.add_str

    def record(self: cache.InputHash, label: str, value: str) -> None:
        labels.append(label)
        add_str(self, label, value)

    monkeypatch.setattr(cache.InputHash, "add_str", record)
    inp = replace(_inputs(tmp_path), kernel_modules=())
    plain = inp.digest()
    assert "kernel-modules" not in labels  # hashed as before the setting existed
    assert replace(inp, kernel_modules=("crc7",)).digest() != plain
    assert "kernel-modules" in labels
    assert "kernel_modules" not in outputs.image_variant_record((), "zstd", True)
    assert outputs.image_variant_record((), "zstd", True, ("crc7",))["kernel_modules"] == ["crc7"]
