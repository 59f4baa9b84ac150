"""A command's stdin (Guest.run's *input*) that the command does not read to the end."""

from __future__ import annotations

from irqlab.vm.guest import Guest


def test_a_command_that_ends_before_reading_its_input_gives_its_status(
    irqlab_guest: Guest,
) -> None:
    """The guest closes the channel once the command exits: the rest of a big input was
    sent into a closed channel, a bare ``OSError: Socket is closed`` instead of the
    command's result (a small input fits in the channel's window before that)."""
    result = irqlab_guest.run("echo done; exit 3", input=b"x" * 4_000_000)
    assert (result.rc, result.out) == (3, "done\n"), result
    # the connection goes on, and an input read to the end still arrives whole
    assert irqlab_guest.run("wc -c", input=b"y" * 1_000_000).out.split() == ["1000000"]


def test_a_str_input_is_sent_as_utf8(irqlab_guest: Guest) -> None:
    """It was a TypeError from the send (memoryview of a str)."""
    assert irqlab_guest.run("cat", input="héllo").out == "héllo"
    assert irqlab_guest.run("wc -c", input="héllo").out.split() == ["6"]  # UTF-8's bytes
