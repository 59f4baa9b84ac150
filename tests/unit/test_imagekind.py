"""$IRQLAB_IMAGE is read in one place (irqlab.build.imagekind): the guest refuses a
value it cannot boot, `irqlab kdir` and pytest's report header take it as it is."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.build.imagekind import IMAGE_ENV, UnknownImageKind, image_kind, image_setting
from irqlab.errors import IrqlabError


def test_unset_is_debian_and_only_the_known_kinds_are_taken() -> None:
    assert IMAGE_ENV == "IRQLAB_IMAGE"
    assert image_setting({}) == image_kind({}) == "debian"
    assert image_kind({IMAGE_ENV: "buildroot"}) == "buildroot"
    assert image_setting({IMAGE_ENV: "Buildroot"}) == "Buildroot"  # as it is, unchecked
    with pytest.raises(UnknownImageKind) as info:
        image_kind({IMAGE_ENV: "Buildroot"})
    assert str(info.value) == "IRQLAB_IMAGE='Buildroot': use 'debian' or 'buildroot'"
    assert isinstance(info.value, ValueError) and isinstance(info.value, IrqlabError)


def test_each_reader_takes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    assert image_setting() == image_kind() == "debian"
    monkeypatch.setenv(IMAGE_ENV, "buildroot")
    assert image_setting() == image_kind() == "buildroot"


def test_the_guest_refuses_an_unknown_image_as_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from irqlab.vm import guest

    monkeypatch.setenv(IMAGE_ENV, "buildroot")
    assert guest.image_kind() == "buildroot"
    monkeypatch.setenv(IMAGE_ENV, "fedora")
    with pytest.raises(guest.GuestConfigError, match=r"^IRQLAB_IMAGE='fedora': use 'debian'"):
        guest.image_kind()


@pytest.mark.parametrize(("value", "shown"), [(None, "debian"), ("buildroot", "buildroot")])
def test_the_report_header_names_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, shown: str
) -> None:
    from irqlab.testing.diagnostics import report_header

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))  # nothing built
    if value is None:
        monkeypatch.delenv(IMAGE_ENV, raising=False)
    else:
        monkeypatch.setenv(IMAGE_ENV, value)
    header = report_header()
    assert header.endswith(f", image {shown}"), header
    assert ("kernel not extracted yet" in header) == (shown == "debian"), header


def test_kdir_takes_an_unknown_image_as_not_buildroot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from irqlab.cli.main import main

    monkeypatch.setattr(
        "irqlab.build.kernel.ensure_kernel",
        lambda arch: SimpleNamespace(headers_build_dir=Path("/h"), arch=arch),
    )
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    monkeypatch.setenv(IMAGE_ENV, "fedora")
    assert main(["kdir"]) == 0
    assert capsys.readouterr() == ("/h\n", "")  # no error, no Buildroot note


def test_kdir_imports_no_paramiko(tmp_path: Path) -> None:
    """`make -C $(irqlab kdir)` runs the command at every make: it imported paramiko
    through the run/shell parser, whatever it read $IRQLAB_IMAGE with."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "from pathlib import Path\n"
        "import irqlab.build.kernel as k\n"
        "k.ensure_kernel = lambda arch: types.SimpleNamespace(headers_build_dir=Path('/h'), "
        "arch=arch)\n"
        "from irqlab.cli.main import main\n"
        "print(main(['kdir']), 'paramiko' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", IMAGE_ENV: "buildroot", "IRQLAB_CACHE_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.stdout.splitlines() == ["/h", "0 False"], (r.stdout, r.stderr)
    assert "for the Buildroot guest" in r.stderr
