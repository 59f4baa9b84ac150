"""GuestConfig's waits: each a number of seconds > 0, refused at construction with the
setting's name (a wait of 0 s failed the first step it bounded, named after the step)."""

from __future__ import annotations

import pytest

from irqlab.vm.guest import GuestConfig, GuestConfigError


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ssh_timeout", 0),
        ("agent_timeout", -1.0),
        ("boot_timeout", float("nan")),
        ("ssh_timeout", float("inf")),
        ("restore_timeout", "60"),
        ("freeze_timeout", 0.0),
    ],
)
def test_a_wait_that_cannot_be_waited_is_refused_naming_the_setting(
    name: str, value: object
) -> None:
    """ssh_timeout=0 failed the first step with "the reseed port did not answer"."""
    with pytest.raises(
        GuestConfigError, match=rf"^GuestConfig\({name}=.*\): a number of seconds > 0"
    ):
        GuestConfig(**{name: value})  # type: ignore[arg-type]


def test_the_freeze_watch_can_be_turned_off() -> None:
    assert GuestConfig(freeze_timeout=None).freeze_timeout is None
