"""What the documentation names mechanically exists: every relative link (and its
anchor) resolves, every option given to an `irqlab` subcommand or an invoke task is
one that command takes, every fixture in the README's table is the plugin's with the
scope the table says, and the environment variables the README's table lists are the
ones the code reads.  A new user runs what the README shows literally; a renamed
option or file breaks that silently without these checks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.cli.main import build_parser
from irqlab.paths import repo_root

ROOT = repo_root()


def _docs() -> list[Path]:
    """The project's Markdown documentation: README.md, docs/, and those next to code."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found += sorted(p for d in ("guest-kmod", "qemu-device", "harness", "buildroot", "tests")
                    for p in (ROOT / d).rglob("*.md"))  # fmt: skip
    return found


DOCS = _docs()


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _prose(text: str) -> str:
    """*text* without its fenced code blocks (a `#` there is a comment, not a heading;
    a `](` is code)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped (but `-`
    and `_`), spaces as `-`."""
    text = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", _prose(doc.read_text(encoding="utf-8")), re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_slugs_are_githubs() -> None:
    assert _slug("Builds and the cache") == "builds-and-the-cache"
    assert _slug("As an ordinary user (not root)") == "as-an-ordinary-user-not-root"
    assert _slug("Against peers: `invoke bench-peers` / `irqlab bench-peers`") == (
        "against-peers-invoke-bench-peers--irqlab-bench-peers"
    )
    assert _slug("Your own project's CI") == "your-own-projects-ci"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_resolve(doc: Path) -> None:
    """A link to a file that moved, or to a heading that was reworded, is a dead end."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def _code(text: str) -> Iterator[str]:
    """The command lines of *text*: its inline code spans and the lines of its code blocks
    (a line ending in a backslash joined with the next, a `# comment` dropped)."""
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            yield re.sub(r"\s#\s.*$", "", line)
    for paragraph in re.split(r"\n\s*\n", _prose(text)):
        for span in re.findall(r"`([^`]+)`", paragraph):  # a span may wrap a line
            yield " ".join(span.split())


def _command_words(line: str, program: str) -> Iterator[tuple[str, str]]:
    """(command, the rest of its invocation) for each `<program> COMMAND ...` in *line*:
    the rest ends at the next shell separator or `--` (what follows is the guest's)."""
    for m in re.finditer(rf"(?<![\w./-]){program} ([a-z][a-z0-9-]*)((?: [^|;&`]*)?)", line):
        yield m.group(1), re.split(r" -- |\s\$\(", m.group(2) + " ")[0]


def _options(rest: str) -> list[str]:
    return re.findall(r"(?<![\w/=-])(--?[a-zA-Z][\w-]*)", rest)


def _parser_options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):  # inject's actions
            for sub in action.choices.values():
                found |= _parser_options(sub)
    return found


def _subcommands() -> dict[str, set[str]]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: _parser_options(p) for name, p in action.choices.items()}
    raise AssertionError("the irqlab parser has no subcommands")


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_irqlab_options_in_the_docs_exist(doc: Path) -> None:
    """`irqlab SUBCOMMAND --option` as the docs write it is what the parser takes (an
    option renamed in the code and not in the docs is a usage error for the reader)."""
    commands = _subcommands()
    wrong = set()
    checked = 0
    for line in _code(doc.read_text(encoding="utf-8")):
        for command, rest in _command_words(line, "irqlab"):
            if command not in commands:
                continue  # prose such as `irqlab inject` is checked; "irqlab device" is not
            checked += len(_options(rest))
            wrong |= {f"irqlab {command} {o}" for o in _options(rest)} - {
                f"irqlab {command} {o}" for o in commands[command] | {"--help"}
            }
    assert not wrong, f"{doc.relative_to(ROOT)} gives options the commands lack: {sorted(wrong)}"
    if doc.name == "README.md" and doc.parent == ROOT:
        assert checked >= 40, f"only {checked} options of irqlab commands found in the README"


def test_the_command_line_tables_options_exist() -> None:
    """The README's table of subcommands gives each one's options without the leading
    `irqlab` (a row such as `bench-peers [--rounds N] [--out DIR]`): those are the
    parser's."""
    commands = _subcommands()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z][a-z0-9-]*)((?: [^`]*)?)` \|", section, re.M)
    assert len(rows) >= 10, "the README's table of subcommands was not found"
    wrong = {
        f"irqlab {command} {o}"
        for command, rest in rows
        for o in _options(rest)
        if command not in commands or o not in commands[command]
    }
    assert not wrong, f"the README's Command line table gives what the parser lacks: {wrong}"


def _task_options() -> dict[str, set[str]]:
    from invoke.tasks import Task
    from test_tasks import _tasks  # same directory (rootdir-relative import)

    out: dict[str, set[str]] = {}
    for attr, task in vars(_tasks()).items():
        if isinstance(task, Task):
            names = {n.replace("_", "-") for a in task.get_arguments() for n in a.names}
            out[attr.replace("_", "-")] = {f"-{n}" if len(n) == 1 else f"--{n}" for n in names} | {
                "--help"
            }
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_invoke_tasks_and_options_in_the_docs_exist(doc: Path) -> None:
    """`invoke TASK --option` as the docs write it: the task exists and takes it."""
    tasks = _task_options()
    wrong = set()
    for line in _code(doc.read_text(encoding="utf-8")):
        for task, rest in _command_words(line, "invoke"):
            if task not in tasks:
                wrong.add(f"invoke {task}: no such task")
                continue
            wrong |= {f"invoke {task} {o}" for o in _options(rest) if o not in tasks[task]}
    assert not wrong, f"{doc.relative_to(ROOT)}: {sorted(wrong)}"


def test_the_readmes_fixtures_are_the_plugins_with_their_scope(
    request: pytest.FixtureRequest,
) -> None:
    """Each row of the README's fixture table names fixtures the installed plugin
    registers, with the scope the row gives."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| fixture | scope | what |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| ((?:`irqlab_\w+`(?:, )?)+) \| (\w+) \|", table, re.M)
    assert len(rows) >= 8, "the README's fixture table was not found"
    manager = request._fixturemanager
    wrong = []
    for names, scope in rows:
        for name in re.findall(r"`(\w+)`", names):
            fixture = manager.getfixturedefs(name, request.node)
            if not fixture:
                wrong.append(f"{name}: not a fixture")
            elif fixture[-1].scope != {"test": "function"}.get(scope, scope):
                wrong.append(f"{name}: scope {fixture[-1].scope}, the README says {scope}")
    assert not wrong, wrong


def _env_table() -> set[str]:
    """The variables the README's table "Every environment variable irqlab reads" and
    its "Not for users" line name."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("Every environment variable irqlab reads")
    part = text[start : text.index("### As an ordinary user", start)]
    return set(re.findall(r"`([A-Z][A-Z0-9_]*[A-Z0-9])`", part))


def _sources() -> dict[Path, str]:
    files = [*(ROOT / "harness").rglob("*.py"), ROOT / "tasks.py", *(ROOT / "tests").rglob(
        "conftest.py"), ROOT / "tests/device/test_random_sequence.py"]  # fmt: skip
    return {p: p.read_text(encoding="utf-8") for p in files}


C_HEADERS = (
    "qemu-device/irqlab-regs.h",
    "guest-kmod/include/uapi/linux/irqlab.h",
)


def test_every_irqlab_variable_the_code_reads_is_in_the_readmes_table() -> None:
    """An `IRQLAB_*` environment variable the code reads (a string literal of that
    name, not a C constant of the headers) is in the README's table, so a user can find
    what it does."""
    headers = "".join((ROOT / h).read_text(encoding="utf-8") for h in C_HEADERS)
    named = set()
    for source in _sources().values():
        named |= set(re.findall(r"""["'](IRQLAB_[A-Z0-9_]*[A-Z0-9])["']""", source))
    env = {n for n in named if not re.search(rf"\b{n}\b", headers)}
    assert "IRQLAB_CACHE_DIR" in env and "IRQLAB_QMP" in env
    missing = sorted(env - _env_table())
    assert not missing, f"read by the code, not in the README's environment table: {missing}"


def test_every_variable_in_the_readmes_table_is_read_somewhere() -> None:
    """A variable the README's table lists that nothing reads any more is a knob that
    does nothing."""
    sources = "".join(_sources().values())
    scripts = "".join(
        p.read_text(encoding="utf-8")
        for p in [ROOT / ".ci/run", *(ROOT / "buildroot").rglob("*")]
        if p.is_file() and p.suffix in ("", ".sh", ".mk")
    )
    unread = sorted(v for v in _env_table() if not re.search(rf"\b{v}\b", sources + scripts))
    assert not unread, f"the README's environment table lists what nothing reads: {unread}"


def _time_s(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def test_the_readmes_agent_p50_comparisons_follow_from_its_own_figures() -> None:
    """The README compares later agent p50s with the table of 2026-11-22: its native
    table's ratio column, and the third run's "below the 2026-11-22 table on N paths
    (...)", are arithmetic on figures it prints (it said 8 paths where its figures give
    7)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| ([a-z-]+) \| [^|]+ \| [^|]+ \| (\d[\d.]* [µm]?s) \| (\d[\d.]* [µm]?s) \| "
        r"(\d\.\d+)\u00d7 \|$",
        text,
        re.M,
    )
    assert len(rows) == 13, rows
    old = {path: _time_s(before) for path, _, before, _ in rows}
    for path, agent, before, ratio in rows:
        assert round(_time_s(before) / _time_s(agent), 2) == pytest.approx(
            float(ratio), abs=0.011
        ), f"{path}: {before} / {agent} is not {ratio}x"
    m = re.search(r"agent p50 medians (.*?): 1\.5\u20131\.9\u00d7 below\s+the 2026-11-22 table on "
                  r"(\d+) paths(?: \(([^)]*)\))?", text, re.S)  # fmt: skip
    assert m, "the third run's comparison with the 2026-11-22 table was not found"
    medians = dict(re.findall(r"([a-z-]+) (\d[\d.]* [µm]?s)", " ".join(m.group(1).split())))
    assert medians.keys() == old.keys()
    within = [p for p in medians if 1.5 <= round(old[p] / _time_s(medians[p]), 1) <= 1.9]
    assert int(m.group(2)) == len(within), f"{m.group(2)} paths said, the figures: {within}"
    named = " ".join((m.group(3) or "").split())
    assert [p.strip() for p in named.split(",")] == within, "name the paths, as the figures give"


def test_the_pytest_options_in_the_docs_are_the_plugins(request: pytest.FixtureRequest) -> None:
    """`--irqlab-...` (and the plugin's `--shard`) as the docs write them are options the
    plugins add to pytest."""
    parser = request.config._parser
    known = {n for g in [parser._anonymous, *parser._groups] for o in g.options for n in o.names()}
    wrong = set()
    for doc in DOCS:
        text = re.sub(r"\]\([^)]*\)", "]", doc.read_text(encoding="utf-8"))  # not links
        wrong |= {o for o in re.findall(r"(?<![\w-])--irqlab-[a-z-]+", text) if o not in known}
    assert "--irqlab-accel" in known and "--shard" in known
    assert not wrong, f"the docs give pytest options the plugins do not add: {sorted(wrong)}"
