"""Adapter: the target container's root through procfs, resolved with openat2
(`libs.rootfs`, shared with fimd's file reader).

Every lookup goes through ``openat2(rootfd, path, RESOLVE_IN_ROOT)`` where ``rootfd`` is
``<proc_root>/<pid>/root``: absolute symlinks, ``..`` chains and symlinked parents are
resolved with the container's root as "/", so no lookup can ever reach a host path. Watches
are added on the resolved descriptor (``/proc/self/fd/N``), never on a path string that the
kernel would resolve again in fimnotify's own root.
"""

from __future__ import annotations

import errno
import os
import stat

import attrs
from inotify_simple import INotify

from libs.rootfs.openat2 import (
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    openat2,
    readlink_fd,
)
from services.fimnotify.tree import Lookup, NodeKind


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
