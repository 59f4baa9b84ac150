"""Thin wrappers over Linux system calls the stdlib does not expose the way we need.

* :func:`raw_read` calls libc ``read`` through ctypes: unlike ``os.read`` it does
  not retry on ``EINTR`` (PEP 475), so a signal sent to a thread blocked in it
  shows userspace exactly what the driver returned (``-ERESTARTSYS`` becomes
  ``EINTR`` without ``SA_RESTART``).
* :class:`SignalFd` wraps ``signalfd(2)``: ``signal.sigwaitinfo`` drops
  ``si_fd``/``si_band``, which F_SETSIG users need.
* :func:`thread_in_read` tells whether a thread sits in the ``read`` system call
  (from ``/proc/self/task/<tid>/syscall``) so the host never needs a sleep to
  know a reader is blocked.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
from collections import namedtuple
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_libc.read.restype = ctypes.c_ssize_t
_libc.signalfd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.signalfd.restype = ctypes.c_int
_libc.sigemptyset.argtypes = [ctypes.c_void_p]
_libc.sigaddset.argtypes = [ctypes.c_void_p, ctypes.c_int]

SFD_NONBLOCK = os.O_NONBLOCK
SFD_CLOEXEC = os.O_CLOEXEC
_SIGSET_BYTES = 128  # glibc sigset_t

# struct signalfd_siginfo (linux/signalfd.h): 128 bytes, the fields we use first.
_SSI = struct.Struct("=IiiIIiIIIIiiQQQQH")
SIGNALFD_SIGINFO_SIZE = 128

# read(2) numbers for /proc/<tid>/syscall, per architecture.
_SYS_READ = {"x86_64": 0, "aarch64": 63, "riscv64": 63, "i686": 3, "i386": 3, "armv7l": 3}


def raw_read(fd: int, size: int) -> bytes:
    """read(2) once; raise OSError (EINTR included) instead of retrying."""
    buf = ctypes.create_string_buffer(size)
    n = _libc.read(fd, buf, size)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return buf.raw[:n]


class SigInfo(namedtuple("SigInfo", "signo errno code pid fd band")):
    """The fields of a ``struct signalfd_siginfo`` the agent uses."""

    __slots__ = ()

    def as_json(self) -> dict[str, int]:
        return {"signo": self.signo, "code": self.code, "fd": self.fd, "band": self.band}


def decode_siginfo(data: bytes) -> SigInfo:
    if len(data) < SIGNALFD_SIGINFO_SIZE:
        raise ValueError(f"short signalfd_siginfo: {len(data)} bytes")
    f = _SSI.unpack_from(data)
    return SigInfo(signo=f[0], errno=f[1], code=f[2], pid=f[3], fd=f[5], band=f[7])


def encode_siginfo(signo: int, code: int = 0, fd: int = 0, band: int = 0) -> bytes:
    """The inverse of :func:`decode_siginfo` (for tests with a pipe standing in)."""
    head = _SSI.pack(signo, 0, code, 0, 0, fd, 0, band, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return head + bytes(SIGNALFD_SIGINFO_SIZE - len(head))


class SignalFd:
    """A non-blocking signalfd for *signals* (which must already be blocked)."""

    def __init__(self, signals: Iterable[int]) -> None:
        mask = ctypes.create_string_buffer(_SIGSET_BYTES)
        _libc.sigemptyset(mask)
        for s in signals:
            if _libc.sigaddset(mask, int(s)) != 0:
                raise OSError(errno.EINVAL, f"bad signal {s}")
        fd = _libc.signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"signalfd: {os.strerror(e)}")
        self.fd = fd

    def read_all(self) -> list[SigInfo]:
        out: list[SigInfo] = []
        while True:
            try:
                data = os.read(self.fd, SIGNALFD_SIGINFO_SIZE * 16)
            except BlockingIOError:
                return out
            for off in range(0, len(data) - SIGNALFD_SIGINFO_SIZE + 1, SIGNALFD_SIGINFO_SIZE):
                out.append(decode_siginfo(data[off : off + SIGNALFD_SIGINFO_SIZE]))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def block_signals(signals: Iterable[int]) -> None:
    """Block *signals* in the calling thread (call before starting threads)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))


def thread_in_read(tid: int) -> bool:
    """Whether thread *tid* of this process is blocked in read(2) right now."""
    nr = _SYS_READ.get(os.uname().machine)
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            first = f.read().split()
        with open(f"/proc/self/task/{tid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"
    if not first or first[0] == "running" or state != "S":
        return False
    return nr is None or first[0] == str(nr)


# <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]), RNDRESEEDCRNG = _IO('R', 0x07)
# (the kernel's uapi, encoded by the generic _IOC layout of x86 and arm64).
RNDADDENTROPY = (1 << 30) | (8 << 16) | (ord("R") << 8) | 0x03
RNDRESEEDCRNG = (ord("R") << 8) | 0x07


def reseed_kernel_rng(seed: bytes) -> None:
    """Credit *seed* to the kernel's input pool and reseed the CRNG from it at once.

    A guest restored from a saved state starts with the saver's CRNG state; without
    this, two restores would hand out the same random numbers (needs CAP_SYS_ADMIN)."""
    import fcntl
    import struct

    buf = struct.pack(f"ii{len(seed)}s", len(seed) * 8, len(seed), seed)
    fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, buf)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)
