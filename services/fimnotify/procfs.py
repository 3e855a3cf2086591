"""Adapter: the target container's root through procfs, resolved with openat2.

Every lookup goes through ``openat2(rootfd, path, RESOLVE_IN_ROOT)`` where ``rootfd`` is
``<proc_root>/<pid>/root``: absolute symlinks, ``..`` chains and symlinked parents are
resolved with the container's root as "/", so no lookup can ever reach a host path. Watches
are added on the resolved descriptor (``/proc/self/fd/N``), never on a path string that the
kernel would resolve again in fimnotify's own root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

import attrs
from inotify_simple import INotify

from libs.fimnotify_api.identity import ProcessIdentity, mismatch
from services.fimnotify.tree import Lookup, NodeKind

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


class TargetGoneError(Exception):
    """The target process does not exist (any more)."""


class TargetMismatchError(Exception):
    """The PID belongs to another process than the one fimd resolved."""


@attrs.define
class Target:
    """Descriptors pinning the target process: its /proc dir, root, and a pidfd.

    The /proc/<pid> directory descriptor is opened first and checked again after the root
    and pidfd are opened, so a recycled PID can never be mistaken for the target. With an
    identity (start time, cgroup leaf names) the process is also checked to be the one fimd
    resolved, before and after the root is opened (`libs.fimnotify_api.identity`).
    """

    pid: int
    piddir: int
    root: int
    pidfd: int | None

    @classmethod
    def open(cls, proc_root: str, pid: int, identity: ProcessIdentity | None = None) -> Target:
        identity = identity or ProcessIdentity()
        try:
            piddir = os.open(f"{proc_root}/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TargetGoneError(f"process {pid} not found in {proc_root}") from None
        try:
            _check(piddir, pid, identity)
        except BaseException:
            os.close(piddir)
            raise
        try:
            root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=piddir)
        except (FileNotFoundError, ProcessLookupError):  # a zombie has no root any more
            os.close(piddir)
            raise TargetGoneError(f"process {pid} has exited") from None
        pidfd = _pidfd(pid) if os.path.realpath(proc_root) == "/proc" else None
        target = cls(pid, piddir, root, pidfd)
        if not target.alive():
            target.close()
            raise TargetGoneError(f"process {pid} exited during start")
        try:
            _check(piddir, pid, identity)
        except BaseException:
            target.close()
            raise
        return target

    def alive(self) -> bool:
        """True while the pinned process exists (its /proc dir still answers)."""
        try:
            os.stat("stat", dir_fd=self.piddir)
        except (ProcessLookupError, FileNotFoundError):
            return False
        return True

    def close(self) -> None:
        for fd in (self.piddir, self.root, self.pidfd):
            if fd is not None:
                os.close(fd)


def _read(piddir: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=piddir)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _check(piddir: int, pid: int, identity: ProcessIdentity) -> None:
    """Raises TargetMismatchError unless the pinned process is the resolved one."""
    if not identity.start_time and not identity.cgroup_leaves:
        return
    try:
        stat, cgroups = _read(piddir, "stat"), _read(piddir, "cgroup")
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGoneError(f"process {pid} has exited") from None
    why = mismatch(identity, stat, cgroups.decode("utf-8", "replace"))
    if why:
        raise TargetMismatchError(f"process {pid}: {why}")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


@attrs.define
class RootFs:
    """The `tree.Port` implementation over a container root descriptor."""

    root: int
    inotify: INotify

    def lookup(self, path: bytes) -> Lookup:
        """Kind of the canonical path (no symlink followed in any component)."""
        try:
            fd = openat2(
                self.root,
                path,
                os.O_PATH | os.O_NOFOLLOW,
                RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
            )
        except FileNotFoundError:
            return Lookup(NodeKind.MISSING)
        except NotADirectoryError:
            return Lookup(NodeKind.MISSING)
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                return Lookup(NodeKind.LINK, readlink_fd(fd))
            if stat.S_ISDIR(st.st_mode):
                return Lookup(NodeKind.DIR)
            return Lookup(NodeKind.FILE)
        finally:
            os.close(fd)

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        """Adds a watch on the directory at canonical `path`, then lists it if asked.

        RESOLVE_NO_SYMLINKS: a canonical path has no symlinks; one appearing now (a race
        with the container) fails the lookup (ELOOP) instead of being followed. The watch
        is added through an O_PATH descriptor, which causes no inotify events; only the
        listing (after the watch, to catch the creation race) opens the directory.
        """
        fd = openat2(
            self.root,
            path,
            os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
        )
        try:
            magic = b"/proc/self/fd/%d" % fd
            wd: int = self.inotify.add_watch(magic, mask)
            if not listing:
                return wd, []
            dirfd = os.open(magic, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with os.scandir(dirfd) as it:
                    entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
            finally:
                os.close(dirfd)
            return wd, entries
        finally:
            os.close(fd)

    def unwatch(self, wd: int) -> None:
        try:
            self.inotify.rm_watch(wd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # already gone (IN_IGNORED in flight)
                raise


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
