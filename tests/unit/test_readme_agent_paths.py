"""The README's table of the agent's paths is the agent's own: every path kind the agent
arms, in its order, whether it is a record path, each kind's own options and the fields
its events carry; and the options every path takes.  A newcomer needed the agent's
source for gpio-cdev's ``edge`` values, that its line is ``ev["offset"]`` and which paths
are record paths."""

from __future__ import annotations

import inspect
import re
import sys

from irqlab.contract import uapi
from irqlab.paths import repo_root
from irqlab_agent.acks import ACK_MODES
from irqlab_agent.agent import ALL_PATH_KINDS, ARM_OPTIONS
from irqlab_agent.paths import NotificationPath

HEADER = "| path | record path | what it arms | its own options | its events' fields besides |"


def _readme() -> str:
    return (repo_root() / "README.md").read_text()


def _rows() -> dict[str, list[str]]:
    text = _readme()
    rows: dict[str, list[str]] = {}
    for line in text[text.index(HEADER) :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, *cells = (c.strip() for c in line.strip("|").split("|"))
        rows[name.strip("`")] = cells
    return rows


def _options(text: str) -> set[str]:
    """The options a README cell or paragraph names: ```name=...```."""
    return set(re.findall(r"`([a-z_]+)=", text))


def test_the_table_lists_every_path_in_the_agents_order() -> None:
    rows = _rows()
    assert list(rows) == list(ALL_PATH_KINDS)
    for name, (record, *_) in rows.items():
        summarizable = bool(getattr(ALL_PATH_KINDS[name], "summarizable", False))
        assert record == ("yes" if summarizable else "no"), name


def test_each_paths_own_options_are_its_kinds() -> None:
    for name, (_, _, options, _) in _rows().items():
        own = ALL_PATH_KINDS[name].options - NotificationPath.options
        assert _options(options) == own, name


def test_the_options_every_path_takes_and_the_ack_modes() -> None:
    text = _readme()
    para = text[text.index("Every path takes `name=`") : text.index(HEADER)]
    common = _options(re.split(r"the path's own\s+options are below", para)[0])
    assert common == (ARM_OPTIONS - {"path"}) | NotificationPath.options
    for mode in ACK_MODES:
        assert f'`"{mode}"`' in para, mode
    assert "`ack_invalid`" in para and "`ack=False`" in para
    spec = uapi.abi_spec(uapi.load(uapi.header_path()))
    record = [f["name"] for f in spec["record"]["fields"]]  # type: ignore[index]
    said = set(re.findall(r"`([a-z_]+)`", para))
    assert {"drv_wake_ns" if f == "wake_ns" else f for f in record} <= said


def test_each_event_field_is_one_the_agent_sends() -> None:
    """A field the table names is a string of the path's own module or the base's."""
    base = inspect.getsource(sys.modules[NotificationPath.__module__])
    for name, (_, _, _, fields) in _rows().items():
        source = inspect.getsource(sys.modules[ALL_PATH_KINDS[name].__module__]) + base
        for field in re.findall(r"`([a-z_]+)`", fields):
            assert f'"{field}"' in source, (name, field)


def test_the_readme_says_when_a_stuck_read_is_answered() -> None:
    """It said "at wait_ms the agent answers": a read no signal ends is answered the
    signals' grace (INTERRUPT_GRACE_S, 1 s) later."""
    from irqlab_agent.agent import INTERRUPT_GRACE_S

    text = " ".join(_readme().split())
    assert (
        f"{INTERRUPT_GRACE_S:g} s after `wait_ms` (the signals' grace, `INTERRUPT_GRACE_S`" in text
    )
    assert f"or {INTERRUPT_GRACE_S:g} s later (the signals' grace) with `stuck`" in text
