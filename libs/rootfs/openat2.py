"""openat2(2) and readlinkat(2) for lookups confined to a container root.

`openat2(rootfd, path, flags, RESOLVE_IN_ROOT | ...)` resolves `path` with `rootfd` as "/":
absolute symlinks, ``..`` chains and symlinked parents stay inside the root, so no lookup
can reach a host path. RESOLVE_NO_MAGICLINKS refuses procfs magic links (``/proc/<pid>/fd/N``,
``/proc/<pid>/root``), which would otherwise jump out of any root. The fimnotify engine (its
watches) and fimd (its file reader, `libs.rootfs.reader`) use these one implementation.
"""

from __future__ import annotations

import ctypes
import errno
import os

_SYS_OPENAT2 = 437  # x86_64 and aarch64 share the generic syscall number
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: bytes, flags: int, resolve: int) -> int:
    """openat2(2); raises OSError. `path` is relative to `dirfd` (or absolute in-root)."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    while True:
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"{os.strerror(err)}: {path!r}")


# readlinkat(fd, "") works for O_PATH symlink fds; os.readlink on /proc/self/fd/N would
# follow the magic link to a host-side path instead, so use the libc call directly.
_readlinkat = _libc.readlinkat
_readlinkat.restype = ctypes.c_ssize_t


def readlink_fd(fd: int) -> bytes:
    buf = ctypes.create_string_buffer(4097)
    n = _readlinkat(fd, b"", buf, 4097)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:n]
