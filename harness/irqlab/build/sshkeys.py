"""SSH keys for talking to guests: one client key and one dropbear host key per cache.

Generated on the host (ed25519, with ``cryptography``, a paramiko dependency)
the first time an image is built and kept in ``<cache>/guest-keys/`` (0600,
never in the repository).  The host key is written in dropbear's own format,
so the guest does not spend boot time generating one, and its public half is
known in advance: clients can check it strictly.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irqlab.build.cache import exclusive_lock
from irqlab.paths import cache_dir

__all__ = [
    "CLIENT_KEY",
    "HOST_KEY",
    "SshKeys",
    "dropbear_ed25519",
    "ensure_keys",
    "find_keys",
    "openssh_pub",
]

CLIENT_KEY = "client_ed25519"
HOST_KEY = "host_ed25519.dropbear"
_HOST_PEM = "host_ed25519"  # the host key in OpenSSH's format (HOST_KEY is dropbear's)


@dataclass(frozen=True)
class SshKeys:
    client_key: Path  # OpenSSH-format private key (paramiko.Ed25519Key.from_private_key_file)
    client_pub: str  # "ssh-ed25519 AAAA... irqlab-client"
    host_key: Path  # dropbear-format private host key, shipped in the image
    host_pub: str  # "ssh-ed25519 AAAA..." the guest presents


def _sshstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def dropbear_ed25519(key: Ed25519PrivateKey) -> bytes:
    """*key* in dropbear's private key file format (``buf_put_ed25519_priv_key``)."""
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _sshstr(b"ssh-ed25519") + _sshstr(seed + pub)


def openssh_pub(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.rename(path)


def _load(path: Path) -> Ed25519PrivateKey:
    """The key stored (OpenSSH PEM) at *path*; ValueError if it is no ed25519 key."""
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an ed25519 key; delete it to regenerate")
    return key


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    """The key stored (OpenSSH PEM) at *path*, created if missing."""
    if path.is_file():
        return _load(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)
    return key


def _keys_dir(directory: Path | None) -> Path:
    return directory if directory is not None else cache_dir() / "guest-keys"


def ensure_keys(directory: Path | None = None) -> SshKeys:
    """The cache's guest SSH keys, generated on first use.

    Under the directory's lock: two builds on a fresh cache each generated keys, one
    returning a key the other then overwrote on disk (or failing on a shared temporary)."""
    d = _keys_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ready = _ready_keys(d)
    if ready is not None:  # every guest start: no lock (it waited on another's start)
        return ready
    with exclusive_lock(d / ".lock", "generating the guest SSH keys"):
        return _ensure_keys(d)


def _ready_keys(d: Path) -> SshKeys | None:
    """The keys when every file is as :func:`_ensure_keys` leaves it, read without the
    lock and writing nothing; None otherwise (one missing, partly written, another's)."""
    try:
        client = _load(d / CLIENT_KEY)
        host = _load(d / _HOST_PEM)
        whole = (
            (d / HOST_KEY).read_bytes() == dropbear_ed25519(host)
            and (d / (CLIENT_KEY + ".pub")).read_text() == _client_pub(client) + "\n"
            and (d / "host_ed25519.pub").read_text() == openssh_pub(host) + "\n"
        )
    except (OSError, ValueError):
        return None
    if not whole:
        return None
    return SshKeys(d / CLIENT_KEY, _client_pub(client), d / HOST_KEY, openssh_pub(host))


def _ensure_keys(d: Path) -> SshKeys:
    client = _load_or_create(d / CLIENT_KEY)
    (d / (CLIENT_KEY + ".pub")).write_text(_client_pub(client) + "\n")
    host = _load_or_create(d / _HOST_PEM)
    host_db = d / HOST_KEY
    data = dropbear_ed25519(host)
    if not host_db.is_file() or host_db.read_bytes() != data:
        _write_private(host_db, data)
    (d / "host_ed25519.pub").write_text(openssh_pub(host) + "\n")
    keys = find_keys(d)
    assert keys is not None
    return keys


def find_keys(directory: Path | None = None) -> SshKeys | None:
    """The cache's guest SSH keys if they were generated, else None; writes nothing."""
    d = _keys_dir(directory)
    if not all((d / n).is_file() for n in (CLIENT_KEY, _HOST_PEM, HOST_KEY)):
        return None
    client_pub = _client_pub(_load_or_create(d / CLIENT_KEY))
    return SshKeys(
        d / CLIENT_KEY, client_pub, d / HOST_KEY, openssh_pub(_load_or_create(d / _HOST_PEM))
    )


def _client_pub(client: Ed25519PrivateKey) -> str:
    return openssh_pub(client) + " irqlab-client"
