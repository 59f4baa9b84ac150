"""Unit tests of the QEMU build recipe's pure logic (no network, no build)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fake_dpkg import FakeDpkg  # same directory (rootdir-relative import)

from irqlab.build import debs, fetch, qemu
from irqlab.build.steps import BuildError, StepLog
from irqlab.paths import repo_root

FIRMWARE = {"ipxe-qemu": "1.0-1", "qemu-system-data": "1:7.2+dfsg-7", "seabios": "1.16.2-1"}
DEBIAN = qemu.QemuSource("debian", "1:7.2+dfsg-7+deb12u18")


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    d = tmp_path / "qemu-device"
    shutil.copytree(repo_root() / "qemu-device", d)
    return d


# ---- input hashing ---------------------------------------------------------


def test_digest_is_stable(device_dir: Path) -> None:
    a = qemu.input_digest(DEBIAN, device_dir, FIRMWARE)
    b = qemu.input_digest(DEBIAN, device_dir, dict(reversed(FIRMWARE.items())))
    assert a == b
    assert len(a) == 16


@pytest.mark.parametrize("name", qemu.DEVICE_FILES)
def test_digest_changes_with_each_device_file(device_dir: Path, name: str) -> None:
    before = qemu.input_digest(DEBIAN, device_dir, FIRMWARE)
    with (device_dir / name).open("a") as f:
        f.write("\n")
    assert qemu.input_digest(DEBIAN, device_dir, FIRMWARE) != before


def test_digest_changes_with_source_firmware_and_flags(device_dir: Path) -> None:
    base = qemu.input_digest(DEBIAN, device_dir, FIRMWARE)
    other_src = qemu.QemuSource("debian", "1:7.2+dfsg-7+deb12u19")
    assert qemu.input_digest(other_src, device_dir, FIRMWARE) != base
    assert qemu.input_digest(qemu.upstream_source(), device_dir, FIRMWARE) != base
    newer_bios = {**FIRMWARE, "seabios": "1.16.3-1"}
    assert qemu.input_digest(DEBIAN, device_dir, newer_bios) != base
    flags = (*qemu.CONFIGURE_FLAGS, "--enable-debug")
    assert qemu.input_digest(DEBIAN, device_dir, FIRMWARE, flags) != base


def test_device_files_exist() -> None:
    for name in qemu.DEVICE_FILES:
        assert (repo_root() / "qemu-device" / name).is_file(), name


def test_source_slug_has_no_epoch() -> None:
    assert DEBIAN.slug == "7.2+dfsg-7+deb12u18"
    assert qemu.upstream_source().slug == f"upstream-{qemu.UPSTREAM_DEFAULT}"


# ---- deb-src entry -----------------------------------------------------------

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_deb_src_mirrors_deb822_stanzas() -> None:
    out = qemu.deb_src_entries([DEBIAN_SOURCES])
    stanzas = qemu.parse_deb822(out)
    assert [s["Types"] for s in stanzas] == ["deb-src", "deb-src"]
    assert [s["URIs"] for s in stanzas] == [
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    ]
    assert stanzas[0]["Suites"] == "bookworm bookworm-updates"
    assert stanzas[1]["Suites"] == "bookworm-security"
    assert all(s["Components"] == "main" for s in stanzas)
    assert all(s["Signed-By"].endswith("debian-archive-keyring.gpg") for s in stanzas)
    assert "snapshot" not in out  # comments are not copied


def test_deb_src_skips_disabled_src_only_and_duplicates() -> None:
    text = (
        DEBIAN_SOURCES
        + "\nTypes: deb-src\nURIs: http://x.example/d\nSuites: s\nComponents: main\n"
        + "\nTypes: deb\nURIs: http://y.example/d\nSuites: s\nEnabled: no\n"
    )
    out = qemu.deb_src_entries([text, DEBIAN_SOURCES])
    uris = [s["URIs"] for s in qemu.parse_deb822(out)]
    assert uris == ["http://mirror.example/debian", "http://mirror.example/debian-security"]


def test_deb_src_from_one_line_sources_list() -> None:
    sources_list = (
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian-security bookworm-security main # trailing\n"
    )
    stanzas = qemu.parse_deb822(qemu.deb_src_entries([], sources_list))
    assert stanzas == [
        {
            "Types": "deb-src",
            "URIs": "http://mirror.example/debian",
            "Suites": "bookworm",
            "Components": "main contrib",
            "Signed-By": "/k.gpg",
        },
        {
            "Types": "deb-src",
            "URIs": "http://mirror.example/debian-security",
            "Suites": "bookworm-security",
            "Components": "main",
        },
    ]


def test_deb_src_nothing_to_mirror() -> None:
    assert qemu.deb_src_entries(["Types: deb-src\nURIs: http://a/\nSuites: s\n"]) == ""


# ---- upstream source -----------------------------------------------------------


def test_upstream_default_url_and_hash() -> None:
    src = qemu.upstream_source()
    assert src.kind == "upstream"
    assert src.url == f"https://download.qemu.org/qemu-{qemu.UPSTREAM_DEFAULT}.tar.xz"
    assert src.sha256 == qemu.UPSTREAM_RELEASES[qemu.UPSTREAM_DEFAULT]
    assert len(src.sha256) == 64
    assert int(src.sha256, 16) >= 0


def test_upstream_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="no pinned checksum"):
        qemu.upstream_source("1.0.0")


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, "debian"),
        ({"IRQLAB_QEMU_SOURCE": "upstream"}, "upstream"),
        ({"IRQLAB_QEMU_SOURCE": " "}, "debian"),
    ],
)
def test_source_kind(env: dict[str, str], kind: str) -> None:
    assert qemu.source_kind(env) == kind


def test_source_kind_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="IRQLAB_QEMU_SOURCE"):
        qemu.source_kind({"IRQLAB_QEMU_SOURCE": "git"})


def test_verify_sha256(tmp_path: Path) -> None:
    f = tmp_path / "qemu-x.tar.xz"
    f.write_bytes(b"not really a tarball")
    good = hashlib.sha256(b"not really a tarball").hexdigest()
    fetch.verify_sha256(f, good)
    fetch.verify_sha256(f, good.upper())
    with pytest.raises(ValueError, match="does not match"):
        fetch.verify_sha256(f, "0" * 64)


def test_a_user_is_told_every_root_step_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root, on a fresh host: the build sent the user to root for the packages,
    then again with a raw PermissionError writing the deb-src file.  Now one refusal,
    before anything runs, lists the packages, the deb-src entry and apt's update."""
    (tmp_path / "debian.sources").write_text(DEBIAN_SOURCES)
    monkeypatch.setattr(qemu, "APT_SOURCES_D", tmp_path)
    monkeypatch.setattr(qemu, "APT_SOURCES_LIST", tmp_path / "none")
    monkeypatch.setattr(qemu, "_have_qemu_source", lambda _v: False)
    monkeypatch.setattr(qemu.debs, "missing_packages", lambda names: ["meson", "libfdt-dev"])
    with StepLog(tmp_path / "q.log", lambda _m: None) as steps, pytest.raises(BuildError) as e:
        qemu._check_root_steps(steps, ["meson", "libfdt-dev", "gcc"], DEBIAN, tmp_path / "src")
    msg = str(e.value)
    assert "building QEMU needs these steps as root first:" in msg
    assert "1. apt-get install --no-install-recommends meson libfdt-dev" in msg
    assert f"2. write {qemu.DEB_SRC_FILE} with:" in msg and "Types: deb-src" in msg
    assert "3. apt-get update" in msg
    # an unpacked source needs no deb-src; nothing missing: nothing to refuse
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "configure").write_text("")
    with StepLog(tmp_path / "q.log", lambda _m: None) as steps, pytest.raises(BuildError) as e:
        qemu._check_root_steps(steps, ["meson"], DEBIAN, tmp_path / "src")
    assert "deb-src" not in str(e.value) and "apt-get update" not in str(e.value)
    monkeypatch.setattr(qemu.debs, "missing_packages", lambda names: [])
    with StepLog(tmp_path / "q.log", lambda _m: None) as steps:
        qemu._check_root_steps(steps, ["meson"], DEBIAN, tmp_path / "src")


# ---- errors name the step and the log ----------------------------------------


def test_build_error_names_step_and_log(tmp_path: Path) -> None:
    log = tmp_path / "build" / "qemu.log"
    with StepLog(log, lambda _m: None) as steps, pytest.raises(BuildError) as ei:
        steps.run("compile", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    msg = str(ei.value)
    assert "'compile'" in msg
    assert str(log) in msg
    assert "boom" in log.read_text()
    assert qemu.BuildError is BuildError


def test_step_exception_becomes_build_error(tmp_path: Path) -> None:
    log = tmp_path / "qemu.log"
    with StepLog(log, lambda _m: None) as steps, pytest.raises(BuildError) as ei:  # noqa: SIM117
        with steps.step("source"):
            raise OSError("network unreachable")
    assert ei.value.step == "source"
    assert "network unreachable" in str(ei.value)
    assert str(log) in str(ei.value)


# ---- apt state fingerprint -----------------------------------------------------


def test_apt_lists_state_tracks_package_lists(tmp_path: Path) -> None:
    assert qemu.apt_lists_state(tmp_path / "missing") == "no-lists"
    (tmp_path / "x_Packages").write_text("a")
    (tmp_path / "lock").write_text("")
    s1 = qemu.apt_lists_state(tmp_path)
    (tmp_path / "lock").write_text("ignored")
    assert qemu.apt_lists_state(tmp_path) == s1
    (tmp_path / "x_Packages").write_text("ab")
    assert qemu.apt_lists_state(tmp_path) != s1


# ---- graft script ---------------------------------------------------------------


def _graft_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("graft", repo_root() / "qemu-device" / "graft.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("ss", ["softmmu_ss", "system_ss"])
def test_graft_is_idempotent(tmp_path: Path, ss: str) -> None:
    graft = _graft_module()
    tree = tmp_path / "qemu"
    (tree / "hw" / "misc").mkdir(parents=True)
    (tree / "docs" / "specs").mkdir(parents=True)
    (tree / "hw" / "misc" / "Kconfig").write_text("config EDU\n    bool\n")
    (tree / "hw" / "misc" / "meson.build").write_text(
        f"{ss}.add(when: 'CONFIG_EDU', if_true: files('edu.c'))\n"
    )
    (tree / "docs" / "specs" / "index.rst").write_text(".. toctree::\n\n   edu\n   fw_cfg\n")
    first = graft.graft(tree, docs=True)
    assert len(first) == 6
    assert graft.graft(tree, docs=True) == []
    meson = (tree / "hw" / "misc" / "meson.build").read_text()
    assert f"{ss}.add(when: 'CONFIG_IRQLAB', if_true: files('irqlab.c'))" in meson
    assert meson.count("CONFIG_IRQLAB") == 1
    kconfig = (tree / "hw" / "misc" / "Kconfig").read_text()
    assert kconfig.count("config IRQLAB") == 1
    assert (tree / "include" / "hw" / "misc" / "irqlab-regs.h").is_file()
    assert "   edu\n   irqlab\n   fw_cfg" in (tree / "docs" / "specs" / "index.rst").read_text()


# ---- cache lookup: find_qemu / warm ensure_qemu never build -------------------


def _no_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache in *tmp_path*, the current inputs faked (no apt), building refused."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("IRQLAB_QEMU_SOURCE", raising=False)
    monkeypatch.setattr(qemu, "_apt_versions", lambda names: {n: FIRMWARE[n] for n in names})

    def no_build(*_a: object) -> None:
        raise AssertionError("must not build")

    monkeypatch.setattr(qemu, "_build", no_build)


def _cached(manifest: object = None) -> Path:
    """A complete cached QEMU for the current (faked) inputs, with *manifest* if given."""
    import json

    from irqlab.build import cache

    digest = qemu.input_digest(
        qemu.QemuSource("debian", FIRMWARE["qemu-system-data"]), qemu.device_dir(), FIRMWARE
    )
    out = cache.output_dir("qemu", digest)
    (out / "bin").mkdir(parents=True)
    (out / "bin" / qemu.TARGET).write_text("")
    (out / "VERSION").write_text("7.2.22 (debian x)\n")
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest))
    (out / ".complete").write_text(digest)
    return out


def test_warm_lookup_does_not_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_build(tmp_path, monkeypatch)
    assert qemu.find_qemu() is None
    out = _cached()

    found = qemu.find_qemu()
    assert found == qemu.QemuInstall(
        out / "bin" / qemu.TARGET, out / "share" / "qemu", "7.2.22 (debian x)"
    )
    assert qemu.ensure_qemu(log=lambda _m: None) == found


def test_a_bad_keep_count_is_a_usage_error_on_a_warm_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`irqlab build-qemu` with QEMU cached said nothing of a bad $IRQLAB_CACHE_KEEP
    (read only before a build), and a build's exited 1, not 2."""
    from irqlab.cli.main import main

    _no_build(tmp_path, monkeypatch)
    _cached()
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "eight")
    assert main(["build-qemu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("irqlab: IRQLAB_CACHE_KEEP='eight': expected how many") and (
        err.count("\n") == 1
    ), err


def test_the_current_source_tree_is_the_current_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/device/test_style.py ran the last ``src-*/scripts/checkpatch.pl`` in sort
    order: an upstream release's tree beside Debian's was taken for a Debian build."""
    _no_build(tmp_path, monkeypatch)
    for slug in ("7.2+dfsg-7", "upstream-9.1.0"):
        (qemu.work_dir() / f"src-{slug}" / "scripts").mkdir(parents=True)
    assert qemu.current_source_dir() == qemu.work_dir() / "src-7.2+dfsg-7"
    monkeypatch.setenv("IRQLAB_QEMU_SOURCE", "upstream")
    assert qemu.current_source_dir() == qemu.work_dir() / "src-upstream-9.1.0"


# ---- a cached QEMU in a fresh container: its shared libraries ------------------

LDD_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd1a5f2000)
\tlibpixman-1.so.0 => /lib/x86_64-linux-gnu/libpixman-1.so.0 (0x00007f3c1c000000)
\tlibfdt.so.1 => not found
\tlibslirp.so.0 => not found
\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f3c1be00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c1bc00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3c1c200000)
"""
LDD_FOUND = LDD_MISSING.replace(
    "libfdt.so.1 => not found",
    "libfdt.so.1 => /lib/x86_64-linux-gnu/libfdt.so.1 (0x00007f3c1c100000)",
).replace(
    "libslirp.so.0 => not found",
    "libslirp.so.0 => /lib/x86_64-linux-gnu/libslirp.so.0 (0x00007f3c1c180000)",
)
# dpkg -S on a merged-/usr Debian 12: each library is known by one of its spellings
DPKG_S = """\
libpixman-1-0:amd64: /usr/lib/x86_64-linux-gnu/libpixman-1.so.0
libfdt1:amd64: /usr/lib/x86_64-linux-gnu/libfdt.so.1
libslirp0:amd64: /usr/lib/x86_64-linux-gnu/libslirp.so.0
libglib2.0-0:amd64: /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0
libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6
diversion by foo from: /usr/lib/x86_64-linux-gnu/libc.so.6
dpkg-query: no path found matching pattern /usr/lib/x86_64-linux-gnu/libc.so.6
"""


def test_ldd_and_dpkg_output_are_read() -> None:
    assert qemu.libraries_not_found(LDD_MISSING) == ["libfdt.so.1", "libslirp.so.0"]
    assert qemu.libraries_not_found(LDD_FOUND) == []
    assert qemu.packages_from_dpkg_search(DPKG_S) == [
        "libc6",
        "libfdt1",
        "libglib2.0-0",
        "libpixman-1-0",
        "libslirp0",
    ]
    assert qemu.packages_from_dpkg_search("libfoo1:amd64, libfoo1:i386: /usr/lib/x") == ["libfoo1"]


def test_runtime_packages_asks_dpkg_for_both_usr_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ldd says /lib/..., dpkg may know the file as /usr/lib/... (merged /usr): asked as
    /lib only, it found libc6 and missed libglib2.0-0, libslirp0 ..."""
    asked: list[str] = []

    def dpkg_search(paths: list[str]) -> str:
        asked.extend(paths)
        return DPKG_S

    monkeypatch.setattr(qemu, "_ldd", lambda _b: LDD_FOUND)
    monkeypatch.setattr(qemu, "_dpkg_search", dpkg_search)
    assert qemu.runtime_packages(tmp_path / "qemu") == [
        "libc6",
        "libfdt1",
        "libglib2.0-0",
        "libpixman-1-0",
        "libslirp0",
    ]
    assert "/lib/x86_64-linux-gnu/libslirp.so.0" in asked
    assert qemu._usr_twin("/lib/x86_64-linux-gnu/libslirp.so.0") == (
        "/usr/lib/x86_64-linux-gnu/libslirp.so.0"
    )
    assert qemu._usr_twin("/usr/lib/x/l.so") == "/lib/x/l.so"


def _cached_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: object) -> Path:
    _no_build(tmp_path, monkeypatch)
    return _cached(manifest)


class _Host(FakeDpkg):
    """This host as a fresh container sees it (as root unless *uid* says otherwise): ldd's
    answer until apt installs the missing packages, dpkg's installed set, the apt-get
    calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, installed: set[str], uid: int = 0):
        super().__init__(monkeypatch, installed, uid)
        monkeypatch.setattr(qemu, "_ldd", self.ldd)

    def ldd(self, _binary: Path) -> str:
        return LDD_FOUND if {"libfdt1", "libslirp0"} <= self.installed else LDD_MISSING


def test_a_cache_hit_installs_the_libraries_qemu_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache restored into a fresh debian:12 container: build-qemu said the cached QEMU
    was ready (exit 0), and the guest's start failed with "error while loading shared
    libraries" (libslirp0, libfdt1 ... came only with the -dev build dependencies)."""
    runtime = ["libc6", "libfdt1", "libglib2.0-0", "libpixman-1-0", "libslirp0"]
    out = _cached_install(tmp_path, monkeypatch, {"runtime_packages": runtime})
    host = _Host(monkeypatch, {"libc6", "libglib2.0-0", "libpixman-1-0"})
    inst = qemu.ensure_qemu(log=lambda _m: None)
    assert inst.binary == out / "bin" / qemu.TARGET
    assert host.apt == [["libfdt1", "libslirp0"]]
    qemu.ensure_qemu(log=lambda _m: None)  # all there now: apt is not asked again
    assert host.apt == [["libfdt1", "libslirp0"]]


def test_an_install_without_the_record_installs_the_known_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install made before the manifest recorded its runtime packages."""
    _cached_install(tmp_path, monkeypatch, {"digest": "x"})
    host = _Host(monkeypatch, {"libc6"})
    qemu.ensure_qemu(log=lambda _m: None)
    assert host.apt == [[p for p in qemu.RUNTIME_PACKAGES_FALLBACK if p != "libc6"]]


def test_without_root_the_missing_packages_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cached_install(tmp_path, monkeypatch, {"runtime_packages": ["libfdt1", "libslirp0"]})
    host = _Host(monkeypatch, set(), uid=1000)
    with pytest.raises(BuildError) as e:
        qemu.ensure_qemu(log=lambda _m: None)
    assert "libfdt.so.1, libslirp.so.0 not found" in str(e.value)
    # in the words of every refusal to install (not root)
    assert debs.install_refusal(["libfdt1", "libslirp0"], "") in str(e.value)
    assert host.apt == []


def test_a_library_no_recorded_package_brings_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recorded package is installed and a library is still missing: apt cannot
    help, the message says to rebuild."""
    _cached_install(tmp_path, monkeypatch, {"runtime_packages": ["libc6"]})
    host = _Host(monkeypatch, {"libc6"})
    with pytest.raises(BuildError, match=r"cannot find libfdt.so.1, libslirp.so.0.*--force"):
        qemu.ensure_qemu(log=lambda _m: None)
    assert host.apt == []


def test_a_library_still_missing_after_the_install_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt installed what the manifest records and the loader still misses a library (a
    package that moved it): the error names what is still missing, not a QEMU that
    fails at its start."""
    _cached_install(tmp_path, monkeypatch, {"runtime_packages": ["libfdt1", "libslirp0"]})
    host = _Host(monkeypatch, set())
    monkeypatch.setattr(qemu, "_ldd", lambda _b: LDD_MISSING)  # whatever apt installs
    with pytest.raises(BuildError, match=r"still cannot find libfdt.so.1, libslirp.so.0 after "
                       r"installing libfdt1 libslirp0"):  # fmt: skip
        qemu.ensure_qemu(log=lambda _m: None)
    assert host.apt == [["libfdt1", "libslirp0"]]


def test_a_guest_started_outside_build_qemu_gets_the_libraries_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's Guest(), `irqlab shell`/`run`, from a cache restored into a fresh
    container: the loader's "error while loading shared libraries" at QEMU's start
    (only build-qemu and the plugin installed them).  Once per process: no ldd again."""
    from irqlab.build.arch import X86_64
    from irqlab.build.debs import os as debs_os
    from irqlab.vm.guest import Guest, PrerequisiteMissing

    out = _cached_install(tmp_path, monkeypatch, {"runtime_packages": ["libfdt1", "libslirp0"]})
    monkeypatch.setattr(qemu, "_RUNNABLE", set())
    host = _Host(monkeypatch, set(), uid=1000)  # not root: named
    with pytest.raises(PrerequisiteMissing, match="the built QEMU cannot run here:") as e:
        Guest._find_qemu(X86_64)
    assert "apt-get install libfdt1 libslirp0" in str(e.value)
    monkeypatch.setattr(debs_os, "geteuid", lambda: 0)  # root: installed, then not
    # looked at again in this process
    lddcalls: list[Path] = []
    ldd = host.ldd
    monkeypatch.setattr(qemu, "_ldd", lambda b: lddcalls.append(b) or ldd(b))
    for _ in range(2):
        assert Guest._find_qemu(X86_64).binary == out / "bin" / qemu.TARGET
    assert host.apt == [["libfdt1", "libslirp0"]] and len(lddcalls) == 2  # before, after


def test_a_guest_meeting_a_qemu_build_in_progress_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's Guest() while another shell ran `irqlab build-qemu` said "QEMU ... is
    not built: run irqlab build-qemu"; it names the build and its process now."""
    from irqlab.build.arch import X86_64
    from irqlab.vm.guest import Guest, PrerequisiteMissing

    _no_build(tmp_path, monkeypatch)
    with pytest.raises(PrerequisiteMissing, match="is not built: run `irqlab build-qemu`"):
        Guest._find_qemu(X86_64)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR);"
         " fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0);"  # as holders do: the
         " os.write(fd, b'%d\\n' % os.getpid());"  # probe above wrote its own pid
         " print('held', flush=True); sys.stdin.read()",
         str(qemu.work_dir() / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(PrerequisiteMissing) as e:
            Guest._find_qemu(X86_64)
        assert str(e.value).startswith(
            "QEMU with the irqlab device is being built: "
            f"process {holder.pid} is preparing or building QEMU's source tree"
        )
        assert "`irqlab build-qemu` waits for it" in str(e.value)
    finally:
        holder.communicate("")
    # the lock is free again: not built, as before
    with pytest.raises(PrerequisiteMissing, match="is not built"):
        Guest._find_qemu(X86_64)


def test_apt_failing_finds_the_cached_qemu_of_this_device_source_or_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt-cache failing (no package lists, as in a CI image that restored the cache;
    apt's lock): `irqlab run` said "QEMU with the irqlab device is not built" with QEMU
    cached.  The newest cached build whose recorded versions, with this device source
    and configuration, hash to its name is used (said once); none: apt's words."""
    import os

    from irqlab import notice
    from irqlab.build import debs
    from irqlab.build.arch import X86_64
    from irqlab.vm.guest import Guest, PrerequisiteMissing

    _no_build(tmp_path, monkeypatch)
    lock = "E: Could not get lock /var/lib/apt/lists/lock"

    def no_apt(names: object) -> dict[str, str]:
        raise debs.AptError(lock)

    monkeypatch.setattr(qemu, "_apt_versions", no_apt)
    with pytest.raises(PrerequisiteMissing) as e:
        Guest._find_qemu(X86_64)
    assert str(e.value) == f"cannot tell which QEMU build is current: {lock}; run apt-get update"
    source = {"kind": "debian", "version": FIRMWARE["qemu-system-data"]}
    out = _cached({"source": source, "firmware": FIRMWARE})
    other = out.with_name(f"qemu-{'0' * 16}")  # newer, of another device source
    shutil.copytree(out, other)
    os.utime(other, (os.path.getmtime(out) + 9,) * 2)
    said: list[str] = []
    monkeypatch.setattr(notice, "_sink", said.append)
    for _ in range(2):
        found = qemu.find_qemu()
        assert found is not None and found.binary == out / "bin" / qemu.TARGET
    assert len(said) == 1 and out.name in said[0] and lock in said[0]
