"""GuestConfig's waits: each a number of seconds > 0, refused at construction with the
setting's name (a wait of 0 s failed the first step it bounded, named after the step),
by the check every other wait has (:func:`irqlab.vm.loadscale.check_timeout`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab.vm.guest import GuestConfig, GuestConfigError
from irqlab.vm.loadscale import check_timeout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ssh_timeout", 0),
        ("agent_timeout", -1.0),
        ("boot_timeout", float("nan")),
        ("ssh_timeout", float("inf")),
        ("restore_timeout", "60"),
        ("freeze_timeout", 0.0),
        ("module_load_timeout", 0),
        ("module_load_timeout", "5"),
    ],
)
def test_a_wait_that_cannot_be_waited_is_refused_naming_the_setting(
    name: str, value: object
) -> None:
    """ssh_timeout=0 failed the first step with "the reseed port did not answer".  The
    refusal is check_timeout's, word for word (GuestConfig had a copy of the check)."""
    with pytest.raises((TypeError, ValueError)) as checked:
        check_timeout(value, f"GuestConfig.{name}")
    with pytest.raises(GuestConfigError) as refused:
        GuestConfig(**{name: value})  # type: ignore[arg-type]
    assert str(refused.value).startswith(str(checked.value)), refused.value


def test_the_freeze_watch_can_be_turned_off() -> None:
    assert GuestConfig(freeze_timeout=None).freeze_timeout is None
    with pytest.raises(GuestConfigError, match=r"\(None turns the freeze watch off\)$"):
        GuestConfig(freeze_timeout=0)


@pytest.mark.parametrize("name", ["../../x", "a/b", "", ".hidden", "-x", "my guest", 7])
def test_a_guest_name_that_is_no_plain_file_name_is_refused(name: object) -> None:
    """It names the run directory: "../../x" wrote the logs outside the log directory."""
    with pytest.raises(GuestConfigError, match="it names the guest's log directory"):
        GuestConfig(name=name)  # type: ignore[arg-type]


def test_plain_names_and_str_paths_are_taken(tmp_path: Path) -> None:
    for name in ("e2e", "arch-x86_64", "kill_save.2", "Guest+1"):
        assert GuestConfig(name=name).name == name
    # a str was kept as it is and ended in a TypeError at start()
    config = GuestConfig(log_dir=str(tmp_path), qmp_socket=str(tmp_path / "q.sock"))
    assert config.log_dir == tmp_path and config.qmp_socket == tmp_path / "q.sock"
    with pytest.raises(GuestConfigError, match=r"GuestConfig\(log_dir=5\): give a path"):
        GuestConfig(log_dir=5)  # type: ignore[arg-type]


def test_a_module_loads_time_limit_is_the_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module whose init waits for ever cost 60 s, the fixed KERNEL_STEP_TIMEOUT_S,
    whatever the config said: the step's limit is now module_load_timeout's."""
    from irqlab.vm.guest import KERNEL_STEP_TIMEOUT_S, Guest

    assert GuestConfig().module_load_timeout == KERNEL_STEP_TIMEOUT_S
    g = Guest(GuestConfig(module_load_timeout=5))
    waited: list[float] = []

    def run(cmd: str, *, timeout: float, doing: str = "") -> object:
        waited.append(timeout)
        return "ran"

    monkeypatch.setattr(g, "_run", run)
    assert g._run_kernel_step("insmod /x.ko", "insmod x.ko") == "ran"
    assert waited == [5]
