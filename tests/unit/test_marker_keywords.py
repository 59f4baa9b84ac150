"""The ``irqlab`` marker's keywords are one list, :data:`irqlab.testing.plugin.
MARKER_DEFAULTS`: the parser takes them, ``pytest --markers`` shows them with their
defaults, and the README's section on the marker says each.  The plugin's docstring
spelled a list of its own, without ``hotplug=`` and ``check_kernel_log=``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irqlab.paths import repo_root
from irqlab.testing import plugin

pytest_plugins = ["pytester"]

README_SECTION = "The marker `@pytest.mark.irqlab(...)` configures"


def test_the_readme_says_every_keyword_the_parser_takes() -> None:
    text = (repo_root() / "README.md").read_text()
    start = text.index(README_SECTION)
    section = text[start : text.index("Options:", start)]
    missing = sorted(k for k in plugin.MARKER_KEYWORDS if f"`{k}=" not in section)
    assert not missing, f"README's section on the marker does not say {missing}"


def test_pytest_markers_shows_every_keyword_with_its_default(pytester: pytest.Pytester) -> None:
    r = pytester.runpytest_subprocess("--markers")
    line = next(ln for ln in r.outlines if ln.startswith("@pytest.mark.irqlab("))
    signature = line.split("(", 1)[1].split("):", 1)[0]
    assert signature == ", ".join(f"{k}={v!r}" for k, v in plugin.MARKER_DEFAULTS.items())
    assert sorted(plugin.MARKER_DEFAULTS) == sorted(plugin.MARKER_KEYWORDS)


def test_the_plugins_docstring_spells_no_list_of_its_own() -> None:
    assert plugin.__doc__ is not None
    assert not re.search(r"mark\.irqlab\(\w+=", plugin.__doc__), "a second list"
    assert "MARKER_DEFAULTS" in plugin.__doc__


class _Node:
    def __init__(self, **kwargs: object) -> None:
        self.mark = pytest.mark.irqlab(**kwargs).mark

    def iter_markers(self, name: str) -> list[pytest.Mark]:
        return [self.mark] if name == "irqlab" else []


class _Request:
    def __init__(self, **kwargs: object) -> None:
        self.node = _Node(**kwargs)


def test_a_misspelt_keyword_gets_a_suggestion() -> None:
    """``modlues=`` listed every keyword, unlike a misspelt device property it did
    not say which was meant."""
    with pytest.raises(pytest.fail.Exception) as info:
        plugin.fresh_guest_config(_Request(modlues=["x.ko"]))  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith("@pytest.mark.irqlab takes "), msg
    assert msg.endswith("not modlues= (did you mean modules=?)"), msg
    with pytest.raises(pytest.fail.Exception) as info:
        plugin.fresh_guest_config(_Request(zzzz=1))  # type: ignore[arg-type]
    assert str(info.value).endswith("not zzzz="), str(info.value)  # nothing close


class _FileNode(_Node):
    path = Path(__file__)


class _FileRequest:
    def __init__(self, **kwargs: object) -> None:
        self.node = _FileNode(**kwargs)


def test_the_marker_sets_the_module_load_timeout() -> None:
    """A test whose module's init hangs waited the fixed 60 s: nothing of the marker's
    reached the limit."""
    config = plugin.fresh_guest_config(_FileRequest(module_load_timeout=5))  # type: ignore[arg-type]
    assert config.module_load_timeout == 5
    assert plugin.fresh_guest_config(_FileRequest()).module_load_timeout == 60  # type: ignore[arg-type]
    for bad, said in ((0, "must be more than 0"), ("5", "must be a number of seconds")):
        with pytest.raises(pytest.fail.Exception) as info:
            plugin.fresh_guest_config(_FileRequest(module_load_timeout=bad))  # type: ignore[arg-type]
        msg = str(info.value)
        assert msg.startswith(f"@pytest.mark.irqlab(module_load_timeout={bad!r}): "), msg
        assert said in msg, msg
