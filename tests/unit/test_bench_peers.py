"""bench-peers, pure parts: labgrid's environment from an image, summary, ratios, table;
and its rounds with stand-in runs (the snapshot held throughout)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from irqlab.bench import host, peers, runner
from irqlab.build import cache, image
from irqlab.cli.main import build_parser
from irqlab.vm import guest as guest_mod
from irqlab.vm import snapshot as snapshots

DATADIR = Path("/q/share/qemu")


def _image() -> image.GuestImage:
    return image.GuestImage(
        version="abc",
        kernel=Path("/c/vmlinux"),
        initramfs=Path("/c/initramfs.cpio"),
        cmdline="console=ttyS0 quiet panic=-1",
        kernel_version="6.1.0-99-amd64",
        kernel_artifacts=cast(Any, None),
        client_key=Path("/c/client_ed25519"),
        host_key="ssh-ed25519 BBBB",
        directory=Path("/c"),
    )


def _env(port: int = 2222, accel: str = "tcg") -> dict[str, Any]:
    img = _image()
    argv = peers.machine_argv(img, accel=accel, ssh_port=port, device="irqlab,id=irqlab0")
    return peers.labgrid_env(
        argv,
        qemu_binary=Path("/q/bin/qemu-system-x86_64"),
        datadir=DATADIR,
        ssh_port=port,
        ssh_user=img.ssh_user,
        client_key=img.client_key,
    )


def test_labgrid_env_boots_our_qemu_image_and_device() -> None:
    env = _env()
    main = env["targets"]["main"]
    drv = main["drivers"]["QEMUDriver"]
    assert env["tools"] == {"qemu": "/q/bin/qemu-system-x86_64"}
    assert env["images"] == {"kernel": "/c/vmlinux", "bios": "/q/share/qemu/qboot.rom"}
    assert drv["kernel"] == "kernel" and drv["bios"] == "bios"
    assert drv["machine"] == "q35" and drv["memory"] == "512M"
    assert drv["cpu"] == "qemu64,+rdrand"
    assert drv["boot_args"] == "console=ttyS0 quiet panic=-1"
    assert drv["display"] == "fb-headless"  # labgrid's "-display none"
    extra = shlex.split(drv["extra_args"])
    assert extra[:2] == ["-L", str(DATADIR)]
    for opt, value in [("-accel", "tcg"), ("-initrd", "/c/initramfs.cpio"), ("-smp", "1")]:
        assert extra[extra.index(opt) + 1] == value
    assert (
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:0-:7708"
        in extra
    )
    assert "virtio-net-pci,netdev=net0,romfile=" in extra
    assert "irqlab,id=irqlab0" in extra
    for opt in ("-nodefaults", "-no-reboot", "-no-user-config"):
        assert opt in extra
    # what labgrid sets itself must not be in extra_args (it refuses -append there)
    for opt in ("-kernel", "-append", "-bios", "-machine", "-m", "-cpu", "-display"):
        assert opt not in extra
    assert main["resources"]["NetworkService"] == {
        "address": "127.0.0.1",
        "port": 2222,
        "username": "root",
    }
    assert main["drivers"]["SSHDriver"] == {"keyfile": "/c/client_ed25519"}


def test_labgrid_env_kvm_cpu() -> None:
    drv = _env(accel="kvm")["targets"]["main"]["drivers"]["QEMUDriver"]
    assert drv["cpu"] == "host"
    assert "-accel kvm" in drv["extra_args"]


def test_env_yaml_round_trips() -> None:
    env = _env(port=4242)
    text = peers.env_yaml(env)
    assert json.loads(text) == env  # JSON is YAML 1.2: labgrid's loader reads it


def test_labgrid_env_rejects_what_labgrid_cannot_express() -> None:
    kw: dict[str, Any] = {
        "qemu_binary": Path("/q"),
        "datadir": None,
        "ssh_port": 22,
        "ssh_user": "root",
        "client_key": Path("/k"),
    }
    fwd = ["-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:22-:22"]
    with pytest.raises(ValueError, match="cpu"):
        peers.labgrid_env(["-machine", "q35", "-m", "1G", *fwd], **kw)
    with pytest.raises(ValueError, match="twice"):
        peers.labgrid_env(["-m", "1G", "-m", "2G"], **kw)
    with pytest.raises(ValueError, match="-display gtk"):
        peers.labgrid_env(["-display", "gtk"], **kw)
    with pytest.raises(ValueError, match="without a value"):
        peers.labgrid_env(["-cpu"], **kw)
    with pytest.raises(ValueError, match="hostfwd"):
        peers.labgrid_env(["-machine", "q35", "-m", "1G", "-cpu", "max"], **kw)
    env = peers.labgrid_env(["-machine", "q35", "-m", "1G", "-cpu", "max", *fwd], **kw)
    assert "-L" not in env["targets"]["main"]["drivers"]["QEMUDriver"]["extra_args"]


def _samples(with_labgrid: bool = True) -> dict[str, list[dict[str, Any]]]:
    restore = [0.8, 1.0, 0.9]
    cold = [3.2, 4.0, 3.6]
    out: dict[str, list[dict[str, Any]]] = {
        "restore": [
            {
                "round": i + 1,
                "whole": w,
                "inner": w - 0.2,
                "restored": True,
                "parts": {"command": 0.3},
            }
            for i, w in enumerate(restore)
        ],
        "cold": [{"round": i + 1, "whole": w, "restored": False} for i, w in enumerate(cold)],
    }
    if with_labgrid:
        out["labgrid"] = [
            {"round": i + 1, "whole": w, "inner": w - 0.3, "parts": {"command": c}}
            for i, (w, c) in enumerate([(4.0, 0.4), (4.4, 0.5), (3.3, 0.6)])
        ]
    return out


def test_summarize_medians_ranges_ratios() -> None:
    s = peers.summarize(_samples())
    rows, ratios = s["rows"], s["ratios"]
    assert rows["restore"]["median"] == 0.9
    assert (rows["restore"]["min"], rows["restore"]["max"]) == (0.8, 1.0)
    assert rows["labgrid"]["median"] == 4.0
    assert rows["labgrid_inner"]["median"] == pytest.approx(3.7)
    assert rows["cold"]["median"] == 3.6
    assert ratios["labgrid/restore"]["of_medians"] == pytest.approx(4.0 / 0.9)
    assert ratios["cold/restore"]["of_medians"] == pytest.approx(4.0)
    # like for like: the scripts' own times against each other
    assert rows["restore_inner"]["median"] == pytest.approx(0.7)
    assert "cold_inner" not in rows
    assert "labgrid_inner/restore" not in ratios
    assert ratios["labgrid_inner/restore_inner"]["of_medians"] == pytest.approx(3.7 / 0.7)
    # per round: 3.7/0.6, 4.1/0.8, 3.0/0.7
    assert ratios["labgrid_inner/restore_inner"]["per_round_min"] == pytest.approx(3.0 / 0.7)
    assert ratios["labgrid_inner/restore_inner"]["per_round_max"] == pytest.approx(3.7 / 0.6)
    # paired per round: 4.0/0.8, 4.4/1.0, 3.3/0.9
    assert ratios["labgrid/restore"]["per_round_min"] == pytest.approx(3.3 / 0.9)
    assert ratios["labgrid/restore"]["per_round_max"] == pytest.approx(5.0)
    assert ratios["labgrid/restore"]["per_round_median"] == pytest.approx(4.4)
    assert s["parts"]["labgrid"] == {"command": 0.5}
    assert s["parts"]["restore"] == {"command": 0.3}
    assert "cold" not in s["parts"]


def test_summarize_without_labgrid_compares_with_cold_boot_only() -> None:
    s = peers.summarize(_samples(with_labgrid=False))
    assert set(s["ratios"]) == {"cold/restore"}
    assert "labgrid" not in s["rows"]


def _result(samples: dict[str, list[dict[str, Any]]], peer: dict[str, Any]) -> dict[str, Any]:
    la = {"1min": 1.5, "5min": 1.2, "15min": 1.0}
    return {
        "command": "python3 -c 'print(1)'",
        "rounds": 3,
        "accel": "tcg",
        "host": {"cpu_model": "Test CPU 9000", "cores": 2},
        "load": {"before": la, "after": la, "per_round_1min": [1.5, 1.6, 1.7]},
        "labgrid": peer,
        "samples": samples,
        "summary": peers.summarize(samples),
    }


def test_render_table() -> None:
    text = peers.render_table(_result(_samples(), {"status": "ok"}))
    assert "3 interleaved rounds, TCG" in text
    assert "labgrid 26.0.1" in text and "4.00 s" in text and "3.30-4.40 s" in text
    assert "labgrid/restore                 4.4x" in text
    assert "labgrid_inner/restore_inner     5.3x" in text
    assert "cold/restore                    4.0x" in text
    lines = text.splitlines()
    # each inner row right under its own kind's row
    restore_row = next(i for i, line in enumerate(lines) if line.startswith("irqlab Guest(),"))
    assert lines[restore_row + 1].startswith("  the same, without interpreter start")
    assert "0.70 s" in lines[restore_row + 1]
    assert "Test CPU 9000, 2 cores, accel tcg" in text
    assert "before 1.5/1.2/1.0" in text and "[1.5, 1.6, 1.7]" in text
    assert "FAILED" not in text


def test_render_table_warns_of_a_loaded_machine() -> None:
    """bench-peers' table gave its figures at a load of 1.5-1.7 on 2 cores without a word."""
    r = _result(_samples(), {"status": "ok"})  # 1.5, rounds 1.5/1.6/1.7, 1.5 on 2 cores
    (warned,) = [line for line in peers.render_table(r).splitlines() if "WARNING" in line]
    assert warned.startswith(
        "WARNING: a loaded machine: the 1-min load average exceeded 0.5 per core at before "
        "1.5 on 2 cores (0.75 per core), round 1 1.5 on 2 cores (0.75 per core), round 2 1.6 "
    )
    quiet = {"1min": 0.9, "5min": 0.8, "15min": 0.7, "cores": 2}
    r["load"] = {"before": quiet, "after": quiet, "per_round_1min": [0.6, 1.0]}
    assert "WARNING" not in peers.render_table(r)


def test_render_table_says_which_labgrid_step_failed() -> None:
    peer = {
        "status": "failed",
        "failed_step": "pip install labgrid==26.0.1",
        "error": "exit status 1",
        "tail": ["ERROR: No matching distribution found for labgrid==26.0.1"],
    }
    samples = _samples(with_labgrid=False)
    samples["restore"][1]["restored"] = False
    text = peers.render_table(_result(samples, peer))
    assert "labgrid: FAILED at step 'pip install labgrid==26.0.1': exit status 1" in text
    assert "| ERROR: No matching distribution found" in text
    assert "compared with our own cold boot only" in text
    assert "cold/restore" in text and "labgrid/restore" not in text
    assert "1 restore(s) fell back to a cold boot" in text


def test_ensure_peer_venv_names_the_failed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        rc = 1 if "pip" in argv else 0
        return subprocess.CompletedProcess(argv, rc, "", "no index reachable\n")

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    with pytest.raises(peers.StepFailure) as e:
        peers.ensure_peer_venv(tmp_path / "venv")
    assert e.value.step == "pip install labgrid==26.0.1"
    assert peers.tail(e.value.output) == ["no index reachable"]
    pip = next(a for a in calls if "pip" in a)
    assert "labgrid==26.0.1" in pip
    assert all("==" in r for r in peers.LABGRID_REQUIREMENTS)  # everything pinned


def test_labgrid_script_compiles() -> None:
    compile(peers.LABGRID_SCRIPT, "labgrid_whole.py", "exec")
    assert peers.RESULT_PREFIX in peers.LABGRID_SCRIPT


def test_cli_registers_bench_peers() -> None:
    args = build_parser().parse_args(["bench-peers", "--rounds", "3", "--out", "/tmp/x"])
    assert args.rounds == 3 and args.out == Path("/tmp/x")
    assert build_parser().parse_args(["bench-peers"]).rounds == peers.DEFAULT_ROUNDS


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "peer.py"
    path.write_text(body)
    return path


def test_run_script_times_a_process_and_reads_its_result_line(tmp_path: Path) -> None:
    import sys
    import time

    body = (
        "import time, json\n"
        "T0 = time.monotonic()\n"
        f"print({peers.RESULT_PREFIX!r} + json.dumps({{'t0_monotonic': T0, 'import_s': 0.25,"
        " 'x': 1}))\n"
    )
    t0 = time.monotonic()
    run = peers.run_script([sys.executable, _script(tmp_path, body)], 60, "a step")
    wall = time.monotonic() - t0
    assert run.result["x"] == 1
    assert 0 < run.whole <= wall
    # from the spawn to the script's first line, plus the imports it reports
    assert 0.25 < run.python_and_imports < run.whole + 0.25


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("import sys\nprint('booting')\nsys.exit(3)\n", "exit status 3"),
        ("print('booting')\n", "printed no IRQLAB-PEER-RESULT line"),
    ],
)
def test_run_script_names_the_step_and_keeps_the_output(
    tmp_path: Path, body: str, error: str
) -> None:
    import sys

    with pytest.raises(peers.StepFailure) as e:
        peers.run_script([sys.executable, _script(tmp_path, body)], 60, "irqlab restore x")
    assert e.value.step == "irqlab restore x" and e.value.error == error
    assert "booting" in e.value.output


def test_irqlab_script_is_python_and_times_what_a_user_script_does() -> None:
    compile(peers.IRQLAB_SCRIPT, "irqlab_whole.py", "exec")
    compile(peers.LABGRID_SCRIPT, "labgrid_whole.py", "exec")
    head = peers.IRQLAB_SCRIPT.split("T_IMPORT = ")[0]
    # the clock starts before the imports a user's script makes, as labgrid's does
    assert head.index("T0 = time.monotonic()") < head.index("from irqlab.vm.guest import")


def test_scripts_run_with_a_bytecode_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("IRQLAB_PEER_PROBE", "kept")
    body = (
        "import os, time, json\n"
        f"print({peers.RESULT_PREFIX!r} + json.dumps({{'t0_monotonic': time.monotonic(),"
        " 'import_s': 0, 'dont': sys.dont_write_bytecode, 'probe': os.environ.get("
        "'IRQLAB_PEER_PROBE')}))\n"
    ).replace("import os,", "import os, sys,")
    run = peers.run_script([sys.executable, _script(tmp_path, body)], 60, "a step")
    assert run.result["dont"] is False and run.result["probe"] == "kept"


def test_the_snapshot_is_held_through_every_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other guests' saves prune the snapshot cache (``IRQLAB_SNAPSHOT_KEEP``): the
    default configuration's snapshot was evicted between rounds and a "restore" row
    cold-booted.  Here another guest prunes to nothing before every run: the bench's
    snapshot stays, and is free again once the bench ended."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    snap = cache.cached_build(
        snapshots.RECIPE, "0" * 16, lambda t: (t / snapshots.STATE_FILE).write_bytes(b"x")
    )
    prepared = SimpleNamespace(
        accel=SimpleNamespace(accel="tcg"),
        qemu=SimpleNamespace(binary=Path("/q")),
        image=SimpleNamespace(version="v"),
    )
    monkeypatch.setattr(guest_mod.Guest, "prepare", lambda g: prepared)
    monkeypatch.setattr(guest_mod, "ensure_snapshot", lambda config=None: snap)

    def no_labgrid() -> Path:
        raise peers.StepFailure("pip install labgrid", "offline")

    monkeypatch.setattr(peers, "ensure_peer_venv", no_labgrid)
    there: list[bool] = []

    def run(self: peers.IrqlabRunner, name: str, *, snapshot: bool) -> dict[str, Any]:
        pruned = snapshots.prune(0)  # another guest's save, keeping none
        there.append(snap not in pruned and snapshots.lookup("0" * 16) == snap)
        return {"whole": 1.0, "inner": 0.5, "restored": snapshot, "parts": {}}

    monkeypatch.setattr(peers.IrqlabRunner, "__call__", run)
    monkeypatch.setattr(runner, "lock_path", lambda: tmp_path / "bench.lock")
    path = peers.run_peers(2, tmp_path / "out", progress=lambda _m: None)
    assert there == [True] * 4  # restore and cold, two rounds
    assert json.loads(path.read_text())["snapshot"] == str(snap)
    assert not cache.in_use(snap)  # released at the end
    assert snapshots.prune(0) == [snap]


def test_a_snapshot_pruned_before_it_was_held_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    made: list[Path] = []

    def ensure() -> Path:
        d = cache.cached_build(
            snapshots.RECIPE, "0" * 16, lambda t: (t / snapshots.STATE_FILE).write_bytes(b"x")
        )
        if not made:
            snapshots.prune(0)  # pruned between the lookup and the hold
        made.append(d)
        return d

    d, held = host.held_snapshot(ensure)
    with held:
        assert len(made) == 2 and cache.in_use(d) and snapshots.prune(0) == []
