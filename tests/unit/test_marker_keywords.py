"""The ``irqlab`` marker's keywords are one list, :data:`irqlab.testing.plugin.
MARKER_DEFAULTS`: the parser takes them, ``pytest --markers`` shows them with their
defaults, and the README's section on the marker says each.  The plugin's docstring
spelled a list of its own, without ``hotplug=`` and ``check_kernel_log=``."""

from __future__ import annotations

import re

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
