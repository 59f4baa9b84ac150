"""The plugin as a user's pytest run meets it: each case is an inner pytest session in a
project of its own (pytester), with the real guest.

* a failing shared-guest test, then another one: the session ends without a
  ``PytestUnraisableExceptionWarning`` (paramiko file objects dying in a garbage cycle);
* a device property QEMU refuses: the error is QEMU's message, first and briefly;
* a module parameter the module does not declare: refused before anything boots;

and, directly: ``irqlab_fresh_agent`` is the test's own guest's agent.
"""

from __future__ import annotations

import pytest

from irqlab import paths
from irqlab.testing.helpers import DeviceControl
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

pytest_plugins = ["pytester"]
CACHE = paths.cache_dir()  # read now: pytester points HOME at its temp directory


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project that finds the build cache and keeps its logs to itself."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    return pytester


def test_failing_shared_guest_test_leaves_no_unraisable_warning(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_fails(irqlab_agent):
            assert False, "on purpose"

        def test_passes(irqlab_agent):
            assert irqlab_agent.ping()["pong"]
        """
    )
    r = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::pytest.PytestUnraisableExceptionWarning"
    )
    r.assert_outcomes(failed=1, passed=1)
    out = r.stdout.str() + r.stderr.str()
    assert "Unraisable" not in out and "I/O operation on closed file" not in out, out


def test_a_device_property_qemu_refuses_is_said_in_qemus_words(inner: pytest.Pytester) -> None:
    """A value only QEMU judges (every PCI device's ROM file: the irqlab device's own
    properties' values are refused before anything boots)."""
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.irqlab(device={"romfile": "bogus"})
        def test_bad_device(irqlab_fresh_guest):
            pass
        """
    )
    r = inner.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    section = out.split("ERROR at setup of test_bad_device", 1)[1].split("short test summary", 1)[0]
    lines = section.strip("_ \n").splitlines()
    assert lines[0] == "QEMU refused to start the guest 'fresh':", section
    assert "romfile=bogus" in lines[1] and 'failed to find romfile "bogus"' in lines[1]
    assert len(lines) <= 6, section
    for noise in ("Traceback", "asyncio", "Negotiation failed", "EOFError", "qemu.qmp"):
        assert noise not in out, out


def test_an_unknown_module_parameter_is_refused_before_anything_boots(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.irqlab(module={"nosuch_param": 1, "wakeup": "thread"})
        def test_unknown_param(irqlab_fresh_guest):
            pass
        """
    )
    r = inner.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert "unknown parameter of irqlab.ko: nosuch_param; its parameters are: " in out, out
    assert "wakeup" in out and "gpio_edges (uint)" in out, out
    assert "Traceback" not in out, out
    assert not list((inner.path / "logs").rglob("qemu.log")), "a QEMU was started"


@pytest.mark.irqlab(smp=2)  # test_unbind_gpio_work.py's configuration: its snapshot
def test_the_fresh_agent_is_the_own_guests_and_reset(
    irqlab_fresh_guest: Guest, irqlab_fresh_agent: AgentClient, irqlab_fresh_device: DeviceControl
) -> None:
    assert irqlab_fresh_agent is irqlab_fresh_guest.agent
    assert irqlab_fresh_guest.sh("nproc").strip() == "2"
    assert irqlab_fresh_agent.stats()["paths"] == {}
    assert irqlab_fresh_device.counters().raised == 0
    irqlab_fresh_agent.arm("read")
    seq = irqlab_fresh_device.next_seq()
    irqlab_fresh_device.push(0x5EED)
    ev = irqlab_fresh_agent.expect(path="read", seq=seq, timeout=30)
    assert ev["value"] == 0x5EED


@pytest.mark.irqlab(smp=2)  # the same configuration: its snapshot
def test_the_markers_guest_taken_at_run_time(request: pytest.FixtureRequest) -> None:
    """Through request.getfixturevalue (a helper that picks its guest as it runs): the
    setup's check, which sees only the fixtures a test names, refused it ("uses none")."""
    g = request.getfixturevalue("irqlab_fresh_guest")
    assert g.sh("nproc").strip() == "2"
