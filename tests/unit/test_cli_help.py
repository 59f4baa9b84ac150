"""What `irqlab --help`, `irqlab COMMAND --help` and the invoke tasks show is written for
users: no developer text (function names, reST markup) in any description."""

from __future__ import annotations

import argparse
import re

import pytest

from irqlab.cli.main import build_parser

DEVELOPER_TEXT = re.compile(r"``|\bcmd_\w+|\badd_\w+_parser\b|\(subparsers\)|:mod:|:func:")


def _commands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_has_no_developer_text(command: str) -> None:
    text = _commands()[command].format_help()
    assert not DEVELOPER_TEXT.search(text), text


def test_task_docs_have_no_developer_text() -> None:
    from test_tasks import _tasks  # same directory (rootdir-relative import)

    tasks = _tasks()
    for name in ("bench", "bench_peers", "buildroot_check", "build_qemu"):
        doc = getattr(tasks, name).__doc__ or ""
        assert doc and not DEVELOPER_TEXT.search(doc), doc
