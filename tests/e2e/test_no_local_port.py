"""A host with no free local port (its ephemeral ports used up) is named as that within
a few attempts: the restore's reseed waited its whole 60 s, then blamed the guest's
agent ("did not take a seed on its reseed port")."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestError, ensure_snapshot


def test_no_free_local_port_at_the_reseed_is_the_hosts_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensure_snapshot()  # a restore, whose first connection is the reseed's
    real = socket.create_connection

    def no_port(address: tuple[str, int], *args: object, **kw: object) -> socket.socket:
        if address[0] == "127.0.0.1":  # the guest's forwards, as the kernel refuses them
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        return real(address, *args, **kw)  # type: ignore[arg-type]

    g = Guest(GuestConfig(name="no-local-port"))
    monkeypatch.setattr(socket, "create_connection", no_port)
    started = time.monotonic()
    try:
        with pytest.raises(GuestError) as info:
            g.start()
    finally:
        g.close()
    assert "cannot reach the restored guest's reseed port: this host has no free local port" in str(
        info.value
    ), str(info.value)
    assert time.monotonic() - started < 20, "it was retried as the guest's fault"
