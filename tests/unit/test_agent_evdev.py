"""The agent's evdev paths (read, poll, SIGIO) on a FIFO carrying ``struct input_event``s,
and that layout checked against the kernel's ``linux/input.h`` with the C compiler."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from agent_fifo import Fifo  # same directory (rootdir-relative import)

from irqlab.bench.runner import available_paths
from irqlab.vm.agent_client import AgentClient, AgentError
from irqlab_agent.evdev import EV_KEY, EV_SYN, INPUT_EVENT, SYN_DROPPED, SYN_REPORT

KEY_ENTER = 28
EVDEV_PATHS = ["evdev-read", "evdev-poll", "evdev-sigio"]


def input_event(typ: int, code: int, value: int, sec: int = 7, usec: int = 250) -> bytes:
    return INPUT_EVENT.pack(sec, usec, typ, code, value)


def key(value: int) -> bytes:
    """One key packet as gpio_keys writes it: EV_KEY, then SYN_REPORT."""
    return input_event(EV_KEY, KEY_ENTER, value) + input_event(EV_SYN, SYN_REPORT, 0)


@pytest.mark.parametrize("path", EVDEV_PATHS)
def test_evdev_path_reports_key_events_not_syn_reports(
    agent: AgentClient,
    fifo: Fifo,
    path: str,
) -> None:
    armed = agent.arm(path, dev=fifo.path)
    assert armed["event_size"] == INPUT_EVENT.size and armed["input"] is None, armed
    assert armed["clock"] == "realtime"  # a FIFO takes no EVIOCSCLOCKID
    fifo.push(*(key(v) for v in (1, 0) * 3))
    evs = agent.events(6, path=path, timeout=20)
    assert [e["key"] for e in evs] == ["press", "release"] * 3
    assert {(e["ev_type"], e["code"], e["time_ns"]) for e in evs} == {
        (EV_KEY, KEY_ENTER, 7_000_250_000)
    }
    assert all(e["ack_latency_ns"] is None and e["wake_ns"] > 0 for e in evs)
    st = agent.disarm(path)[path]
    assert st["events"] == 6 and st["flags"] == {"SYN_REPORT": 6} and st["acks"] == 0, st
    assert agent.pending() == []


def test_evdev_path_reports_syn_dropped(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("evdev-poll", dev=fifo.path)
    fifo.push(input_event(EV_SYN, SYN_DROPPED, 0))
    ev = agent.expect(path="evdev-poll", timeout=10)
    assert ev["dropped"] is True and ev["ev_type"] == EV_SYN, ev


def test_evdev_sigio_carries_the_signal(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("evdev-sigio", dev=fifo.path)
    fifo.push(key(1))
    assert agent.expect(path="evdev-sigio", key="press")["signal"]["signo"] == 29  # SIGIO


def test_evdev_path_by_name_without_such_device(agent: AgentClient) -> None:
    with pytest.raises(AgentError, match="no input device named 'irqlab-nokeys'"):
        agent.arm("evdev-read", input="irqlab-nokeys")
    assert agent.stats()["paths"] == {}


def test_hello_lists_evdev_paths_the_bench_leaves_out(agent: AgentClient) -> None:
    paths = agent.hello["paths"]
    for p in EVDEV_PATHS:
        assert paths[p] == {"summarizable": False, "device_events": False}, paths[p]
    assert paths["read"]["device_events"] is True
    have, missing = available_paths(paths)
    assert not set(EVDEV_PATHS) & set(have) and "read" in have and not missing


C_CHECK = r"""
#include <stddef.h>
#include <linux/input.h>
_Static_assert(sizeof(struct input_event) == {size}, "size");
_Static_assert(offsetof(struct input_event, type) == {type}, "type");
_Static_assert(offsetof(struct input_event, code) == {code}, "code");
_Static_assert(offsetof(struct input_event, value) == {value}, "value");
"""


def test_input_event_layout_is_the_kernel_headers() -> None:
    """The agent's native layout agrees with linux/input.h as this host's C compiler
    lays it out (the agent runs on the guest's own Python: the same rule there)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or not Path("/usr/include/linux/input.h").exists():
        pytest.fail("no C compiler or no linux/input.h: apt-get install gcc linux-libc-dev")
    word = 2 * struct.calcsize("@L")  # __sec, __usec; then u16 type, u16 code, s32 value
    src = C_CHECK.format(size=INPUT_EVENT.size, type=word, code=word + 2, value=word + 4)
    r = subprocess.run(
        [cc, "-x", "c", "-fsyntax-only", "-"], input=src, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    # ... and fails for another word size (the check can fail)
    bad = C_CHECK.format(size=16, type=8, code=10, value=12)
    r = subprocess.run(
        [cc, "-x", "c", "-fsyntax-only", "-"], input=bad, capture_output=True, text=True
    )
    assert r.returncode != 0


def test_no_evdev_node_at_all_says_to_load_evdev(tmp_path: Path) -> None:
    """gpio_keys loaded without evdev: the input device is there, no /dev/input/eventN;
    the error said only "(there are: [])"."""
    from irqlab_agent.abi import Abi
    from irqlab_agent.evdev import find_input

    abi = Abi.__new__(Abi)  # no node is opened: the ABI is not asked
    with pytest.raises(FileNotFoundError, match=r"no .*event\* at all \(is evdev loaded\?\)"):
        find_input(abi, "irqlab-keys", str(tmp_path / "event*"))


@pytest.mark.parametrize("kind", ["evdev-read", "evdev-poll", "evdev-sigio"])
def test_an_evdev_path_opens_a_character_device_that_is_no_irqlab_node(
    tmp_path: Path, kind: str
) -> None:
    """The record paths' check (GET_INFO answers) refused every input device: evdev
    answers a foreign ioctl with EINVAL.  An input device is no irqlab node."""
    from test_agent_protocol import fake_abi  # same directory (rootdir-relative import)

    from irqlab_agent.agent import INPUT_PATH_KINDS
    from irqlab_agent.paths import PathOptions

    path = INPUT_PATH_KINDS[kind]("k", fake_abi(), PathOptions("/dev/null"), lambda ev: None)
    path.open()  # /dev/null: a character device whose every ioctl fails
    try:
        assert path.fd >= 0
    finally:
        path.close_fds()
