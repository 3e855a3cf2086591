"""Adapter: the entries of a subject's tree inside a container root, for its baseline.

The tree is what the watches of the subject cover (`services/fimnotify/tree.py`): each
configured path is resolved inside the root (symlinks followed with the root as "/", no
magic link); a directory is listed, and with `recursive` its subdirectories down to
`max_depth` (0 = unlimited) levels below it; names matching an `ignore` glob are left out
with everything below them; with `only_dir` a configured path that is not a directory is
left out. Below a configured directory every directory is opened relative to it with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so nothing below can lead out of it, and each of its
entries by its one name relative to that directory's descriptor with O_NOFOLLOW (a name
from the listing has no "/" and is never ".."); symlinks are entries, never followed.
Regular files are read by `libs.rootfs.reader` (attributes, and SHA-256 with
`hash_content`). At most `max_entries` entries: beyond, `truncated`.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Sequence

import attrs

from libs.rootfs.openat2 import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    openat2,
)
from libs.rootfs.reader import DEFAULT_MAX_HASH_BYTES, FileState, read_fd

DEFAULT_MAX_ENTRIES = 200_000


@attrs.frozen
class Entry:
    """One entry of a tree: `kind` is file, dir, symlink or other (devices, FIFOs, sockets);
    `sha256` for a hashed regular file, else `hash_skipped` says why not (if asked)."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    sha256: str = ""
    hash_skipped: str = ""
    #: Not compared, not stored: they tell an unchanged file (its hash is reused).
    ctime_ns: int = attrs.field(default=0, eq=False)
    ino: int = attrs.field(default=0, eq=False)
    dev: int = attrs.field(default=0, eq=False)

    def as_known(self) -> FileState:
        return FileState(
            self.size, self.mode, self.uid, self.gid, self.mtime_ns, self.ctime_ns,
            self.ino, self.dev, sha256=self.sha256, skipped=self.hash_skipped,
        )  # fmt: skip


@attrs.frozen
class Rules:
    """How a subject's tree is walked (the subject's fields and fimd's bounds)."""

    recursive: bool = False
    max_depth: int = 0
    ignore: tuple[str, ...] = ()
    only_dir: bool = False
    hash_content: bool = False
    max_bytes: int = DEFAULT_MAX_HASH_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES

    def descend(self, depth: int) -> bool:
        """A subdirectory at `depth` (1 = directly below the configured path) is walked."""
        return self.recursive and (self.max_depth == 0 or depth <= self.max_depth)

    def ignored(self, name: bytes) -> bool:
        return self.ignored_text(os.fsdecode(name))

    def ignored_text(self, text: str) -> bool:
        """`ignored` for a name as the listing gives it (surrogate-escaped)."""
        return any(fnmatch.fnmatchcase(text, pattern) for pattern in self.ignore)


@attrs.define
class Walk:
    """The entries found (by logical path), whether the cap cut the walk short, and the
    lookups that failed (a racing container, a path too long)."""

    entries: dict[bytes, Entry] = attrs.field(factory=dict)
    truncated: bool = False
    errors: int = 0


#: The last known entry of a path (its hash is reused when the file is unchanged).
Known = Callable[[bytes], Entry | None]


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _entry(st: os.stat_result) -> Entry:
    return Entry(
        _kind(st.st_mode), st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns, ino=st.st_ino, dev=st.st_dev,
    )  # fmt: skip


def _join(base: bytes, rel: bytes) -> bytes:
    if not rel:
        return base
    return (base.rstrip(b"/") or b"") + b"/" + rel


class _Walker:
    def __init__(self, rules: Rules, known: Known) -> None:
        self.rules = rules
        self.known = known
        self.out = Walk()

    def full(self) -> bool:
        if len(self.out.entries) >= self.rules.max_entries:
            self.out.truncated = True
        return self.out.truncated

    def add(self, path: bytes, fd: int) -> Entry | None:
        """The entry of the O_PATH descriptor `fd` (closed here) at logical `path`."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            entry = _entry(st)
        else:
            entry = self._file(path, fd, st)
        self.out.entries[path] = entry
        return entry

    def _file(self, path: bytes, fd: int, st: os.stat_result) -> Entry:
        old = self.known(path)
        known = old.as_known() if old is not None and old.kind == "file" else None
        rules = self.rules
        state = read_fd(
            fd, hash_content=rules.hash_content, max_bytes=rules.max_bytes, known=known, st=st
        )
        if not isinstance(state, FileState):  # replaced meanwhile: what it is now
            self.out.errors += 1
            return Entry("other", 0, 0, 0, 0, 0)
        return Entry(
            "file", state.mode, state.uid, state.gid, state.size, state.mtime_ns,
            sha256=state.sha256, hash_skipped=state.skipped,
            ctime_ns=state.ctime_ns, ino=state.ino, dev=state.dev,
        )  # fmt: skip

    def tree(self, top: int, base: bytes) -> None:
        """Everything below the configured directory `top` (an O_PATH descriptor)."""
        pending: list[tuple[bytes, int]] = [(b"", 0)]
        while pending and not self.full():
            rel, depth = pending.pop()
            listed = self._list(top, rel)
            if listed is None:
                continue
            dirfd, names = listed
            try:
                for name, is_dir in names:
                    if self.full():
                        return
                    child = rel + b"/" + name if rel else name
                    added = self._add_in(dirfd, name, _join(base, child))
                    if added and is_dir and self.rules.descend(depth + 1):
                        pending.append((child, depth + 1))
            finally:
                os.close(dirfd)

    def _list(self, top: int, rel: bytes) -> tuple[int, list[tuple[bytes, bool]]] | None:
        """The directory `rel` below `top` (a descriptor, for its entries) and its names."""
        try:
            fd = openat2(
                top, rel or b".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            )  # fmt: skip
        except OSError:
            self.out.errors += 1
            return None
        try:
            with os.scandir(fd) as it:
                names = [
                    (os.fsencode(e.name), e.is_dir(follow_symlinks=False))
                    for e in it
                    if not self.rules.ignored_text(e.name)
                ]
        except OSError:
            os.close(fd)
            self.out.errors += 1
            return None
        return fd, names

    def _add_in(self, dirfd: int, name: bytes, path: bytes) -> bool:
        """The entry `name` of the directory `dirfd`, at logical `path`."""
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError:
            self.out.errors += 1  # gone since it was listed
            return False
        self.add(path, fd)
        return True


def walk(root: int, paths: Sequence[bytes], rules: Rules, known: Known = lambda _: None) -> Walk:
    """The entries of the configured `paths` (absolute, inside the root `root`)."""
    walker = _Walker(rules, known)
    for path in paths:
        if walker.full():
            break
        try:
            fd = openat2(root, path, os.O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError:
            continue  # not there (yet): no entry, so a removed path shows as REMOVED
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if rules.only_dir and not is_dir:
            os.close(fd)
            continue
        if not is_dir:
            walker.add(path, fd)
            continue
        try:
            walker.out.entries[path] = _entry(os.fstat(fd))
            walker.tree(fd, path)
        finally:
            os.close(fd)
    return walker.out
