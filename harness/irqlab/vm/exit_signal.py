"""A guest command killed by a signal, as SSH reports it (RFC 4254 6.10, "exit-signal").

dropbear reports a command that a signal ended (a crash: SEGV, ABRT; ``kill -9``)
with an ``exit-signal`` channel request instead of ``exit-status``.  paramiko
ignores that request: the channel then closes without a status and
``recv_exit_status()`` says -1, as if the connection had dropped, so a user's
crashing program cost the wait for a guest fault and was reported as "rc=-1".

:func:`track_exit_signals` gives one transport a channel-request handler that
records the signal on the channel (:func:`exit_signal`) and sets its exit status
to 128 + the signal's number, as a shell reports a child killed by a signal.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, NamedTuple

from irqlab.errors import hide_frame

if TYPE_CHECKING:  # paramiko is imported where it is used: `irqlab kdir` loads none
    import paramiko

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["ExitSignal", "exit_signal", "signal_status", "track_exit_signals"]

ATTR = "irqlab_exit_signal"  # where the request's contents go on the channel
TABLE = "_channel_handler_table"  # paramiko.Transport's (private, see below)
UNKNOWN_SIGNAL_STATUS = 255  # a name this host does not know (another OS's signal)


class ExitSignal(NamedTuple):
    name: str  # without "SIG", as the protocol sends it: "SEGV", "KILL"
    core_dumped: bool
    message: str

    def describe(self) -> str:
        core = " (core dumped)" if self.core_dumped else ""
        msg = f": {self.message}" if self.message else ""
        return f"killed by signal {self.name}{core}{msg}"


def signal_status(name: str) -> int:
    """128 + the number of signal *name* ("SEGV" -> 139), as a shell says it."""
    try:
        return 128 + int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return UNKNOWN_SIGNAL_STATUS


def exit_signal(chan: Any) -> ExitSignal | None:
    """The signal that ended *chan*'s command, if one did (and was reported)."""
    found = getattr(chan, ATTR, None)
    return found if isinstance(found, ExitSignal) else None


def track_exit_signals(transport: paramiko.Transport) -> None:
    """Record ``exit-signal`` requests on *transport*'s channels (see the module's doc).

    paramiko dispatches channel messages through a table of the transport's class;
    this gives *transport* its own copy, with the request handler wrapped.  A transport
    without that table (a test's fake; a paramiko that renamed it, which
    tests/unit/test_exit_signal.py would catch) is left as it is."""
    from paramiko.common import MSG_CHANNEL_REQUEST

    found = getattr(transport, TABLE, None)
    if not isinstance(found, dict) or MSG_CHANNEL_REQUEST not in found:
        return
    table = dict(found)
    base = table[MSG_CHANNEL_REQUEST]

    def handle(chan: paramiko.Channel, m: paramiko.Message) -> None:
        start = m.packet.tell()
        if m.get_text() != "exit-signal":
            m.packet.seek(start)
            base(chan, m)
            return
        m.get_boolean()  # want_reply: never for exit-signal
        found = ExitSignal(m.get_text(), m.get_boolean(), m.get_text())
        setattr(chan, ATTR, found)
        chan.exit_status = signal_status(found.name)
        chan.status_event.set()

    table[MSG_CHANNEL_REQUEST] = handle
    setattr(transport, TABLE, table)
