"""No option is taken by a prefix of its name: ``irqlab build-qemu --forc`` ran a
forced rebuild and ``irqlab bench --event 5`` a bench, without a word."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from irqlab.cli.main import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, name: str = "irqlab"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f"{name} {sub}")


def test_every_parser_refuses_abbreviations() -> None:
    found = dict(_parsers(build_parser()))
    assert {"irqlab", "irqlab run", "irqlab inject pulse", "irqlab cache"} <= set(found)
    assert [name for name, p in found.items() if p.allow_abbrev] == []


def test_the_agents_parser_refuses_abbreviations() -> None:
    import irqlab_agent.agent as agent

    with pytest.raises(SystemExit) as e:
        agent.parse_args(["--liste", "1"])
    assert e.value.code == 2


@pytest.mark.parametrize(
    ("argv", "suggested"),
    [
        (["build-qemu", "--forc"], "--force"),
        (["bench", "--quick", "--event"], "--events"),
        (["inject", "push", "1", "--count"], "--counters"),
    ],
)
def test_a_prefix_of_an_option_is_a_usage_error(
    argv: list[str], suggested: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {argv[-1]}" in err and f"did you mean {suggested}" in err
