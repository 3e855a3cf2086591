"""Adapter: the attributes and the SHA-256 of one file inside a container root.

The file is looked up with the rules of the watches (`libs.rootfs.openat2`): resolved with
the container root as "/" (RESOLVE_IN_ROOT), no procfs magic link followed
(RESOLVE_NO_MAGICLINKS), and the last component not followed (O_NOFOLLOW: a symlink is not a
regular file and is not read). The lookup gives an O_PATH descriptor, which is checked to be a
regular file before anything opens it, so a FIFO or a device node of the container is never
opened (no blocking, no side effect); the content is then read through that descriptor
(``/proc/self/fd/N`` names the inode already found, not a path resolved again), with
O_NOATIME where the kernel allows it (the file's owner or CAP_FOWNER; else without, and
`FileState.noatime` says so). Nothing here follows a path to the host.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import attrs

from libs.rootfs.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

#: Default size cap above which a file's content is not hashed (fimd's --hash-max-bytes).
DEFAULT_MAX_HASH_BYTES = 64 << 20
CHUNK = 1 << 20
_ABSENT_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


@attrs.frozen
class FileState:
    """A regular file as read: its stat attributes and, if hashed, its SHA-256 (hex).

    `skipped` says why a file that should have been hashed was not (empty when it was, or
    when no hash was asked for)."""

    size: int
    mode: int  # st_mode: the type bits are those of a regular file
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int = 0
    ino: int = 0
    dev: int = 0
    sha256: str = ""
    skipped: str = ""
    noatime: bool = True

    def same_inode_version(self, other: FileState) -> bool:
        """Same inode, size and change times: its content has not been written since."""
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
        )


@attrs.frozen
class NotRegular:
    """No regular file at the path (gone, a directory, a symlink, a device, ...): `why`."""

    why: str


def _state(st: os.stat_result) -> FileState:
    return FileState(
        size=st.st_size,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        ino=st.st_ino,
        dev=st.st_dev,
    )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def read_state(
    root: int,
    path: bytes,
    *,
    hash_content: bool,
    max_bytes: int = DEFAULT_MAX_HASH_BYTES,
    known: FileState | None = None,
) -> FileState | NotRegular:
    """The file at `path` (absolute, inside the root `root`), hashed if `hash_content`.

    `known` is the last state seen of this path: if the inode, size and times are the
    same, its hash is reused instead of reading the file again. Raises nothing for what a
    container can do to its files: a missing path, a symlink, an unreadable file or one
    that changes while it is read give `NotRegular` or a `skipped` reason."""
    try:
        fd = openat2(root, path, os.O_PATH | os.O_NOFOLLOW, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as err:
        return _absent(err)
    return read_fd(fd, hash_content=hash_content, max_bytes=max_bytes, known=known)


def read_at(
    dirfd: int,
    name: bytes,
    *,
    hash_content: bool,
    max_bytes: int = DEFAULT_MAX_HASH_BYTES,
    known: FileState | None = None,
) -> FileState | NotRegular:
    """Like `read_state` for the entry `name` (one component, not followed) of the
    directory `dirfd`: a walk below a directory already opened inside the root."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError as err:
        return _absent(err)
    return read_fd(fd, hash_content=hash_content, max_bytes=max_bytes, known=known)


def _absent(err: OSError) -> NotRegular:
    if err.errno in _ABSENT_ERRNOS:
        return NotRegular("missing")
    return NotRegular(errno.errorcode.get(err.errno or 0, "error"))


def read_fd(
    fd: int,
    *,
    hash_content: bool,
    max_bytes: int,
    known: FileState | None,
    st: os.stat_result | None = None,
) -> FileState | NotRegular:
    """The file of the O_PATH descriptor `fd` (closed here); `st`: its fstat, if taken."""
    try:
        st = st or os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return NotRegular(_kind(st.st_mode))
        return _content(fd, _state(st), hash_content, max_bytes, known)
    finally:
        os.close(fd)


def _content(
    fd: int, state: FileState, hash_content: bool, max_bytes: int, known: FileState | None
) -> FileState:
    if not hash_content:
        return state
    if known is not None and known.sha256 and state.same_inode_version(known):
        return attrs.evolve(state, sha256=known.sha256)
    if state.size > max_bytes:
        return attrs.evolve(state, skipped=f"size {state.size} is over the cap {max_bytes}")
    return _hashed(fd, state, max_bytes)


def _reopen(fd: int) -> tuple[int, bool]:
    """The O_PATH descriptor `fd` opened for reading: (descriptor, with O_NOATIME)."""
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    magic = f"/proc/self/fd/{fd}"
    try:
        return os.open(magic, flags | os.O_NOATIME), True
    except PermissionError:  # O_NOATIME needs the owner or CAP_FOWNER: read without it
        return os.open(magic, flags), False


def _hashed(fd: int, state: FileState, max_bytes: int) -> FileState:
    try:
        reader, noatime = _reopen(fd)
    except OSError as err:
        return attrs.evolve(state, skipped=f"cannot open: {os.strerror(err.errno or 0)}")
    try:
        digest = hashlib.sha256()
        buf = bytearray(min(CHUNK, max(state.size + 1, 1 << 16)))  # small file, small buffer
        view = memoryview(buf)
        total = 0
        while total <= max_bytes:
            n = os.readv(reader, [view])
            if n == 0:
                break
            digest.update(view[:n])
            total += n
        after = _state(os.fstat(reader))
    except OSError as err:
        return attrs.evolve(state, skipped=f"cannot read: {os.strerror(err.errno or 0)}")
    finally:
        os.close(reader)
    if total > max_bytes:
        return attrs.evolve(after, skipped=f"size grew over the cap {max_bytes}", noatime=noatime)
    if not after.same_inode_version(state) or total != after.size:
        return attrs.evolve(after, skipped="changed while it was read", noatime=noatime)
    return attrs.evolve(state, sha256=digest.hexdigest(), noatime=noatime)
