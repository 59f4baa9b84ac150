"""The QMP client's event-loop thread: a task of a connection whose peer went away,
awaited by nobody, is not printed at exit as "exception was never retrieved" with a
traceback (a guest whose QEMU died and that was never closed); other lost errors are.
abort() ends the waits on a peer known dead or frozen."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
import warnings
from typing import Any

import pytest

from irqlab.vm.aioloop import LoopAborted, LoopClosed, LoopThread, LoopTimeout
from irqlab.vm.loadscale import scaled


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


def _waiting_run(loop: LoopThread) -> tuple[threading.Thread, list[BaseException]]:
    """A thread in ``loop.run()`` of a coroutine that never ends, once it runs; what
    that run raised goes in the list."""
    started = threading.Event()
    ended: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    def wait() -> None:
        try:
            loop.run(forever(), 60)
        except BaseException as e:  # the test looks at it
            ended.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert started.wait(5)
    return waiter, ended


def test_abort_ends_the_waits_now_and_refuses_later_ones() -> None:
    """The health watch's verdict on a frozen QEMU: a QMP call waited out its 30 s."""
    loop = LoopThread()
    try:
        waiter, ended = _waiting_run(loop)
        t0 = time.monotonic()
        loop.abort("the guest is not usable: QEMU froze", later=False)
        waiter.join(5)
        assert time.monotonic() - t0 < 1.0
        assert [type(e) for e in ended] == [LoopAborted]
        assert str(ended[0]) == "the guest is not usable: QEMU froze"

        async def answer() -> int:
            return 42

        loop.abort("the guest panicked", later=False)  # QEMU still answers: later runs run
        assert loop.run(answer(), 5) == 42
        loop.abort("the guest is not usable: QEMU froze")
        with pytest.raises(LoopAborted, match="QEMU froze"):
            loop.run(answer(), 5)
        assert loop.run(answer(), 5, abortable=False) == 42  # e.g. the disconnect at close
    finally:
        loop.close()


def test_a_run_cancelled_by_close_after_an_abort_is_not_said_as_that_abort() -> None:
    """abort() kept its reason, and a later run ended by close() was reported as that
    abort ("the guest is not usable: guest kernel panic").  Nor is it a bare
    CancelledError (a snapshot's save that another thread's close() ended said
    "concurrent.futures._base.CancelledError" and nothing more)."""
    loop = LoopThread()
    loop.abort("the guest is not usable: guest kernel panic", later=False)
    waiter, ended = _waiting_run(loop)
    loop.close()
    waiter.join(5)
    assert [type(e) for e in ended] == [LoopClosed]
    assert str(ended[0]) == "closed while it waited (its event loop stopped)"


def test_a_late_reply_to_a_command_given_up_on_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a QMP call was aborted (a stopped QEMU) its reply comes once QEMU runs
    again: qemu.qmp warned "Unknown ID ..., message dropped" on the user's terminal."""
    import inspect

    import qemu.qmp.qmp_client

    from irqlab.vm.qmp.client import _LATE_REPLY, SyncQMP

    # the filter knows the record by qemu.qmp's format string: still the one it logs
    assert repr(_LATE_REPLY)[1:-1] in inspect.getsource(qemu.qmp.qmp_client)
    qmp = SyncQMP("t")
    try:
        with caplog.at_level(logging.DEBUG):
            qmp._client.logger.warning(_LATE_REPLY, "__qmp#00006")
            qmp._client.logger.warning("something else")
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned == ["something else"]
        assert any("__qmp#00006" in r.getMessage() for r in caplog.records)  # at debug
    finally:
        qmp.close()


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


def _stop_queued_behind_a_hold(loop: LoopThread) -> threading.Event:
    """*loop* busy in a callback, with a stop from outside queued behind it (what
    another thread's close() does): what it is handed now comes in the step it stops in,
    and is never started.  Set the event returned to let it go: its thread then ends."""
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:  # the loop, busy with something else for a moment
        busy.set()
        release.wait(10)

    loop.loop.call_soon_threadsafe(hold)
    assert busy.wait(5)
    loop.loop.call_soon_threadsafe(loop.loop.stop)
    return release


def test_a_run_its_stopped_loop_never_started_ends_with_its_thread() -> None:
    """A run handed to a loop in the step it stopped in (another thread's close(), a
    stop from outside) was never started: it waited for ever (no timeout), and its
    coroutine, dropped with the loop, made Python warn "coroutine ... was never
    awaited" in whatever test ran then (seen in a CI run's summary, blamed on a gpio
    test).  It ends as the loop's thread ends, and close() neither runs it nor leaves
    it unawaited."""
    loop = LoopThread("test-stopped")
    release = _stop_queued_behind_a_hold(loop)
    ended: list[BaseException] = []
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    def wait() -> None:
        try:
            loop.run(work())
        except BaseException as e:  # the test looks at it
            ended.append(e)

    handed = threading.Event()
    submit = loop.submit

    def submitted(coro: Any) -> Any:
        fut = submit(coro)
        handed.set()
        return fut

    loop.submit = submitted  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        assert handed.wait(5)
        release.set()
        waiter.join(5)
        assert not waiter.is_alive(), "the run still waits on a loop whose thread ended"
        assert [type(e) for e in ended] == [LoopClosed]
        assert str(ended[0]) == (
            "the event loop thread test-stopped is no longer running (its loop was "
            "stopped by something other than close()); nothing will run on it: close() it"
        )
        loop.close(timeout=1)
        assert _never_awaited(caught) == []
    assert ran == []


def test_close_whose_stop_came_first_leaves_no_coroutine_unawaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() hands the loop a coroutine that cancels what is left; a loop that stopped
    before it ran it (another close(), or this one's wait timed out) dropped it: the
    same "never awaited" warning.

    The stop is this loop's alone: it was asyncio.run_coroutine_threadsafe patched for
    the whole process, which stopped every other loop handed a coroutine meanwhile.
    In an xdist worker that ran e2e tests first, the session guest's QMP loop (its
    health watch asks it every 0.2 s) stopped for good: the watch called the guest
    frozen, its close waited 5 s for a disconnect that never ran, and the loop's close
    warned "coroutine '_nothing' / 'QMPClient.execute' / 'AsyncProtocol.disconnect'
    was never awaited" in the worker's last test (CI's summary blamed
    test_xdist_controller_killed).  The bystander stands for that guest's loop."""
    loop = LoopThread()
    bystander = LoopThread("bystander")
    real = loop.loop.call_soon_threadsafe

    def stop_first(callback: Any, *args: Any, **kwargs: Any) -> Any:
        real(loop.loop.stop)
        loop._thread.join(5)
        return real(callback, *args, **kwargs)

    async def answer() -> int:
        return 42

    monkeypatch.setattr(loop.loop, "call_soon_threadsafe", stop_first)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close(timeout=0.2)
            assert loop.loop.is_closed()
            assert _never_awaited(caught) == []
        assert bystander.run(answer(), scaled(5)) == 42, "another loop was stopped too"
    finally:
        bystander.close()


def test_two_closes_at_once_take_turns() -> None:
    """A second close() from another thread (a Guest's closer and its start's clean-up)
    cancelled the first one's cancel-all while a task still cleaned up after its
    cancellation, and stopped the loop under it: that clean-up was cut short, the first
    close raised CancelledError, and Python said "Task was destroyed but it is pending!"
    and "_GatheringFuture exception was never retrieved"."""
    loop = LoopThread()
    cancelled = threading.Event()  # the first close's cancel-all reached the task
    release = threading.Event()  # the task's clean-up may end
    cleaned: list[bool] = []

    async def slow_to_clean_up() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            while not release.is_set():  # a disconnect's goodbye, say
                await asyncio.sleep(0.01)
            cleaned.append(True)
            raise

    loop.submit(slow_to_clean_up())
    first = _closing(loop)
    assert cancelled.wait(scaled(10))
    second = _closing(loop)
    second[0].join(scaled(0.5))  # it must wait for the first close: it does not end now
    release.set()
    for t, _ in (first, second):
        t.join(scaled(10))
        assert not t.is_alive()
    assert first[1] == [None] and second[1] == [None]
    assert cleaned == [True] and loop.loop.is_closed()


def _closing(loop: LoopThread) -> tuple[threading.Thread, list[BaseException | None]]:
    """loop.close() in a thread of its own; what it raised (None: nothing)."""
    out: list[BaseException | None] = []

    def close() -> None:
        try:
            loop.close(timeout=scaled(10))
            out.append(None)
        except BaseException as e:  # the test looks at it
            out.append(e)

    t = threading.Thread(target=close, daemon=True)
    t.start()
    return t, out


def _stopped_from_outside(loop: LoopThread, *, ended: bool = True) -> None:
    """Stop *loop* as something other than its close() may (a test that stopped more
    loops than its own stopped a session guest's QMP loop for good), and wait for its
    thread's end (not *ended*: for its loop's stop, the thread's end held by
    :func:`_thread_end_held`)."""
    loop.loop.call_soon_threadsafe(loop.loop.stop)
    if ended:
        loop._thread.join(5)
        assert not loop._thread.is_alive()
    else:
        deadline = time.monotonic() + 5
        while loop.loop.is_running() and time.monotonic() < deadline:
            loop._thread.join(0.01)
        assert not loop.loop.is_running()


def _thread_end_held(loop: LoopThread) -> threading.Event:
    """The end of *loop*'s thread held, once its loop stopped, until the event returned
    is set: what is handed to the loop meanwhile is queued and never run (the moment
    between a loop's stop and its thread's end)."""
    release = threading.Event()
    thread_ended = loop._thread_ended

    def held(how: str) -> None:
        release.wait(10)
        thread_ended(how)

    loop._thread_ended = held  # type: ignore[method-assign]
    return release


def _destroyed_pending(caplog: pytest.LogCaptureFixture) -> list[str]:
    said = [r.getMessage() for r in caplog.records]
    return [m for m in said if "destroyed but it is pending" in m]


def test_runs_that_gave_up_on_a_stopped_loop_leave_no_coroutine_unawaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop stopped by someone else runs nothing more: the health watch's event look
    timed out, its ping was aborted (the watch called the guest frozen), the close's
    disconnect timed out, each coroutine left in the loop's queue (handed over after
    the loop stopped, before its thread ended: one after that is refused at once);
    close() knew only
    the runs still waiting, and the loop's close dropped the others: "coroutine
    '_nothing' / 'QMPClient.execute' / 'AsyncProtocol.disconnect' was never awaited"
    in the worker's last test, and at exit "Task was destroyed but it is pending!" for
    the connection's reader, never cancelled."""
    loop = LoopThread()
    reading = threading.Event()
    ends: list[str] = []

    async def reader() -> None:  # qemu.qmp's, until the connection's end
        reading.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            ends.append("cancelled")
            raise

    async def nothing() -> None:
        ends.append("ran")  # given up on: it must not run later either

    loop.submit(reader())
    assert reading.wait(5)
    release = _thread_end_held(loop)
    _stopped_from_outside(loop, ended=False)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        with pytest.raises(LoopTimeout):
            loop.run(nothing(), 0.05)
        aborted: list[BaseException] = []

        def wait() -> None:
            try:
                loop.run(nothing(), 60)
            except BaseException as e:  # the test looks at it
                aborted.append(e)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 5
        while not loop._waiting and time.monotonic() < deadline:  # handed over
            waiter.join(0.01)
        loop.abort("the guest is not usable: QEMU froze")
        waiter.join(5)
        assert [type(e) for e in aborted] == [LoopAborted]
        release.set()
        loop._thread.join(5)
        assert not loop._thread.is_alive()
        loop.close(timeout=scaled(5))
        assert loop.loop.is_closed()
        assert _never_awaited(caught) == []
    assert ends == ["cancelled"]
    assert _destroyed_pending(caplog) == []


def test_a_run_handed_over_as_its_loop_stopped_leaves_no_task_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run handed to the loop in the step it stopped in: its task was made, its first
    step never came (the run gave up meanwhile), and at the loop's close, or at exit
    with the loop's garbage, Python said "Task was destroyed but it is pending!" and
    "coroutine '_nothing' was never awaited" (a CI run's log).  Nor is it run by the
    close's pass on the stopped loop (its first step came before the cancel-all's): a
    command given up on was sent late."""
    loop = LoopThread()
    ran: list[bool] = []

    async def nothing() -> None:
        ran.append(True)

    release = _stop_queued_behind_a_hold(loop)  # both come in the loop's next step:
    with pytest.raises(LoopTimeout):  # the stop, then the run's task made
        loop.run(nothing(), 0.05)
    release.set()
    loop._thread.join(5)
    assert not loop._thread.is_alive()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        loop.close(timeout=scaled(5))
        assert _never_awaited(caught) == []
    assert _destroyed_pending(caplog) == []
    assert ran == []


def test_a_close_after_one_cut_short_by_a_busy_loop_closes_it() -> None:
    """A close whose loop was busy past its timeout (synchronous work in a callback)
    returned with the loop's thread alive, its cancel-all left in the loop's queue; the
    loop ran it as it stopped, and in the next close's pass on the stopped loop it
    cancelled that close's own: close() raised CancelledError (no Exception: SyncQMP's
    close let it through) and left the loop open."""
    loop = LoopThread()
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(30)

    loop.loop.call_soon_threadsafe(hold)
    assert busy.wait(5)
    loop.close(timeout=0.05)  # cut short: the loop is busy
    assert loop._thread.is_alive()
    release.set()
    loop._thread.join(scaled(5))  # the first close's stop ends it
    assert not loop._thread.is_alive()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close(timeout=scaled(5))
        assert loop.loop.is_closed()
        assert _never_awaited(caught) == []


def test_a_task_that_ignores_its_cancellation_costs_close_one_timeout_and_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that goes on after its cancellation: close() waited its timeout for it on
    the loop, then as long again in its pass on the stopped loop (10 s, not 5, for a
    QMP client's close), and said nothing of it."""
    loop = LoopThread()
    started = threading.Event()

    async def stubborn() -> None:
        started.set()
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    loop.submit(stubborn())
    assert started.wait(5)
    timeout = scaled(1)
    with caplog.at_level(logging.WARNING, logger="irqlab.vm.aioloop"):
        t0 = time.monotonic()
        loop.close(timeout=timeout)
        took = time.monotonic() - t0
    assert loop.loop.is_closed()
    assert took < 1.6 * timeout, f"close took {took:.2f} s for a timeout of {timeout:.2f} s"
    said = [r.getMessage() for r in caplog.records if r.name == "irqlab.vm.aioloop"]
    assert any("stubborn" in m and "after their cancellation" in m for m in said), said
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):  # its pending task's end
        gc.collect()


def test_a_close_cut_short_in_its_pass_on_a_stopped_loop_leaves_no_coroutine_unawaited() -> None:
    """Ctrl-C during close()'s pass on a stopped loop (here: raised by a callback its
    task's clean-up queued there): the cancel-all that close had made for the running
    loop's thread, though the thread had ended, was held weakly only and dropped
    unstarted ("coroutine '_cancel_all' was never awaited").  The next close() closes
    the loop."""
    loop = LoopThread()
    started = threading.Event()

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    async def interrupted() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            asyncio.get_running_loop().call_soon(ctrl_c)  # as the pass runs here
            await asyncio.sleep(0.5)
            raise

    loop.submit(interrupted())
    assert started.wait(5)
    _stopped_from_outside(loop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interrupts = 0
        try:
            loop.close(timeout=scaled(5))
        except KeyboardInterrupt:  # dropped here, with the frames it holds
            interrupts += 1
        assert interrupts == 1
        gc.collect()
        assert _never_awaited(caught) == []
        loop.close(timeout=scaled(5))
        assert loop.loop.is_closed()
        assert _never_awaited(caught) == []


def test_a_run_after_close_is_loop_closed_and_its_coroutine_closed() -> None:
    """A run handed to a closed loop raised a bare RuntimeError, which QMP's callers
    (they catch LoopAborted) let through as an internal error: now LoopClosed (still a
    RuntimeError), and the coroutine is closed, not left "never awaited"."""
    lt = LoopThread("test-after-close")
    lt.close()

    async def work() -> int:
        return 1

    coro = work()
    with pytest.raises(LoopClosed, match="the event loop thread is closed"):
        lt.run(coro, timeout=1)
    assert coro.cr_frame is None  # closed
    with pytest.raises(RuntimeError):  # what callers that caught RuntimeError still see
        lt.submit(work())


def _raise_system_exit() -> None:
    raise SystemExit("a callback called sys.exit()")


@pytest.mark.parametrize(
    ("end", "said"),
    [
        ("stop", "its loop was stopped by something other than close()"),
        ("exit", "it died of SystemExit: a callback called sys.exit()"),
    ],
)
def test_a_run_after_its_loops_thread_ended_without_close_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, end: str, said: str
) -> None:
    """A loop stopped by something other than its close() (a test's patch stopped a
    session guest's QMP loop), or whose thread died (a SystemExit raised in one of its
    callbacks), runs nothing more: a run handed to it waited its whole timeout (a QMP
    command's 30 s; SyncQMP.close()'s disconnect 5 s), then said only "timed out", its
    coroutine left in the dead loop's queue.  Now LoopClosed at once, saying the
    loop's thread is no longer running and why, and the coroutine is closed."""
    died: list[type[BaseException] | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_type))
    lt = LoopThread("test-ended")
    if end == "stop":
        lt.loop.call_soon_threadsafe(lt.loop.stop)
    else:
        lt.loop.call_soon_threadsafe(_raise_system_exit)
    lt._thread.join(5)
    assert not lt._thread.is_alive()
    assert died == ([] if end == "stop" else [SystemExit])

    async def work() -> int:
        return 1

    timeout = 10.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = work()
        began = time.monotonic()
        with pytest.raises(LoopClosed) as info:
            lt.run(coro, timeout)
        took = time.monotonic() - began
        assert coro.cr_frame is None  # closed
        del coro
        assert _never_awaited(caught) == []
    assert took < 1.0, f"it took {took:.2f} s (the timeout: {timeout:g} s)"
    assert str(info.value) == (
        f"the event loop thread test-ended is no longer running ({said}); nothing will "
        "run on it: close() it"
    )
    assert isinstance(info.value, RuntimeError)  # as before: what QMP's callers catch
    lt.close(timeout=scaled(5))
    assert lt.loop.is_closed()


def test_close_from_the_loops_own_thread_is_refused_at_once() -> None:
    """close() from a coroutine on the loop blocked the loop for its whole timeout,
    then raised "cannot join current thread" with the loop left open: now refused at
    once, saying why, and a close from another thread then closes it."""
    lt = LoopThread("test-own-close")

    async def closes() -> float:
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="would wait for itself"):
            lt.close(timeout=3)
        return time.monotonic() - began

    took = lt.run(closes(), timeout=scaled(10))
    assert took < 1.0, f"the refusal took {took:.2f} s"
    lt.close()
    assert lt.loop.is_closed()


def test_a_qmp_client_whose_loops_thread_ended_says_so_at_once() -> None:
    """A QMP client whose loop's thread had ended without its close (a test's patch
    stopped a session guest's QMP loop): each call waited its whole timeout and was
    then said as QEMU's silence (``QMPNoReply``: the health watch called a live QEMU
    frozen), and its close waited 5 s for a disconnect nothing would run."""
    from irqlab.vm.qmp.client import SyncQMP
    from irqlab.vm.qmp.errors import QMPFailure, QMPNoReply

    qmp = SyncQMP("t-ended", timeout=10.0)
    _stopped_from_outside(qmp._aio)
    began = time.monotonic()
    with pytest.raises(QMPFailure) as info:
        qmp.take_events(["RESET"])
    assert not isinstance(info.value, QMPNoReply)
    assert str(info.value) == (
        "QMP events ['RESET']: the event loop thread qmp-t-ended is no longer running (its "
        "loop was stopped by something other than close()); nothing will run on it: close() it"
    )
    qmp.close()
    took = time.monotonic() - began
    assert took < 1.0, f"the call and the close took {took:.2f} s"
    assert qmp._aio.loop.is_closed()
