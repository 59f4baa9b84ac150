"""``Guest.put``/``put_bytes`` replace a file whole: an interrupted copy (a timeout,
Ctrl-C) left the target cut at whatever had arrived; ``SshClient.put``/``put_bytes``
run the same command (:mod:`irqlab.vm.guestfile`).  The guest's shell is this host's
here (the command is POSIX), the files its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from irqlab.vm.guestfile import PUT_TEMP_MARK, put_command
from irqlab.vm.ssh import RemoteWriteError, RunResult, SshClient

LOCAL_TIMEOUT = 10.0


def _put(remote: Path | str, data: bytes, mode: int = 0o644) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", put_command(str(remote), mode, len(data))],
        input=data, capture_output=True, timeout=LOCAL_TIMEOUT, check=False,
    )  # fmt: skip


def test_a_file_is_replaced_whole_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub dir" / "it's"
    assert _put(target, b"first").returncode == 0
    assert _put(target, b"second", 0o750).returncode == 0
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in target.parent.iterdir()] == ["it's"]  # no temporary left


NEW = b"the new contents, whole and long"  # the copies below get 25 bytes of it, then stop


def _start_copy(target: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A put of NEW to *target* under way, its first 25 bytes arrived (its temporary
    holds them), and that temporary."""
    p = subprocess.Popen(
        ["sh", "-c", put_command(str(target), 0o755, len(NEW))],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert p.stdin is not None
    p.stdin.write(NEW[:25])
    p.stdin.flush()
    partial = target.parent / f"{PUT_TEMP_MARK}{p.pid}"
    deadline = time.monotonic() + LOCAL_TIMEOUT
    while not (partial.exists() and partial.stat().st_size == 25):
        assert time.monotonic() < deadline and p.poll() is None, "the copy never began"
        time.sleep(0.001)  # a poll of the file's size, bounded by the deadline
    return p, partial


def test_a_copy_cut_short_by_eof_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """A timeout or Ctrl-C closes the command's channel first: its stdin's EOF ended
    cat as if the copy were whole, and the cut file was renamed over the target."""
    target = tmp_path / "tool"
    target.write_bytes(b"old and whole")
    p, partial = _start_copy(target)
    _, err = p.communicate(timeout=LOCAL_TIMEOUT)  # closes its stdin: EOF
    assert p.returncode != 0
    assert target.read_bytes() == b"old and whole"
    assert not partial.exists(), "the partial copy was left"
    assert (
        err.decode().strip() == f"irqlab put: the copy was cut short: 25 of {len(NEW)} bytes came"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_copy_a_signal_ends_removes_its_temporary(tmp_path: Path, sig: signal.Signals) -> None:
    target = tmp_path / "tool"
    target.write_bytes(b"old and whole")
    p, partial = _start_copy(target)
    os.killpg(p.pid, sig)
    p.communicate(timeout=LOCAL_TIMEOUT)
    assert p.returncode != 0
    assert target.read_bytes() == b"old and whole"
    assert not partial.exists(), "the partial copy was left"


def test_a_killed_copys_temporary_goes_with_the_next_put_there(tmp_path: Path) -> None:
    """SIGKILL (how a timed-out command's processes are killed) leaves no trap to run:
    the next put into the directory removes what a writer that is gone left."""
    target = tmp_path / "tool"
    target.write_bytes(b"old and whole")
    p, partial = _start_copy(target)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=LOCAL_TIMEOUT)
    assert target.read_bytes() == b"old and whole"
    assert partial.read_bytes() == NEW[:25]
    assert _put(tmp_path / "other", b"x").returncode == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ["other", "tool"]


def test_a_running_copys_temporary_is_not_swept(tmp_path: Path) -> None:
    """Two puts into one directory at once: the second leaves the first's alone."""
    target = tmp_path / "tool"
    p, partial = _start_copy(target)
    try:
        assert _put(tmp_path / "other", b"x").returncode == 0
        assert partial.read_bytes() == NEW[:25]
        p.communicate(NEW[25:], timeout=LOCAL_TIMEOUT)
        assert p.returncode == 0 and target.read_bytes() == NEW
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(LOCAL_TIMEOUT)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["other", "tool"]


def test_a_link_and_a_special_file_are_written_in_place(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert _put(link, b"through the link").returncode == 0
    assert link.is_symlink() and real.read_bytes() == b"through the link"


@pytest.mark.parametrize("remote", ["/proc/sys/kernel/printk", "/sys/nosuch", "/dev/irqlab0"])
def test_proc_sys_and_dev_are_written_in_place_and_keep_their_mode(remote: str) -> None:
    """Never run here (it would write the host's own files): the command's branch for
    them is a plain write, no rename, no chmod (a device node kept its mode)."""
    special = put_command(remote, 0o644, 1).split(";;")[0]
    assert special.endswith(f"cat > {remote}"), special


def test_a_name_near_name_max_has_room_for_its_temporary(tmp_path: Path) -> None:
    """The temporary was named after the file: a name of 250 bytes made it too long."""
    target = tmp_path / ("n" * 250)
    assert _put(target, b"long").returncode == 0, "the temporary's name was too long"
    assert target.read_bytes() == b"long"


def test_a_bad_path_or_data_is_refused_before_anything_runs() -> None:
    """On a guest never started: nothing reaches the guest (no guest is needed)."""
    from irqlab.vm.guest import Guest, GuestConfig

    g = Guest(GuestConfig(name="put"))
    with pytest.raises(ValueError, match="must name a file, not a directory"):
        g.put_bytes(b"x", "/root/dir/")
    with pytest.raises(ValueError, match="a guest path must be absolute, not 'tmp/x'"):
        g.put_bytes(b"x", "tmp/x")
    with pytest.raises(TypeError, match="data must be bytes, not str"):
        g.put_bytes("x", "/tmp/x")  # type: ignore[arg-type]


def test_a_directorys_path_in_extra_files_is_refused_before_any_boot(tmp_path: Path) -> None:
    """It passed the config check, then failed after a cold boot."""
    from irqlab.vm.guest import GuestConfig, GuestConfigError

    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(GuestConfigError, match="names a directory, not a file"):
        GuestConfig(extra_files={"/root/d/": f})


def test_sshclient_put_runs_guest_puts_command_with_its_checks_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SshClient.put wrote with SFTP: in place (a copy cut short left a cut file, a
    running program could not be replaced), no parents made, errors of its own."""
    from irqlab.vm.guest import GuestWriteError

    client = SshClient("127.0.0.1", 1)  # never connected: its run() is the host's sh
    ran: list[str] = []

    def run_here(
        cmd: str, *, timeout: float = 60.0, check: bool = False, input: bytes | None = None
    ) -> RunResult:
        ran.append(cmd)
        p = subprocess.run(
            ["sh", "-c", cmd], input=input, capture_output=True, timeout=LOCAL_TIMEOUT,
            check=False,
        )  # fmt: skip
        return RunResult(p.returncode, p.stdout.decode(), p.stderr.decode(errors="replace"))

    monkeypatch.setattr(client, "run", run_here)
    target = tmp_path / "made" / "tool"
    local = tmp_path / "local"
    local.write_bytes(b"whole")
    local.chmod(0o750)
    client.put(local, str(target))
    assert ran == [put_command(str(target), 0o750, len(b"whole"))]
    assert target.read_bytes() == b"whole" and target.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in target.parent.iterdir()] == ["tool"]  # no temporary left
    with pytest.raises(RemoteWriteError) as e:
        client.put_bytes(b"x", str(local / "under a file"))
    assert str(e.value).startswith(f"cannot write {local}/under a file in the guest: mkdir: ")
    assert "\n" not in str(e.value) and e.value.result.rc != 0
    assert issubclass(GuestWriteError, RemoteWriteError)  # one kind of error for both
    with pytest.raises(ValueError, match="a guest path must be absolute, not 'tmp/x'"):
        client.put_bytes(b"x", "tmp/x")
    with pytest.raises(TypeError, match="data must be bytes, not str"):
        client.put_bytes("x", "/tmp/x")  # type: ignore[arg-type]
    assert len(ran) == 2  # the refusals ran nothing


def test_a_local_file_of_extra_files_that_cannot_be_read_is_refused_before_any_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put once the guest is ready (no module of the user's), they are in no snapshot
    key, which read them before anything started: a missing one was found after a boot."""
    from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError

    monkeypatch.setattr(Guest, "prepare", lambda self: pytest.fail("looked further"))
    g = Guest(GuestConfig(extra_files={"/root/x": tmp_path / "missing"}))
    with pytest.raises(GuestConfigError, match=r"cannot read .*missing for the guest"):
        g.start()
    assert g.machine is None
