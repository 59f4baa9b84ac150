"""The QMP client's event-loop thread: a task of a connection whose peer went away,
awaited by nobody, is not printed at exit as "exception was never retrieved" with a
traceback (a guest whose QEMU died and that was never closed); other lost errors are."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from irqlab.vm.aioloop import LoopThread


def _lose(loop: LoopThread, exc: BaseException) -> None:
    async def fail() -> None:
        raise exc

    async def start() -> None:
        task = asyncio.ensure_future(fail())
        await asyncio.wait({task})  # it has failed; nobody asks for its exception

    loop.run(start(), timeout=5)
    gc.collect()


@pytest.mark.parametrize(
    ("exc", "printed"),
    [(EOFError(), False), (ConnectionResetError(104, "reset"), False), (ValueError("x"), True)],
    ids=["EOFError", "ConnectionResetError", "ValueError"],
)
def test_a_lost_peers_error_is_not_printed_and_others_are(
    caplog: pytest.LogCaptureFixture, exc: BaseException, printed: bool
) -> None:
    loop = LoopThread("test-aio")
    try:
        with caplog.at_level(logging.DEBUG):
            _lose(loop, exc)
    finally:
        loop.close()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert bool(errors) is printed, [r.getMessage() for r in caplog.records]
    assert any("never retrieved" in r.getMessage() for r in caplog.records)  # it happened
