"""The native responder: its build recipe, its output on the host, the agent's ops."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from test_agent_protocol import fake_abi

from irqlab.build import responder
from irqlab.paths import repo_root
from irqlab.testing.helpers import process_exited
from irqlab_agent.agent import Agent
from irqlab_agent.native import PATHS, build_argv
from irqlab_agent.protocol import Writer, parse_request

SOURCE = repo_root() / responder.SOURCE


def test_source_includes_the_uapi_and_register_map_and_retypes_nothing() -> None:
    text = SOURCE.read_text()
    assert "#include <linux/irqlab.h>" in text
    assert '#include "irqlab-regs.h"' in text
    assert not re.search(r"#define\s+IRQLAB_", text), "IRQLAB_ constants come from the headers"


def test_the_key_follows_libc6_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    """The binary is static: a glibc update (libc6-dev's version) is another binary, and
    the CI key (the build packages' closure) changes with it; this key did not."""
    monkeypatch.setattr(responder, "compiler_version", lambda _cc: "gcc (Debian 12.2.0-14) 12.2.0")
    sources = responder.read_sources()
    monkeypatch.setattr(responder, "libc_version", lambda: "2.36-9+deb12u9")
    before = responder.input_digest("gcc", sources)
    assert responder.input_digest("gcc", sources) == before
    monkeypatch.setattr(responder, "libc_version", lambda: "2.36-9+deb12u10")
    assert responder.input_digest("gcc", sources) != before


def test_libc_version_is_dpkgs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked of dpkg: a cache of its own, not the developer's, whose stored answer would
    pass without asking (and which the test would write)."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    r = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libc6-dev"], capture_output=True, text=True
    )
    expected = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "not installed"
    assert responder.libc_version() == expected


@pytest.fixture(scope="module")
def binary() -> Path:
    return responder.ensure_responder()


def test_recipe_builds_a_static_binary_without_warnings(binary: Path) -> None:
    # ensure_responder fails on any -Wall -Wextra warning; here: static, executable.
    data = binary.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in data, "the responder must be linked statically"
    r = subprocess.run([binary, "no-such-path"], capture_output=True, text=True, check=False)
    assert r.returncode == 2


def test_responder_reports_json_when_its_path_fails(binary: Path) -> None:
    # read(2) on /dev/null returns 0 (end of file): armed, then an error ends the run.
    r = subprocess.run(
        [binary, "-n", "3", "-d", "/dev/null", "read"], capture_output=True, text=True, check=False
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "ready"
    out = json.loads(lines[1])
    assert (out["path"], out["exit"], out["rows"]) == ("read", "eof", [])
    assert out["clock_start"] is None, "no irqlab file: no clock offset"
    assert {"seq", "raise_ns", "isr_ns", "wake_ns", "ack_ns", "ack_latency_ns"} <= set(
        out["fields"]
    )
    assert r.returncode == 1


def test_agent_builds_the_responder_command_line() -> None:
    req = parse_request(
        b'{"id": 1, "op": "native_start", "path": "count", "count": 5, '
        b'"dev": "/dev/irqlab0-count", "ack_dev": "/dev/irqlab0", "ack_first_seq": 7}'
    )
    assert build_argv("/x", req) == [
        "/x",
        "-n",
        "5",
        "-d",
        "/dev/irqlab0-count",
        "-A",
        "/dev/irqlab0",
        "-F",
        "7",
        "count",
    ]
    assert set(PATHS) >= {"read", "sigio", "setsig", "eventfd", "uio", "gpio-cdev"}
    bad = parse_request(b'{"id": 2, "op": "native_start", "path": "teleport"}')
    with pytest.raises(Exception, match="unknown path"):
        build_argv("/x", bad)


def _fake(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fake-respond"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return p


def test_agent_starts_waits_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = {"path": "read", "acks": 2, "fields": ["seq"], "rows": [[1], [2]]}
    fake = _fake(tmp_path, f"echo ready\necho '{json.dumps(result)}'\n")
    monkeypatch.setenv("IRQLAB_RESPONDER", str(fake))
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    r = agent.handle_line(b'{"id": 1, "op": "native_start", "path": "read", "count": 2}')
    assert r["ok"] is True and r["argv"][0] == str(fake)
    r = agent.handle_line(b'{"id": 2, "op": "native_wait", "name": "read", "wait_s": 30}')
    assert (r["ok"], r["rc"], r["timed_out"], r["result"]) == (True, 0, False, result)
    r = agent.handle_line(b'{"id": 3, "op": "native_wait", "name": "read"}')
    assert r["ok"] is False and "no responder" in r["error"]


def test_agent_stops_a_responder_that_runs_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake reports when SIGTERM arrives, as the responder does (and ends its sleep:
    # left behind, every unit run added an orphan `sleep 600`).
    fake = _fake(
        tmp_path,
        """trap 'kill $sleeper; echo "{\\"exit\\": \\"stopped\\"}"; exit 0' TERM
echo ready
sleep 600 >/dev/null 2>&1 &
sleeper=$!
echo $sleeper > sleeper.pid
wait
""",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRQLAB_RESPONDER", str(fake))
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    assert agent.handle_line(b'{"id": 1, "op": "native_start", "path": "poll"}')["ok"]
    r = agent.handle_line(b'{"id": 2, "op": "native_wait", "name": "poll", "wait_s": 0.2}')
    assert r["timed_out"] is True and r["result"] == {"exit": "stopped"}
    sleeper = int((tmp_path / "sleeper.pid").read_text())
    assert process_exited(sleeper, 5.0), f"the fake's sleep {sleeper} outlived the test"


def test_agent_reports_a_responder_that_cannot_arm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake(tmp_path, "echo 'irqlab-respond read: /dev/irqlab0: No such file' >&2\nexit 2\n")
    monkeypatch.setenv("IRQLAB_RESPONDER", str(fake))
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    r = agent.handle_line(b'{"id": 1, "op": "native_start", "path": "read"}')
    assert r["ok"] is False and "No such file" in r["error"]
    assert agent.native.procs == {}


def test_tune_sets_the_switch_interval_and_the_ack_order() -> None:
    import sys

    from irqlab_agent.fastack import TUNING

    before = sys.getswitchinterval()
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    try:
        r = agent.handle_line(b'{"id": 1, "op": "tune", "switch_interval_s": 0.002}')
        assert r["ok"] and r["switch_interval_s"] == pytest.approx(0.002)
        r = agent.handle_line(b'{"id": 2, "op": "tune", "ack_first": false}')
        assert r["ack_first"] is False and TUNING.ack_first is False
        r = agent.handle_line(b'{"id": 3, "op": "tune", "switch_interval_s": 0}')
        assert r["ok"] is False
    finally:
        TUNING.ack_first = True
        sys.setswitchinterval(before)


def test_responder_covers_every_path_the_agent_has() -> None:
    from irqlab_agent.agent import HW_PATH_KINDS
    from irqlab_agent.paths import PATH_KINDS

    assert set(PATHS) == set(PATH_KINDS) | set(HW_PATH_KINDS)
    text = SOURCE.read_text()
    for p in PATHS:
        assert f'"{p}"' in text, f"irqlab-respond does not handle {p}"


@pytest.mark.parametrize("path", ["poll", "select"])
def test_a_read_error_after_readiness_ends_the_run_and_says_so(binary: Path, path: str) -> None:
    """/dev/null is always ready and reads end of file: the run ends at the first read
    (before: the loop spun on, and a later stop reported a clean "stopped").  epoll
    cannot watch /dev/null (EPERM); its loops end the same way, through after_ready()."""
    r = subprocess.run(
        [binary, "-n", "3", "-d", "/dev/null", path],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    out = json.loads(r.stdout.splitlines()[1])
    assert (out["path"], out["exit"], out["rows"]) == (path, "eof", []), out
    assert r.returncode == 1
