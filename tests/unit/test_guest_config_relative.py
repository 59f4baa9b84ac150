"""A relative local path in a GuestConfig (``extra_modules``, ``extra_files``' local
files) is the current directory's when the config is made, not when the guest starts:
a script that made its config in the module's directory, then changed directory (to
run make elsewhere, say) started "extra module not found: /elsewhere/mydrv.ko"."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_irqlab_kmod import _fake_ko  # same directory (rootdir-relative import)

from irqlab.vm.guest import Guest, GuestConfig


def test_relative_paths_are_the_directory_the_config_was_made_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "mydrv"
    (build / "fw").mkdir(parents=True)
    ko = _fake_ko(build / "mydrv.ko", "mydrv", params=("parm=tag:a tag", "parmtype=tag:charp"))
    (build / "fw" / "mydrv.bin").write_bytes(b"fw")
    monkeypatch.chdir(build)
    config = GuestConfig(
        extra_modules=["mydrv.ko"],
        extra_module_params={"mydrv": {"tag": "x"}},
        extra_files={"/lib/firmware/mydrv.bin": Path("fw/mydrv.bin")},
        load_irqlab=False,
    )
    monkeypatch.chdir(tmp_path)
    config.check()  # as the guest's prepare does: after the change of directory
    assert [Path(m) for m in config.extra_modules] == [ko]
    assert config.extra_files == {"/lib/firmware/mydrv.bin": build / "fw" / "mydrv.bin"}
    g = Guest(config)
    g._check_extra_module_params()  # reads the .ko's .modinfo: found where it was
    assert g._extra_module_args(ko) == " tag=x"


def test_absolute_paths_and_the_given_types_are_kept(tmp_path: Path) -> None:
    ko = _fake_ko(tmp_path / "a.ko", "a")
    config = GuestConfig(extra_modules=(ko,), extra_files={"/x": str(ko)})
    assert config.extra_modules == (ko,) and config.extra_files == {"/x": str(ko)}
    assert GuestConfig(extra_modules=["b.ko"]).extra_modules == [str(Path.cwd() / "b.ko")]
