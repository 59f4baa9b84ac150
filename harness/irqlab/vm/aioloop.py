"""An asyncio event loop on a dedicated daemon thread, driven from synchronous code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from irqlab.errors import IrqlabError, hide_frame
from irqlab.sigsafe import critical

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "LoopAborted",
    "LoopThread",
    "LoopTimeout",
    "T",
]

T = TypeVar("T")


class LoopTimeout(IrqlabError, TimeoutError):
    """A coroutine run through :meth:`LoopThread.run` did not finish in time (it was cancelled)."""


class LoopAborted(IrqlabError, RuntimeError):
    """:meth:`LoopThread.abort` ended the wait (or came before it); the message is why."""


class LoopClosed(LoopAborted):
    """:meth:`LoopThread.close` (another thread's: its owner was closed) ended the wait,
    or came before it; or the loop's thread had ended without it (its loop stopped by
    something else, or the thread died), which the message says."""


log = logging.getLogger(__name__)


def _quiet_about_a_lost_peer(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A task of a connection whose peer went away (QEMU died, and the guest was never
    closed) fails with EOFError or a ConnectionError that nobody awaits any more: at
    exit asyncio printed "exception was never retrieved" with its traceback.  Whoever
    used the connection was told (the health watch names QEMU's exit); anything else
    goes to asyncio's default handler."""
    exc = context.get("exception")
    if "never retrieved" in str(context.get("message", "")) and isinstance(
        exc, EOFError | ConnectionError
    ):
        log.debug("%s: %r", context.get("message"), exc)
        return
    loop.default_exception_handler(context)


def _close_unstarted(coro: Coroutine[Any, Any, Any]) -> None:
    """Close *coro* if it never ran (nothing else will: no "never awaited" warning)."""
    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()


class LoopThread:
    """Owns one event loop running forever on a background thread until :meth:`close`."""

    def __init__(self, name: str = "irqlab-aio") -> None:
        # made whole or not at all: a Ctrl-C inside new_event_loop() left a loop half
        # made, whose finaliser then failed at exit ("'_UnixSelectorEventLoop' object
        # has no attribute '_ssock'"), one after it a loop nobody closes
        with critical():
            self._loop = asyncio.new_event_loop()
            self._loop.set_exception_handler(_quiet_about_a_lost_peer)
            self._thread = threading.Thread(target=self._main, name=name, daemon=True)
            self._closed = False
            # abort(): the reason, and the runs waiting now (cancelled by it); reentrant:
            # run() hands its coroutine over (submit()) holding it
            self._lock = threading.RLock()
            self._aborted: str | None = None  # later runs refused, for this reason
            self._waiting: set[concurrent.futures.Future[Any]] = set()
            self._cancelled: dict[concurrent.futures.Future[Any], str] = {}  # abort(): why
            # every run() waiting now, with its coroutine: close() ends those its stopped
            # loop never started (they waited for ever, their coroutines "never awaited")
            self._runs: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}
            # every coroutine handed to the loop and not yet dropped: close() closes
            # those it never started, the runs' that gave up waiting (timed out,
            # aborted) too, whose coroutines nothing else holds but the loop's queue
            self._handed: weakref.WeakSet[Coroutine[Any, Any, Any]] = weakref.WeakSet()
            # one close() at a time: a second one's cancel-all cancelled the first's, and
            # its stop ended the loop under it ("Task was destroyed but it is pending!",
            # "_GatheringFuture exception was never retrieved", the first close raising
            # CancelledError): a Guest's closer and its start's clean-up close at once
            self._close_lock = threading.RLock()
            # which close's cancel-all acts: one left in the loop's queue by an earlier
            # close cut short (the loop busy past its timeout, or a close from the
            # loop's own thread) ran first in the next pass and cancelled that one's
            # (the next close() raised CancelledError, the loop left open)
            self._close_gen = 0
            # how the loop's thread ended, when it did (not by close() alone: a stop from
            # outside, a SystemExit in a callback): later runs are refused at once (they
            # waited their whole timeout for a loop that would never run them)
            self._ended: str | None = None
            self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        how = "its loop was stopped by something other than close()"
        try:
            self._loop.run_forever()
        except BaseException as e:  # SystemExit, KeyboardInterrupt from a callback
            how = f"it died of {type(e).__name__}" + (f": {e}" if str(e) else "")
            raise
        finally:
            self._thread_ended(how)

    def _thread_ended(self, how: str) -> None:
        """The loop's thread ends (*how*, unless close() stopped it): the runs waiting
        now end at once (their coroutines are closed by :meth:`close`, which runs what
        the loop was handed last), later runs are refused."""
        with self._lock:
            self._ended = how
            waiting = [fut for fut in self._runs if not fut.done()]
        for fut in waiting:
            fut.cancel()  # its run() raises LoopClosed

    def _gone(self) -> LoopClosed:
        """What a run on a loop whose thread has ended raises."""
        how = self._ended or "it is gone"  # gone without a word: a fork's child
        return LoopClosed(
            f"the event loop thread {self._thread.name} is no longer running ({how}); "
            "nothing will run on it: close() it"
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:  # close() marks it closed under the lock: nothing after that
            if self._closed:
                coro.close()
                # LoopClosed (a RuntimeError): QMP's callers say it as a QMP failure
                raise LoopClosed("the event loop thread is closed")
            if self._ended is not None or not self._thread.is_alive():
                coro.close()
                raise self._gone()
            self._handed.add(coro)
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float | None = None, *, abortable: bool = True
    ) -> T:
        """Run *coro* on the loop and wait for its result; cancel it after *timeout*
        seconds, or when :meth:`abort` is called (:class:`LoopAborted`, also for a run
        after it) unless not *abortable*."""
        with self._lock:
            if abortable and self._aborted is not None:
                coro.close()
                raise LoopAborted(self._aborted)
            fut = self.submit(coro)
            self._runs[fut] = coro
            if abortable:
                self._waiting.add(fut)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise LoopTimeout(f"timed out after {timeout} s") from None
        except concurrent.futures.CancelledError:
            why = self._cancelled.get(fut)
            if why is not None:  # abort() cancelled it (not close(), say)
                raise LoopAborted(why) from None
            if self._closed:  # it was a bare CancelledError, no word of why
                raise LoopClosed("closed while it waited (its event loop stopped)") from None
            if self._ended is not None:  # its thread ended as it waited
                raise self._gone() from None
            raise
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave it running
            raise
        finally:
            with self._lock:
                self._waiting.discard(fut)
                self._cancelled.pop(fut, None)
                self._runs.pop(fut, None)

    def abort(self, reason: str, *, later: bool = True) -> None:
        """End every abortable :meth:`run` waiting now, and with *later* refuse those
        that come after, with :class:`LoopAborted` (*reason*); their coroutines are
        cancelled.  For a peer known dead or frozen: nothing waits out its timeout."""
        with self._lock:
            if later and self._aborted is None:
                self._aborted = reason
            waiting = list(self._waiting)
            for fut in waiting:
                self._cancelled[fut] = reason
        for fut in waiting:
            fut.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what is left, stop the loop and join the thread (idempotent; a close
        cut short, by Ctrl-C in its waits, is finished by the next call).  A close()
        from another thread meanwhile waits for this one's end.  From the loop's own
        thread (a coroutine or callback on it) a RuntimeError at once: it would wait
        its *timeout* for itself, blocking the loop, then fail ("cannot join current
        thread") with the loop left open."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                f"{self._thread.name}: close() from a coroutine or callback on its own "
                "event loop would wait for itself: close it from another thread"
            )
        with self._close_lock:
            self._close(timeout)

    def _close(self, timeout: float) -> None:
        if self._loop.is_closed():
            return
        deadline = time.monotonic() + timeout  # the waits for the tasks' ends, in all
        with self._lock:
            self._closed = True  # no submit() from now on
            self._close_gen += 1
            gen = self._close_gen
        if self._thread.is_alive():
            # made only for a running loop, and closed unless handed over: one made for
            # nothing (the loop's thread had ended) and held weakly only, dropped as a
            # Ctrl-C cut the pass below short, was "never awaited"
            cancel_all = self._cancel_all(gen, timeout)
            with self._lock:
                self._handed.add(cancel_all)
            queued = False
            try:
                fut = asyncio.run_coroutine_threadsafe(cancel_all, self._loop)
                queued = True
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    fut.result(timeout)
            except RuntimeError:  # closed meanwhile
                pass
            finally:
                if not queued:
                    _close_unstarted(cancel_all)
            with contextlib.suppress(RuntimeError):  # closed meanwhile (another close())
                self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return
        # The loop's thread has ended, and what its loop was handed last may still be
        # in its queue, not started: runs handed over as it stopped (this close's stop,
        # another close()'s), or every run since, of a loop someone else stopped (a
        # test that stopped more loops than its own stopped a session guest's QMP loop
        # for good), the runs that gave up waiting (timed out, aborted) too; tasks made
        # as it stopped, whose first step never came; and the tasks a stray stop left
        # running (qemu.qmp's reader and writer).  Dropped with the loop at its close,
        # Python warned "coroutine ... was never awaited" (in whatever test ran then),
        # and "Task was destroyed but it is pending!" at exit.
        # the pass waits for what the first wait left only (no second timeout for a
        # task that ignores its cancellation), a moment at least for their handlers
        self._finish(max(deadline - time.monotonic(), _LAST_PASS_S))
        with self._lock:
            never_run = [(f, c) for f, c in self._runs.items() if not f.done()]
            handed = list(self._handed)
        for fut, coro in never_run:
            fut.cancel()  # its run() raises LoopClosed
            _close_unstarted(coro)
        for coro in handed:  # left when the pass of _finish() could not run, or ended
            _close_unstarted(coro)
        self._loop.close()

    def _finish(self, timeout: float) -> None:
        """Run the stopped loop here (its thread ended) to cancel every task, and each
        coroutine queued but not started before its first step: a command given up on
        is not sent now.  Not from a thread that runs a loop of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return
        # the tasks made as it stopped, their first step queued before the cancel-all's
        # (runs handed over in the step it stopped in): cancelled now, they never start
        # (the loop runs nowhere: its thread has ended); those that started are left to
        # the cancel-all (a second cancellation would cut their clean-up short)
        for t in asyncio.all_tasks(self._loop):
            coro = t.get_coro()
            if (
                inspect.iscoroutine(coro)
                and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
            ):
                t.cancel()
        with self._lock:
            self._close_gen += 1
            task = self._loop.create_task(self._cancel_all(self._close_gen, timeout))
        deadline = time.monotonic() + timeout
        while True:
            # a stop queued before this pass (by a close cut short, or by whoever
            # stopped the loop) ends it early ("Event loop stopped before Future
            # completed."): run it again
            with contextlib.suppress(RuntimeError, asyncio.CancelledError):
                self._loop.run_until_complete(task)
            if task.done() or time.monotonic() >= deadline:
                break
        left = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        if left:
            log.warning(
                "event loop thread %s: %d task(s) went on after their cancellation "
                "past the close's timeout, dropped with the loop: %s",
                self._thread.name,
                len(left),
                ", ".join(sorted({_what(t) for t in left})),
            )

    async def _cancel_all(self, gen: int, timeout: float) -> None:
        """Cancel every other task of the running loop and wait up to *timeout* s for
        their ends (one that goes on after its cancellation is left to the loop's
        close).  Nothing when a later close made its own (*gen* is not the last one):
        this one was left queued by a close cut short."""
        if gen != self._close_gen:
            return
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:  # their exceptions taken (none "never retrieved")
            await asyncio.wait({asyncio.gather(*tasks, return_exceptions=True)}, timeout=timeout)


# the least the close's last pass on a stopped loop waits for the ends of the tasks it
# cancels (their handlers' last awaits), once the close's own timeout has run out
_LAST_PASS_S = 0.1


def _what(task: asyncio.Task[Any]) -> str:
    """*task*'s coroutine's name, for a message."""
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()
