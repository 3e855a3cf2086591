"""The watch tree: the functional core of fimnotify (no I/O of its own).

`Core` decides which directories to watch and which records to emit; all I/O goes
through a `Port` (real: `procfs.RootFs`; tests: an in-memory fake). Paths are bytes:
canonical ("real") paths are symlink-free paths inside the container root, used to add
watches; logical paths are what events report (the configured path plus the names below).

Semantics (the FimWatcher subject fields):

* **Paths** are resolved inside the container root component by component
  (`resolve`): symlinks are followed with the container root as "/", ``..`` never goes
  above it. A directory is watched itself; a file is watched through its (canonical)
  parent directory, filtered on its name, so an editor's atomic replace (write a
  temporary file, rename over) keeps being reported (as MOVEDTO, then later events).
  Every directory holding a symlink that was followed is watched for that name: when a
  symlink is re-pointed (a ConfigMap ``..data`` swap) the path is resolved again and a
  synthetic CREATE of the path is reported. A path that does not exist yet is watched
  through its nearest existing ancestor and armed when it appears (the real CREATE or
  MOVEDTO is reported; if intermediate directories appeared instead, a synthetic CREATE).
* **recursive / maxDepth**: the configured directory is depth 0; a subdirectory at depth
  d is watched iff ``recursive`` and (``max_depth == 0`` or ``d <= max_depth``). Events
  are reported for every entry of a watched directory, so with max_depth=1 a file
  ``p/a/f`` is reported, ``p/a/b/f`` is not. Self events (DELETESELF, MOVESELF, OPEN of
  the directory itself, ...) are reported for the configured path only; for
  subdirectories their parent's entry event covers them (no duplicates).
* **Race scan**: right after a watch is added on a newly created directory it is listed
  and a synthetic CREATE (flag set on the wire) is emitted for every entry, recursing into
  subdirectories that are watched. An entry created right after the watch was added may be
  reported twice (real and synthetic), never missed.
* **ignore**: fnmatch globs on one path component below the configured path. Ignored
  directories are never watched (no cost); events on ignored names are dropped.
* **onlyDir**: a configured path is watched only if it is a directory; a non-directory
  yields one ENOTDIR error record and is armed again if it is replaced by a directory.
* **followMove**: a renamed watched directory keeps its watches and events are reported
  under its new path when the rename is observed (inside the watched tree, or for the
  configured directory within its parent directory, which is then watched for renames).
  Without followMove, a renamed configured directory stops being watched and the
  configured path is armed again (watched again if something appears there); a renamed
  subdirectory of a recursive tree is dropped and watched anew under its new name.
* **Directory cap**: one watch holds at most `max_dirs` directories of its trees; a
  directory beyond is not watched (nor anything below it) and counted in `limited`; the first
  one of each arm or rescan is reported as an EDIRCAP error record naming it, so one hostile
  tree costs a bounded number of kernel watches and bytes.
* **A racing directory**: a configured directory that vanishes between being resolved and
  being watched is resolved again, up to 3 times; after that it is reported as one EVANISHED
  error record and its parent is watched for it to be created again.
* **Overflow**: the shell calls `rescan`: every path is resolved and walked again
  (watches on unchanged inodes are kept), watches no longer needed are removed.

A `Core` is one watch of an engine: every record it emits carries its `watch` number. Several
cores of one engine may hold the same kernel watch (same inode, e.g. two FimWatchers on one
container path); the shell fans each event out to every core holding its descriptor, and
each core reports only what its own roles ask for.
"""

from __future__ import annotations

import enum
import errno
import fnmatch
import re
from collections.abc import Callable
from typing import Protocol

import attrs

from libs.fimnotify_api.masks import (
    IN_ACCESS,
    IN_CLOSE_NOWRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MASK_ADD,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_OPEN,
    TREE_BITS,
    mask_for,
)
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import MAX_EVENT_PATH, ErrorRecord, encode_event, encode_record

MAX_SYMLINKS = 40  # like the kernel's MAXSYMLINKS
#: Default directory cap of one watch (the engine's --max-dirs).
DEFAULT_MAX_DIRS = 10_000
ENTRY_BITS = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF


class NodeKind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    LINK = "link"
    MISSING = "missing"


@attrs.frozen
class Lookup:
    kind: NodeKind
    target: bytes = b""  # LINK: the symlink's content


class Port(Protocol):
    """The I/O the core needs, all relative to the container root."""

    def lookup(self, path: bytes) -> Lookup:
        """Kind of canonical `path`, not following a symlink in its last component."""
        ...

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        """Adds (IN_MASK_ADD) a watch on canonical directory `path`; then its entries."""
        ...

    def unwatch(self, wd: int) -> None: ...


class ResolveError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


def split(path: bytes) -> tuple[bytes, bytes]:
    """(parent, name) of a canonical path; the root's parent is itself."""
    parent, _, name = path.rpartition(b"/")
    return (parent or b"/"), name


@attrs.frozen
class Resolution:
    """Where a configured path leads inside the container root."""

    kind: NodeKind  # DIR, FILE or MISSING
    path: bytes  # canonical path; MISSING: the deepest existing directory
    missing: bytes = b""  # MISSING: the first absent component below `path`
    final: bool = False  # MISSING: `missing` is the configured path's last component
    links: tuple[tuple[bytes, bytes], ...] = ()  # (canonical dir, name) of followed symlinks


def resolve(port: Port, path: bytes) -> Resolution:
    """Resolves `path` component by component, never leaving the container root."""
    todo = [c for c in path.split(b"/") if c]
    cur: list[bytes] = []
    links: list[tuple[bytes, bytes]] = []
    hops = 0
    while todo:
        comp = todo.pop(0)
        if comp == b".":
            continue
        if comp == b"..":
            if cur:
                cur.pop()
            continue
        here = b"/" + b"/".join(cur)
        found = port.lookup(join(here, comp))
        if found.kind is NodeKind.LINK:
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ResolveError("ELOOP", f"too many symbolic links resolving {path!r}")
            links.append((here, comp))
            if found.target.startswith(b"/"):
                cur = []
            todo[:0] = [c for c in found.target.split(b"/") if c]
            continue
        if found.kind is NodeKind.MISSING or (found.kind is NodeKind.FILE and todo):
            final = found.kind is NodeKind.MISSING and not todo
            return Resolution(NodeKind.MISSING, here, comp, final, tuple(links))
        cur.append(comp)
        if found.kind is NodeKind.FILE:
            return Resolution(NodeKind.FILE, join(here, comp), links=tuple(links))
    return Resolution(NodeKind.DIR, b"/" + b"/".join(cur), links=tuple(links))


@attrs.frozen
class SubjectRule:
    """A SubjectConfig compiled for the hot path."""

    index: int
    mask: int
    recursive: bool
    max_depth: int
    only_dir: bool
    follow_move: bool
    ignore: re.Pattern[bytes] | None

    @classmethod
    def compile(cls, index: int, subject: SubjectConfig) -> SubjectRule:
        ignore = None
        if subject.ignore:
            regex = "|".join(f"(?:{fnmatch.translate(p)})" for p in subject.ignore)
            ignore = re.compile(regex.encode("utf-8", "surrogateescape"))
        return cls(
            index=index,
            mask=mask_for(subject.events),
            recursive=subject.recursive,
            max_depth=subject.max_depth,
            only_dir=subject.only_dir,
            follow_move=subject.follow_move,
            ignore=ignore,
        )

    def ignored(self, name: bytes) -> bool:
        return self.ignore is not None and self.ignore.match(name) is not None

    def descend(self, depth: int) -> bool:
        """Whether a subdirectory at `depth` (configured path = 0) is watched."""
        return self.recursive and (self.max_depth == 0 or depth <= self.max_depth)


class RoleKind(enum.Enum):
    TREE = "tree"  # a watched directory of a subject's tree
    FILE = "file"  # parent of a configured non-directory path, filtered on `name`
    ANCHOR = "anchor"  # nearest existing ancestor of a missing path, waits for `name`
    LINK = "link"  # directory of a followed symlink `name`: re-resolve when it changes
    PARENT = "parent"  # parent of a followMove directory: observes its renames


@attrs.define(eq=False)
class Role:
    kind: RoleKind
    target: int  # index into Core.targets
    path: bytes = b""  # TREE: logical dir path
    real: bytes = b""  # TREE: canonical dir path
    depth: int = 0
    name: bytes = b""
    final: bool = False  # ANCHOR: `name` is the configured path's last component
    moved: bool = False  # TREE root: a rename was observed, MOVESELF is expected
    wd: int = -1  # TREE: its watch descriptor
    dead: bool = False


@attrs.define
class Target:
    """One configured path of one subject."""

    subject: int
    path: bytes
    notdir_reported: bool = False


ANCHOR_MASK = IN_CREATE | IN_MOVED_TO | SELF_GONE | IN_ONLYDIR
LINK_MASK = ENTRY_BITS | SELF_GONE | IN_ONLYDIR
PARENT_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR
LISTING_NOISE = IN_OPEN | IN_ACCESS | IN_CLOSE_NOWRITE
DRAIN_EVERY = 512

_LIMITS = {
    errno.ENOSPC: "inotify watch limit reached (fs.inotify.max_user_watches)",
    errno.EMFILE: "open file limit reached (RLIMIT_NOFILE)",
    errno.ENFILE: "system file table full (fs.file-max)",
    errno.ENOMEM: "kernel out of memory for inotify watches",
}


class Core:
    """Watch-tree state machine: feed it inotify events, collect encoded records."""

    def __init__(
        self,
        subjects: tuple[SubjectConfig, ...],
        port: Port,
        clock: Callable[[], int],
        *,
        watch: int = 0,
        max_dirs: int = DEFAULT_MAX_DIRS,
    ) -> None:
        self.watch = watch
        self.max_dirs = max_dirs
        #: Directories left out by the cap in the current arm/rescan pass.
        self.limited = 0
        self._limit_reported = False
        self.rules = [SubjectRule.compile(i, s) for i, s in enumerate(subjects)]
        self.targets = [
            Target(i, p.encode("utf-8", "surrogateescape"))
            for i, s in enumerate(subjects)
            for p in s.paths
        ]
        self.port = port
        self.clock = clock
        self.out: list[bytes] = []  # encoded event records
        self.control: list[bytes] = []  # encoded error records (never dropped by the sink)
        self.watches: dict[int, list[Role]] = {}
        #: Per target: logical path -> TREE role (which knows its wd).
        self.trees: dict[int, dict[bytes, Role]] = {t: {} for t in range(len(self.targets))}
        self.moves: dict[int, tuple[int, bytes, bytes]] = {}  # cookie -> target, logical, real
        self._now = 0
        #: Our own directory listings cause OPEN/ACCESS/CLOSE_NOWRITE events on the listed
        #: directory (self event) and in its parent; they are swallowed up to the CLOSE.
        self.muted: dict[tuple[int, bytes], None] = {}
        #: Called by long walks so the shell can read inotify meanwhile (no overflow).
        self.drain: Callable[[], None] | None = None

    # --- queries -------------------------------------------------------------------------

    @property
    def watch_count(self) -> int:
        return len(self.watches)

    @property
    def dir_count(self) -> int:
        return sum(len(tree) for tree in self.trees.values())

    @property
    def pending_count(self) -> int:
        return sum(1 for roles in self.watches.values() for r in roles if r.kind is RoleKind.ANCHOR)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._now = self.clock()
        self.limited, self._limit_reported = 0, False
        for t in range(len(self.targets)):
            self._arm(t, appeared=False, synthetic_self=False)

    def rescan(self) -> None:
        """After an overflow: rebuild from scratch, keeping watches on unchanged inodes."""
        self._now = self.clock()
        self.limited, self._limit_reported = 0, False
        old = set(self.watches)
        for roles in self.watches.values():
            for role in roles:
                role.dead = True
        self.watches.clear()
        for tree in self.trees.values():
            tree.clear()
        self.moves.clear()
        self.muted.clear()
        for t in range(len(self.targets)):
            self._arm(t, appeared=False, synthetic_self=False)
        for wd in old - set(self.watches):
            self.port.unwatch(wd)

    def stop(self) -> None:
        for wd in list(self.watches):
            self.port.unwatch(wd)
        self.watches.clear()
        for tree in self.trees.values():
            tree.clear()

    # --- events --------------------------------------------------------------------------

    def handle(self, wd: int, mask: int, cookie: int, name: bytes, now: int) -> None:
        """One inotify event (IN_Q_OVERFLOW is the shell's business)."""
        roles = self.watches.get(wd)
        if roles is None:
            return  # a watch we already removed; its IN_IGNORED or late events
        self._now = now
        if mask & IN_IGNORED:
            self._forget(wd)
            return
        if self.muted and mask & IN_ISDIR and mask & LISTING_NOISE and (wd, name) in self.muted:
            if mask & IN_CLOSE_NOWRITE:
                del self.muted[(wd, name)]
            return
        if len(roles) == 1 and roles[0].kind is RoleKind.TREE:
            self._tree(roles[0], mask, cookie, name, None)
            return
        seen: set[tuple[int, bytes]] = set()
        for role in list(roles):
            if role.dead:
                continue
            if role.kind is RoleKind.TREE:
                self._tree(role, mask, cookie, name, seen)
            elif role.kind is RoleKind.FILE:
                self._file(role, mask, name, seen)
            elif role.kind is RoleKind.ANCHOR:
                self._anchor(role, mask, name, seen)
            elif role.kind is RoleKind.LINK:
                self._link(role, mask, name)
            else:
                self._parent(role, wd, mask, cookie, name)

    def end_batch(self) -> None:
        """After each read: moves whose MOVED_TO never came left the tree."""
        for cookie, (t, logical, _real) in list(self.moves.items()):
            del self.moves[cookie]
            if logical:
                self._drop_subtree(t, logical)

    def _emit(
        self,
        t: int,
        path: bytes,
        mask: int,
        seen: set[tuple[int, bytes]] | None,
        synthetic: bool = False,
    ) -> None:
        subject = self.targets[t].subject
        if seen is not None:
            key = (subject, path)
            if key in seen:
                return
            seen.add(key)
        if len(path) > MAX_EVENT_PATH:
            self._error(t, "ENAMETOOLONG", path, "event path longer than PATH_MAX, not reported")
            return
        self.out.append(encode_event(self._now, mask, self.watch, subject, path, synthetic))

    def _error(self, t: int | None, code: str, path: bytes, message: str) -> None:
        subject = None if t is None else self.targets[t].subject
        record = ErrorRecord(self._now, self.watch, code, subject, path, message, len(path))
        self.control.append(encode_record(record))

    def _capped(self, t: int, logical: bytes) -> bool:
        """True if the directory cap leaves `logical` out (counted; the first one reported)."""
        if self.dir_count < self.max_dirs:
            return False
        self.limited += 1
        if not self._limit_reported:
            self._limit_reported = True
            self._error(
                t,
                "EDIRCAP",
                logical,
                f"directory cap of {self.max_dirs} per watch reached: this directory and "
                "what is below it are not watched",
            )
        return True

    # --- role handlers -------------------------------------------------------------------

    def _tree(
        self, role: Role, mask: int, cookie: int, name: bytes, seen: set[tuple[int, bytes]] | None
    ) -> None:
        t = role.target
        rule = self.rules[self.targets[t].subject]
        if name:
            if rule.ignore is not None and rule.ignored(name):
                return
            child = join(role.path, name)
            if mask & rule.mask:
                self._emit(t, child, mask, seen)
            if mask & IN_ISDIR and rule.recursive and mask & (ENTRY_BITS & ~IN_DELETE):
                self._tree_dir_entry(role, rule, mask, cookie, name)
            return
        if role.depth == 0 and mask & rule.mask:
            self._emit(t, role.path, mask | IN_ISDIR, seen)
        if role.depth == 0 and mask & IN_MOVE_SELF:
            if role.moved:
                role.moved = False
            else:
                self._rearm(t, appeared=False, synthetic_self=False)

    def _tree_dir_entry(
        self, role: Role, rule: SubjectRule, mask: int, cookie: int, name: bytes
    ) -> None:
        t = role.target
        child = join(role.path, name)
        real = child if role.real is role.path else join(role.real, name)
        if mask & IN_MOVED_FROM:
            if rule.follow_move:
                self.moves[cookie] = (t, child, real)
            else:
                self._drop_subtree(t, child)
            return
        if not rule.descend(role.depth + 1):
            return
        if mask & IN_MOVED_TO and cookie in self.moves and self.moves[cookie][0] == t:
            _, old, old_real = self.moves.pop(cookie)
            self._rename_subtree(t, (old, old_real), (child, real), role.depth + 1)
            return
        parent_wd = role.wd
        self._walk(
            t, real, child, role.depth + 1, synthetic=bool(mask & IN_CREATE), parent_wd=parent_wd
        )

    def _file(self, role: Role, mask: int, name: bytes, seen: set[tuple[int, bytes]]) -> None:
        t = role.target
        if not name:
            if mask & SELF_GONE:
                self._rearm(t, appeared=False, synthetic_self=False)
            return
        if name != role.name:
            return
        rule = self.rules[self.targets[t].subject]
        if mask & rule.mask:
            self._emit(t, self.targets[t].path, mask, seen)
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            self._rearm(t, appeared=True, synthetic_self=False)

    def _anchor(self, role: Role, mask: int, name: bytes, seen: set[tuple[int, bytes]]) -> None:
        t = role.target
        if not name:
            if mask & SELF_GONE:
                self._rearm(t, appeared=False, synthetic_self=False)
            return
        if name != role.name or not mask & (IN_CREATE | IN_MOVED_TO):
            return
        if role.final:
            rule = self.rules[self.targets[t].subject]
            if mask & rule.mask:
                self._emit(t, self.targets[t].path, mask, seen)
        self._rearm(t, appeared=True, synthetic_self=not role.final)

    def _link(self, role: Role, mask: int, name: bytes) -> None:
        if (not name and mask & SELF_GONE) or (name == role.name and mask & ENTRY_BITS):
            self._rearm(role.target, appeared=True, synthetic_self=True)

    def _parent(self, role: Role, wd: int, mask: int, cookie: int, name: bytes) -> None:
        t = role.target
        if mask & IN_MOVED_FROM and name == role.name:
            self.moves[cookie] = (t, b"", b"")
            return
        if mask & IN_MOVED_TO and cookie in self.moves and self.moves[cookie][0] == t:
            self.moves.pop(cookie)
            root = self._root_role(t)
            if root is None:
                return
            parent_real = split(root.real)[0]
            new_real = join(parent_real, name)
            root.moved = True
            self._rename_subtree(t, (root.path, root.real), (new_real, new_real), 0)
            role.name = name

    # --- arming --------------------------------------------------------------------------

    def _rearm(self, t: int, appeared: bool, synthetic_self: bool, attempts: int = 3) -> None:
        self._teardown(t)
        self._arm(t, appeared, synthetic_self, attempts)

    def _teardown(self, t: int) -> None:
        for wd, roles in list(self.watches.items()):
            keep = [r for r in roles if r.target != t]
            if len(keep) == len(roles):
                continue
            for role in roles:
                if role.target == t:
                    role.dead = True
                    if role.kind is RoleKind.TREE:
                        self.trees[t].pop(role.path, None)
            self._set_roles(wd, keep)

    def _set_roles(self, wd: int, roles: list[Role]) -> None:
        if roles:
            self.watches[wd] = roles
        else:
            del self.watches[wd]
            self.port.unwatch(wd)

    def _arm(self, t: int, appeared: bool, synthetic_self: bool, attempts: int = 3) -> None:
        target = self.targets[t]
        rule = self.rules[target.subject]
        try:
            res = resolve(self.port, target.path)
        except ResolveError as exc:
            self._error(t, exc.code, target.path, str(exc))
            return
        except OSError as exc:
            self._os_error(t, target.path, exc)
            return
        for directory, name in res.links:
            self._add_role(directory, LINK_MASK, Role(RoleKind.LINK, t, name=name))
        if res.kind is NodeKind.DIR:
            self._arm_dir(
                t, res, appeared=appeared, synthetic_self=synthetic_self, attempts=attempts
            )
        elif res.kind is NodeKind.FILE and not rule.only_dir:
            parent, name = split(res.path)
            mask = rule.mask | ENTRY_BITS | SELF_GONE | IN_ONLYDIR
            self._add_role(parent, mask, Role(RoleKind.FILE, t, name=name))
            if synthetic_self and rule.mask & IN_CREATE:
                self._emit(t, target.path, IN_CREATE, None, synthetic=True)
        elif res.kind is NodeKind.FILE:
            if not target.notdir_reported:
                target.notdir_reported = True
                self._error(t, "ENOTDIR", target.path, "onlyDir: not a directory, not watched")
            parent, name = split(res.path)
            self._add_role(parent, ANCHOR_MASK, Role(RoleKind.ANCHOR, t, name=name))
        else:
            self._add_role(
                res.path, ANCHOR_MASK, Role(RoleKind.ANCHOR, t, name=res.missing, final=res.final)
            )

    def _arm_dir(
        self, t: int, res: Resolution, *, appeared: bool, synthetic_self: bool, attempts: int
    ) -> None:
        target = self.targets[t]
        rule = self.rules[target.subject]
        if rule.follow_move and res.path != b"/":
            parent, name = split(res.path)
            self._add_role(parent, PARENT_MASK, Role(RoleKind.PARENT, t, name=name))
        if synthetic_self and rule.mask & IN_CREATE:
            self._emit(t, target.path, IN_CREATE | IN_ISDIR, None, synthetic=True)
        logical = res.path if res.path == target.path else target.path  # one object: less RSS
        if self._walk(t, res.path, logical, 0, synthetic=appeared):
            return
        if attempts > 0:  # vanished between resolve and watch: resolve again (bounded)
            self._rearm(t, appeared, synthetic_self=False, attempts=attempts - 1)
            return
        # It vanished every time (a container racing us): say so, and wait for it to come back.
        message = "vanished each time it was watched; not watched until it is created again"
        self._error(t, "EVANISHED", target.path, message)
        parent, name = split(res.path)
        final = res.path == target.path
        self._add_role(parent, ANCHOR_MASK, Role(RoleKind.ANCHOR, t, name=name, final=final))

    def _add_role(self, path: bytes, mask: int, role: Role) -> int | None:
        try:
            wd, _ = self.port.watch_dir(path, mask | IN_MASK_ADD, listing=False)
        except OSError as exc:
            self._os_error(role.target, path, exc)
            return None
        self.watches.setdefault(wd, []).append(role)
        return wd

    def _walk(
        self,
        t: int,
        real: bytes,
        logical: bytes,
        depth: int,
        *,
        synthetic: bool,
        parent_wd: int = -1,
    ) -> bool:
        """Watches a directory and, as the rule says, its subtree; False if it vanished."""
        rule = self.rules[self.targets[t].subject]
        mask = rule.mask | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD
        noisy = bool(rule.mask & LISTING_NOISE)
        if noisy:
            mask |= IN_CLOSE_NOWRITE  # always see the CLOSE that ends a muted listing
        want_create = synthetic and bool(rule.mask & IN_CREATE)
        stack: list[tuple[bytes, bytes, int, int]] = [(real, logical, depth, parent_wd)]
        count = 0
        while stack:
            real, logical, depth, parent_wd = stack.pop()
            listing = synthetic or rule.descend(depth + 1)
            count += 1
            if self.drain is not None and count % DRAIN_EVERY == 0:
                self.drain()
            if self._capped(t, logical):
                continue
            try:
                wd, entries = self.port.watch_dir(real, mask, listing)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    self._os_error(t, logical, exc)
                    if exc.errno in _LIMITS:
                        return True  # every further watch would fail too; reported once
                elif depth == 0 and logical == self.targets[t].path:
                    return False
                continue  # gone again: its parent reports the entry events
            role = Role(RoleKind.TREE, t, path=logical, real=real, depth=depth, wd=wd)
            self.watches.setdefault(wd, []).append(role)
            self.trees[t][logical] = role
            if listing and noisy:
                self.muted[(wd, b"")] = None
                if parent_wd >= 0:
                    self.muted[(parent_wd, split(real)[1])] = None
            for name, is_dir in entries:
                if rule.ignore is None or not rule.ignored(name):
                    self._entry(t, (real, logical, depth, wd), (name, is_dir), want_create, stack)
        return True

    def _entry(
        self,
        t: int,
        parent: tuple[bytes, bytes, int, int],
        entry: tuple[bytes, bool],
        want_create: bool,
        stack: list[tuple[bytes, bytes, int, int]],
    ) -> None:
        """One listed entry: synthetic CREATE (race scan) and/or a subdirectory to walk."""
        real, logical, depth, wd = parent
        name, is_dir = entry
        child = join(logical, name)
        real_child = child if real is logical else join(real, name)  # share: saves memory
        if want_create:
            self._emit(t, child, IN_CREATE | (IN_ISDIR if is_dir else 0), None, True)
        if is_dir and self.rules[self.targets[t].subject].descend(depth + 1):
            stack.append((real_child, child, depth + 1, wd))

    def _os_error(self, t: int | None, path: bytes, exc: OSError) -> None:
        code = errno.errorcode.get(exc.errno or 0, "EIO")
        self._error(t, code, path, _LIMITS.get(exc.errno or 0, exc.strerror or str(exc)))

    # --- subtrees ------------------------------------------------------------------------

    def _root_role(self, t: int) -> Role | None:
        for role in self.trees[t].values():
            if role.depth == 0:
                return role
        return None

    def _subtree(self, t: int, logical: bytes) -> list[Role]:
        prefix = logical + b"/"
        return [
            role
            for path, role in self.trees[t].items()
            if path == logical or path.startswith(prefix)
        ]

    def _drop_subtree(self, t: int, logical: bytes) -> None:
        for role in self._subtree(t, logical):
            role.dead = True
            self.trees[t].pop(role.path, None)
            roles = self.watches.get(role.wd)
            if roles is not None:
                self._set_roles(role.wd, [r for r in roles if r is not role])

    def _rename_subtree(
        self, t: int, old_paths: tuple[bytes, bytes], new_paths: tuple[bytes, bytes], depth: int
    ) -> None:
        """Moves a watched subtree's (logical, real) paths after an observed rename."""
        (old, old_real), (new, new_real) = old_paths, new_paths
        entries = self._subtree(t, old)
        rule = self.rules[self.targets[t].subject]
        if not entries:
            self._walk(t, new_real, new, depth, synthetic=False)
            return
        shift = depth - min(role.depth for role in entries)
        if shift and rule.max_depth:
            self._drop_subtree(t, old)  # depth limits change: watch the new place afresh
            self._walk(t, new_real, new, depth, synthetic=False)
            return
        for role in entries:
            del self.trees[t][role.path]
        for role in entries:
            role.path = new + role.path[len(old) :]
            role.real = new_real + role.real[len(old_real) :]
            role.depth += shift
            self.trees[t][role.path] = role

    def _forget(self, wd: int) -> None:
        roles = self.watches.pop(wd)
        rearm: set[int] = set()
        for role in roles:
            if role.dead:
                continue
            role.dead = True
            if role.kind is RoleKind.TREE:
                self.trees[role.target].pop(role.path, None)
                if role.depth == 0:
                    rearm.add(role.target)
            elif role.kind is not RoleKind.PARENT:
                rearm.add(role.target)
        for t in sorted(rearm):
            self._rearm(t, appeared=False, synthetic_self=False)
