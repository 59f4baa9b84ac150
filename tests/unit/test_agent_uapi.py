"""The agent's ABI comes from the ABI artifact (abi.json), made from the real header by
the host's parser; the staged and shipped agent package carries it and nothing else of
the host."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.build.image import ABI_ARTIFACT, abi_artifact, default_agent_files
from irqlab.contract import uapi
from irqlab.vm.agent_client import AgentClient, stage_agent
from irqlab_agent.abi import load_abi

U = uapi.load(uapi.header_path())


def test_abi_from_the_real_header_matches_the_parser(abi_json: Path) -> None:
    abi = load_abi(abi_json)
    assert abi.record_size == U.record.size == U.constants["IRQLAB_EVENT_SIZE"]
    assert abi.record.fields == U.record.item_names
    for name, io in U.ioctls.items():
        assert abi.ioctl(name.removeprefix("IRQLAB_IOC_")).request == io.request
        assert abi.ioc_field(io.request, "nr") == io.nr
        assert abi.ioc_field(io.request, "size") == io.size
    # Offsets come from the artifact, as the parser computed them.
    assert {n: off for n, (off, _) in abi.record.layout().items()} == {
        f.name: f.offset for f in U.record.fields
    }
    # The agent's ACK relies on these fields; the protocol's names on the record's.
    ack = abi.ioctl("ACK").arg
    assert ack is not None and "seq" in ack.fields and "latency_ns" in ack.fields
    ev = abi.decode(bytes(abi.record_size))[0]
    for key in ("seq", "source", "line", "kind", "flags", "value", "raise_ns", "drv_wake_ns"):
        assert key in ev, key
    assert "wake_ns" not in ev  # the protocol's wake_ns is the agent's own wake-up
    assert set(abi.flags) >= {"OVERFLOW"}


def test_the_image_ships_the_artifact_of_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    files = default_agent_files()
    assert list(files) == [ABI_ARTIFACT]
    assert files[ABI_ARTIFACT].read_text() == uapi.abi_json(uapi.header_path())
    # Keyed by the header's text: another header, another artifact.
    other = tmp_path / "irqlab.h"
    other.write_text(uapi.header_path().read_text().replace("__u32 lost;", "__u32 lost2;"))
    assert abi_artifact(other) != files[ABI_ARTIFACT]
    assert "lost2" in abi_artifact(other).read_text()


def test_the_agent_without_its_artifact_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ABI artifact is missing"):
        load_abi(tmp_path / "abi.json")


def test_staged_agent_starts_with_only_the_staged_files(tmp_path: Path) -> None:
    dest = stage_agent(tmp_path / "stage")
    pkg = dest / "irqlab_agent"
    assert (pkg / "abi.json").read_text() == uapi.abi_json(uapi.header_path())
    assert not (pkg / "_uapi.py").exists() and not (pkg / "irqlab.h").exists()
    assert (pkg / "__main__.py").is_file() and not list(pkg.rglob("__pycache__"))
    # -I -S: no site-packages (so no host irqlab package), no cwd: the staged dir only.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runpy; "
        "sys.argv = ['irqlab_agent']; runpy.run_module('irqlab_agent', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code, str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin and proc.stdout and proc.stderr

    def _close() -> None:
        proc.wait(10)

    client = AgentClient(proc.stdin, proc.stdout, proc.stderr, logs=tmp_path, on_close=_close)
    hello = client.wait_hello(20)
    assert hello["abi"]["record_size"] == U.record.size
    assert "read" in hello["paths"] and hello["paths"]["read"]["summarizable"] is True
    assert client.ping()["pong"] is True
    client.close()
    assert proc.returncode == 0


def _imported_packages(pkg: Path, *, full: bool = False) -> dict[str, set[str]]:
    """{module file: top-level packages it imports (anywhere in it)}; *full*: the
    modules' full names."""
    out: dict[str, set[str]] = {}
    for f in pkg.rglob("*.py"):
        tops: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                tops |= {a.name if full else a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                tops.add(node.module if full else node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                tops.add("<importlib>")
        out[str(f.relative_to(pkg.parent))] = tops
    return out


def test_no_import_between_the_host_package_and_the_agent() -> None:
    """They meet only through the ABI artifact and the JSON protocol: the host reads
    the protocol's own limits (its MAX_LINE) from its module (stdlib only), nothing
    else of the agent's."""
    harness = Path(uapi.__file__).resolve().parents[2]
    for name, tops in _imported_packages(harness / "irqlab_agent").items():
        assert not tops & {"irqlab", "<importlib>"}, name
    for name, mods in _imported_packages(harness / "irqlab", full=True).items():
        agent_mods = {m for m in mods if m.split(".")[0] == "irqlab_agent"}
        assert agent_mods <= {"irqlab_agent.protocol"}, (name, agent_mods)


@pytest.mark.parametrize(
    ("path", "dev", "sent"),
    [
        ("count", None, "/dev/irqlab0-count"),  # the device itself: EINVAL
        ("read", None, "/dev/irqlab0"),
        ("count", "/dev/other-count", "/dev/other-count"),
    ],
)
def test_arm_defaults_to_the_file_the_path_reads(path: str, dev: str | None, sent: str) -> None:
    asked: list[tuple[str, dict[str, object]]] = []
    client = AgentClient.__new__(AgentClient)  # its request alone: what arm sends
    client.request = lambda op, **args: asked.append((op, args)) or {}  # type: ignore[method-assign]
    client.arm(path, **({"dev": dev} if dev is not None else {}))
    assert asked == [("arm", {"path": path, "dev": sent})]
