"""The watch-tree core against an in-memory filesystem (no inotify, no procfs)."""

from __future__ import annotations

import errno

import pytest

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.masks import (
    IN_ATTRIB,
    IN_CLOSE_NOWRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MASK_ADD,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_OPEN,
    TREE_BITS,
)
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import MAX_EVENT_PATH, ErrorRecord, EventRecord, decode
from services.fimnotify.tree import (
    ANCHOR_MASK,
    DRAIN_EVERY,
    ENTRY_BITS,
    LINK_MASK,
    MAX_SYMLINKS,
    PARENT_MASK,
    SELF_GONE,
    Core,
    Lookup,
    NodeKind,
    Resolution,
    ResolveError,
    SubjectRule,
    join,
    resolve,
)


class FakeFs:
    """Paths -> "dir" | "file" | b"symlink target". The root always exists."""

    def __init__(self, nodes: dict[str, str | bytes]) -> None:
        self.nodes: dict[bytes, str | bytes] = {b"/": "dir"}
        for path, node in nodes.items():
            self.nodes[path.encode()] = node
        self.wds: dict[bytes, int] = {}
        self.unwatched: list[int] = []
        self.limit = 10_000

    def lookup(self, path: bytes) -> Lookup:
        node = self.nodes.get(path)
        if node is None:
            return Lookup(NodeKind.MISSING)
        if isinstance(node, bytes):
            return Lookup(NodeKind.LINK, node)
        return Lookup(NodeKind.DIR if node == "dir" else NodeKind.FILE)

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        if self.nodes.get(path) != "dir":
            raise OSError(errno.ENOENT, "gone")
        if path not in self.wds:
            if len(self.wds) >= self.limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.wds[path] = len(self.wds) + 1
        prefix = path.rstrip(b"/") + b"/"
        entries = [
            (p[len(prefix) :], n == "dir")
            for p, n in self.nodes.items()
            if p.startswith(prefix) and b"/" not in p[len(prefix) :] and p != path
        ]
        return self.wds[path], sorted(entries) if listing else []

    def unwatch(self, wd: int) -> None:
        self.unwatched.append(wd)
        self.wds = {p: w for p, w in self.wds.items() if w != wd}


def subject(*paths: str, events: tuple[str, ...] = ("all",), **kw: object) -> SubjectConfig:
    return SubjectConfig(paths=paths, events=tuple(EventName(e) for e in events), **kw)  # type: ignore[arg-type]


def core_for(fs: FakeFs, *subjects: SubjectConfig) -> Core:
    core = Core(tuple(subjects), fs, lambda: 1)
    core.start()
    return core


def records(core: Core) -> list[object]:
    out: list[object] = []
    for blob in core.out + core.control:
        out.extend(decode(b"FN\x02\x00\x00\x00\x00\x00\x01\x00" + blob))
    core.out.clear()
    core.control.clear()
    return out


def events(core: Core) -> list[tuple[bytes, int, bool]]:
    return [
        (r.path, r.mask & ~IN_ISDIR, r.synthetic)
        for r in records(core)
        if isinstance(r, EventRecord)
    ]


# --- resolve -----------------------------------------------------------------------------


def test_resolve_follows_symlinks_inside_the_root() -> None:
    fs = FakeFs({"/etc": "dir", "/data": "dir", "/data/abs": b"/etc", "/data/rel": b"../etc"})
    assert resolve(fs, b"/data/abs").path == b"/etc"
    assert resolve(fs, b"/data/rel").path == b"/etc"
    res = resolve(fs, b"/data/abs")
    assert res.links == ((b"/data", b"abs"),)


def test_dotdot_chains_are_clamped_at_the_container_root() -> None:
    fs = FakeFs({"/etc": "dir", "/a": "dir", "/a/up": b"../../../../etc"})
    assert resolve(fs, b"/../../../etc").path == b"/etc"
    assert resolve(fs, b"/a/up").path == b"/etc"


def test_missing_path_anchors_at_nearest_existing_ancestor() -> None:
    fs = FakeFs({"/data": "dir"})
    res = resolve(fs, b"/data/a/b")
    assert (res.kind, res.path, res.missing, res.final) == (NodeKind.MISSING, b"/data", b"a", False)
    res = resolve(fs, b"/data/a")
    assert res.final


def test_symlink_loop_is_an_error() -> None:
    fs = FakeFs({"/a": b"/b", "/b": b"/a"})
    with pytest.raises(ResolveError) as info:
        resolve(fs, b"/a")
    assert info.value.code == "ELOOP"


# --- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_depth", "depth", "watched"),
    [(0, 1, True), (0, 50, True), (1, 1, True), (1, 2, False), (3, 3, True), (3, 4, False)],
)
def test_max_depth_semantics(max_depth: int, depth: int, watched: bool) -> None:
    rule = SubjectRule.compile(0, subject("/d", recursive=True, max_depth=max_depth))
    assert rule.descend(depth) is watched


def test_ignore_globs_match_one_component() -> None:
    rule = SubjectRule.compile(0, subject("/d", ignore=(".git", "*.swp", "tmp?")))
    assert rule.ignored(b".git")
    assert rule.ignored(b"x.swp")
    assert rule.ignored(b"tmp1")
    assert not rule.ignored(b"git")
    assert not rule.ignored(b"tmp12")


def test_join() -> None:
    assert join(b"/", b"a") == b"/a"
    assert join(b"/a", b"b") == b"/a/b"


# --- core --------------------------------------------------------------------------------


def test_recursive_walk_honours_depth_and_ignore() -> None:
    fs = FakeFs(
        {
            "/d": "dir",
            "/d/a": "dir",
            "/d/a/b": "dir",
            "/d/.git": "dir",
            "/d/f": "file",
        }
    )
    core = core_for(fs, subject("/d", recursive=True, max_depth=1, ignore=(".git",)))
    assert set(fs.wds) == {b"/d", b"/d/a"}
    assert core.watch_count == 2


def test_new_directory_race_scan_emits_synthetic_creates() -> None:
    fs = FakeFs({"/d": "dir"})
    core = core_for(fs, subject("/d", events=("create",), recursive=True))
    fs.nodes.update({b"/d/n": "dir", b"/d/n/m": "dir", b"/d/n/m/f": "file"})
    core.handle(fs.wds[b"/d"], IN_CREATE | IN_ISDIR, 0, b"n", 2)
    assert events(core) == [
        (b"/d/n", IN_CREATE, False),
        (b"/d/n/m", IN_CREATE, True),
        (b"/d/n/m/f", IN_CREATE, True),
    ]
    assert {b"/d/n", b"/d/n/m"} <= set(fs.wds)


def test_own_listing_noise_is_swallowed() -> None:
    fs = FakeFs({"/d": "dir"})
    core = core_for(fs, subject("/d", events=("open", "create", "closenowrite"), recursive=True))
    fs.nodes[b"/d/n"] = "dir"
    parent = fs.wds[b"/d"]
    core.handle(parent, IN_CREATE | IN_ISDIR, 0, b"n", 2)
    child = fs.wds[b"/d/n"]
    for wd, name in ((parent, b"n"), (child, b"")):
        core.handle(wd, IN_OPEN | IN_ISDIR, 0, name, 2)
        core.handle(wd, IN_CLOSE_NOWRITE | IN_ISDIR, 0, name, 2)
    assert events(core) == [(b"/d/n", IN_CREATE, False)]
    core.handle(parent, IN_OPEN | IN_ISDIR, 0, b"n", 3)  # the container's own open
    assert events(core) == [(b"/d/n", IN_OPEN, False)]


def test_file_path_is_watched_through_its_parent_and_filtered() -> None:
    fs = FakeFs({"/etc": "dir", "/etc/app.conf": "file"})
    core = core_for(fs, subject("/etc/app.conf", events=("modify", "movedto")))
    wd = fs.wds[b"/etc"]
    core.handle(wd, IN_MODIFY, 0, b"other", 2)
    core.handle(wd, IN_MOVED_TO, 7, b"app.conf", 2)
    core.handle(wd, IN_MODIFY, 0, b"app.conf", 2)
    assert events(core) == [
        (b"/etc/app.conf", IN_MOVED_TO, False),
        (b"/etc/app.conf", IN_MODIFY, False),
    ]


def test_missing_path_is_armed_when_created() -> None:
    fs = FakeFs({"/data": "dir"})
    core = core_for(fs, subject("/data/x", events=("create",)))
    assert core.pending_count == 1
    fs.nodes[b"/data/x"] = "dir"
    core.handle(fs.wds[b"/data"], IN_CREATE | IN_ISDIR, 0, b"x", 2)
    assert events(core) == [(b"/data/x", IN_CREATE, False)]
    assert core.pending_count == 0
    assert b"/data/x" in fs.wds


def test_deleted_root_is_armed_again() -> None:
    fs = FakeFs({"/data": "dir", "/data/x": "dir"})
    core = core_for(fs, subject("/data/x", events=("deleteself",)))
    wd = fs.wds[b"/data/x"]
    del fs.nodes[b"/data/x"]
    core.handle(wd, IN_DELETE_SELF, 0, b"", 2)
    core.handle(wd, IN_IGNORED, 0, b"", 2)
    assert events(core) == [(b"/data/x", IN_DELETE_SELF, False)]
    assert core.pending_count == 1


def test_follow_move_renames_subtree_paths() -> None:
    fs = FakeFs({"/d": "dir", "/d/a": "dir", "/d/a/b": "dir"})
    core = core_for(fs, subject("/d", events=("create",), recursive=True, follow_move=True))
    wd_b = fs.wds[b"/d/a/b"]
    core.handle(fs.wds[b"/d"], IN_MOVED_FROM | IN_ISDIR, 9, b"a", 2)
    core.handle(fs.wds[b"/d"], IN_MOVED_TO | IN_ISDIR, 9, b"z", 2)
    core.end_batch()
    core.handle(wd_b, IN_CREATE, 0, b"f", 3)
    assert events(core) == [(b"/d/z/b/f", IN_CREATE, False)]
    assert fs.unwatched == []


def test_move_out_without_follow_drops_the_subtree() -> None:
    fs = FakeFs({"/d": "dir", "/d/a": "dir", "/d/a/b": "dir"})
    core = core_for(fs, subject("/d", events=("create",), recursive=True))
    core.handle(fs.wds[b"/d"], IN_MOVED_FROM | IN_ISDIR, 9, b"a", 2)
    core.end_batch()
    assert len(fs.unwatched) == 2
    assert core.watch_count == 1


def test_watch_limit_is_reported_once_per_walk() -> None:
    fs = FakeFs({"/d": "dir", **{f"/d/s{i}": "dir" for i in range(10)}})
    fs.limit = 3
    core = core_for(fs, subject("/d", recursive=True))
    errors = [r for r in records(core) if isinstance(r, ErrorRecord)]
    assert [(e.code, e.subject) for e in errors] == [("ENOSPC", 0)]
    assert "max_user_watches" in errors[0].message
    assert core.watch_count == 3


# --- watch numbers and the directory cap ---------------------------------------------------


def capped_core(fs: FakeFs, max_dirs: int, *subjects: SubjectConfig, watch: int = 7) -> Core:
    core = Core(tuple(subjects), fs, lambda: 1, watch=watch, max_dirs=max_dirs)
    core.start()
    return core


def test_every_record_carries_the_watch_number() -> None:
    fs = FakeFs({"/d": "dir", "/e": "file"})
    core = capped_core(
        fs, 10, subject("/d", events=("create",)), subject("/e", only_dir=True), watch=42
    )
    core.handle(fs.wds[b"/d"], IN_CREATE, 0, b"f", 2)
    out = records(core)
    assert {type(r) for r in out} == {EventRecord, ErrorRecord}
    assert {r.watch for r in out if isinstance(r, EventRecord | ErrorRecord)} == {42}


def test_directory_cap_watches_exactly_max_dirs_and_names_the_first_left_out() -> None:
    fs = FakeFs(
        {
            "/d": "dir",
            **{f"/d/{n}": "dir" for n in "abc"},
            **{f"/d/{n}/x": "dir" for n in "abc"},
            "/d/f": "file",
        }
    )
    core = capped_core(fs, 2, subject("/d", recursive=True))
    # Depth first, last entry first: /d, /d/c are watched; /d/c/x is the first left out.
    assert set(fs.wds) == {b"/d", b"/d/c"}
    assert (core.watch_count, core.dir_count) == (2, 2)
    errors = [r for r in records(core) if isinstance(r, ErrorRecord)]
    assert [(e.code, e.watch, e.subject, e.path) for e in errors] == [("EDIRCAP", 7, 0, b"/d/c/x")]
    assert errors[0].message == (
        "directory cap of 2 per watch reached: this directory and what is below it are not watched"
    )
    assert core.limited == 3  # /d/c/x, /d/b, /d/a; what is below them is never visited


def test_directory_cap_is_per_watch_across_its_subjects() -> None:
    fs = FakeFs({"/a": "dir", "/a/s": "dir", "/b": "dir", "/etc": "dir", "/etc/app.conf": "file"})
    core = capped_core(
        fs,
        2,
        subject("/a", recursive=True),
        subject("/etc/app.conf"),  # a file's parent is not a tree directory: not counted
        subject("/b"),
    )
    assert set(fs.wds) == {b"/a", b"/a/s", b"/etc"}
    errors = [r for r in records(core) if isinstance(r, ErrorRecord)]
    assert [(e.code, e.subject, e.path) for e in errors] == [("EDIRCAP", 2, b"/b")]
    assert core.limited == 1
    other = capped_core(FakeFs({"/b": "dir"}), 2, subject("/b"), watch=8)
    assert (other.watch_count, other.limited) == (1, 0)  # another watch has its own cap


def test_directories_created_beyond_the_cap_are_counted_not_watched() -> None:
    fs = FakeFs({"/d": "dir", "/d/a": "dir", "/d/b": "dir"})
    core = capped_core(fs, 2, subject("/d", events=("create",), recursive=True))
    assert [r.code for r in records(core) if isinstance(r, ErrorRecord)] == ["EDIRCAP"]
    assert core.limited == 1
    fs.nodes[b"/d/n"] = "dir"
    core.handle(fs.wds[b"/d"], IN_CREATE | IN_ISDIR, 0, b"n", 2)
    assert records(core) == [EventRecord(2, IN_CREATE | IN_ISDIR, 7, 0, b"/d/n")]  # one error
    assert b"/d/n" not in fs.wds
    assert core.limited == 2
    # Room again once a watched directory is gone.
    watched = next(p for p in (b"/d/a", b"/d/b") if p in fs.wds)
    wd = fs.wds.pop(watched)
    del fs.nodes[watched]
    core.handle(wd, IN_DELETE_SELF, 0, b"", 3)
    core.handle(wd, IN_IGNORED, 0, b"", 3)
    fs.nodes[b"/d/m"] = "dir"
    core.handle(fs.wds[b"/d"], IN_CREATE | IN_ISDIR, 0, b"m", 4)
    assert b"/d/m" in fs.wds
    assert core.dir_count == 2


def test_rescan_reports_the_cap_again_once() -> None:
    fs = FakeFs({"/d": "dir", **{f"/d/s{i}": "dir" for i in range(5)}})
    core = capped_core(fs, 3, subject("/d", recursive=True))
    assert core.limited == 3
    records(core)
    core.rescan()
    errors = [r for r in records(core) if isinstance(r, ErrorRecord)]
    assert [e.code for e in errors] == ["EDIRCAP"]
    assert (core.limited, core.dir_count, len(fs.wds)) == (3, 3, 3)
    assert fs.unwatched == []  # unchanged directories keep their watches


def test_cap_of_one_leaves_every_subdirectory_out() -> None:
    fs = FakeFs({"/d": "dir", "/d/s": "dir", "/d/s/t": "dir"})
    core = capped_core(fs, 1, subject("/d", events=("create",), recursive=True))
    assert set(fs.wds) == {b"/d"}
    assert core.limited == 1
    core.handle(fs.wds[b"/d"], IN_CREATE, 0, b"f", 2)
    assert events(core) == [(b"/d/f", IN_CREATE, False)]


# --- exact kernel masks, roles and records (what the engine would ask inotify for) -------


class MaskFs(FakeFs):
    """FakeFs that records every watch_dir call: (path, mask, listing)."""

    def __init__(self, nodes: dict[str, str | bytes]) -> None:
        super().__init__(nodes)
        self.calls: list[tuple[bytes, int, bool]] = []

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        self.calls.append((path, mask, listing))
        return super().watch_dir(path, mask, listing)


def _mask(config: SubjectConfig) -> int:
    return SubjectRule.compile(0, config).mask


def _roles(core: Core) -> list[tuple[str, int, bytes]]:
    return sorted((r.kind.name, r.target, r.name) for roles in core.watches.values() for r in roles)


def test_a_file_is_watched_through_its_parent_with_exactly_these_bits() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    config = subject("/data/f", events=("modify",))
    core = core_for(fs, config)
    bits = _mask(config) | ENTRY_BITS | SELF_GONE | IN_ONLYDIR | IN_MASK_ADD
    assert fs.calls == [(b"/data", bits, False)]
    assert _roles(core) == [("FILE", 0, b"f")]
    assert records(core) == []


def test_a_file_under_only_dir_is_reported_once_and_anchored() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    core = core_for(fs, subject("/data/f", events=("create",), only_dir=True))
    assert fs.calls == [(b"/data", ANCHOR_MASK | IN_MASK_ADD, False)]
    assert _roles(core) == [("ANCHOR", 0, b"f")]
    (error,) = records(core)
    assert isinstance(error, ErrorRecord)
    assert (error.watch, error.subject, error.code, error.path, error.message) == (
        0, 0, "ENOTDIR", b"/data/f", "onlyDir: not a directory, not watched",
    )  # fmt: skip
    core.rescan()
    assert [r for r in records(core) if isinstance(r, ErrorRecord)] == []  # once


def test_a_directory_is_watched_with_tree_bits_and_listed_only_to_descend() -> None:
    fs = MaskFs({"/data": "dir", "/data/sub": "dir"})
    plain = subject("/data", events=("modify",))
    core_for(fs, plain)
    assert fs.calls == [(b"/data", _mask(plain) | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD, False)]
    fs = MaskFs({"/data": "dir", "/data/sub": "dir"})
    deep = subject("/data", events=("open",), recursive=True)
    core = core_for(fs, deep)
    bits = _mask(deep) | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD | IN_CLOSE_NOWRITE
    assert sorted(fs.calls) == [(b"/data", bits, True), (b"/data/sub", bits, True)]
    assert sorted(r.path for roles in core.watches.values() for r in roles) == [
        b"/data",
        b"/data/sub",
    ]


def test_follow_move_watches_the_parent_for_renames() -> None:
    fs = MaskFs({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data/d", events=("create",), follow_move=True))
    assert fs.calls[0] == (b"/data", PARENT_MASK | IN_MASK_ADD, False)
    assert ("PARENT", 0, b"d") in _roles(core)


def test_a_missing_path_is_anchored_at_its_deepest_existing_directory() -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data/a/b", events=("create",)))
    assert fs.calls == [(b"/data", ANCHOR_MASK | IN_MASK_ADD, False)]
    assert _roles(core) == [("ANCHOR", 0, b"a")]
    assert records(core) == []


def test_a_followed_symlink_is_watched_for_changes_of_the_link() -> None:
    fs = MaskFs({"/etc": "dir", "/data": "dir", "/data/conf": b"/etc"})
    core = core_for(fs, subject("/data/conf", events=("create",)))
    assert fs.calls[0] == (b"/data", LINK_MASK | IN_MASK_ADD, False)
    assert ("LINK", 0, b"conf") in _roles(core)
    assert (b"/etc", b"") in {(p, b"") for p, _, _ in fs.calls}


def test_a_path_that_appears_gets_exactly_one_synthetic_create() -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data/new", events=("create",), recursive=True))
    fs.nodes[b"/data/new"] = "dir"
    fs.nodes[b"/data/new/inner"] = "file"
    wd = fs.wds[b"/data"]
    core.handle(wd, IN_CREATE | IN_ISDIR, 0, b"new", 5)
    core.end_batch()
    got = [r for r in records(core) if isinstance(r, EventRecord)]
    assert [(r.path, r.mask, r.synthetic, r.time_ns) for r in got] == [
        (b"/data/new", IN_CREATE | IN_ISDIR, False, 5),
        (b"/data/new/inner", IN_CREATE, True, 5),
    ]


def _seen(core: Core) -> list[tuple[int, bytes, int]]:
    return [(r.subject, r.path, r.mask) for r in records(core) if isinstance(r, EventRecord)]


def test_one_directory_serving_every_kind_of_role_routes_each_event_to_each() -> None:
    fs = MaskFs(
        {"/data": "dir", "/data/f": "file", "/data/d": "dir", "/etc": "dir", "/data/link": b"/etc"}
    )
    core = core_for(
        fs,
        subject("/data", events=("all",)),
        subject("/data/f", events=("modify",)),
        subject("/data/new", events=("create",)),
        subject("/data/d", events=("create",), follow_move=True),
        subject("/data/link", events=("create",)),
    )
    assert records(core) == []
    data = fs.wds[b"/data"]
    assert sorted((r.kind.name, r.target) for r in core.watches[data]) == [
        ("ANCHOR", 2), ("FILE", 1), ("LINK", 4), ("PARENT", 3), ("TREE", 0),
    ]  # fmt: skip
    core.handle(data, IN_MODIFY, 0, b"f", 10)
    core.end_batch()
    assert _seen(core) == [(0, b"/data/f", IN_MODIFY), (1, b"/data/f", IN_MODIFY)]
    # A rename of the followed directory: the tree reports it, the followed watch follows.
    d = fs.wds[b"/data/d"]
    fs.nodes[b"/data/d2"] = fs.nodes.pop(b"/data/d")
    core.handle(data, IN_MOVED_FROM | IN_ISDIR, 7, b"d", 11)
    core.handle(data, IN_MOVED_TO | IN_ISDIR, 7, b"d2", 11)
    core.end_batch()
    assert _seen(core) == [
        (0, b"/data/d", IN_MOVED_FROM | IN_ISDIR),
        (0, b"/data/d2", IN_MOVED_TO | IN_ISDIR),
    ]
    core.handle(d, IN_CREATE, 0, b"x", 12)
    core.end_batch()
    assert _seen(core) == [(3, b"/data/d2/x", IN_CREATE)]
    # The missing path appears: its subject reports it, as does the tree.
    fs.nodes[b"/data/new"] = "file"
    core.handle(data, IN_CREATE, 0, b"new", 13)
    core.end_batch()
    assert _seen(core) == [(0, b"/data/new", IN_CREATE), (2, b"/data/new", IN_CREATE)]
    # The symlink is pointed elsewhere: its new target is watched under the link's path.
    fs.nodes[b"/etc2"] = "dir"
    fs.nodes[b"/data/link"] = b"/etc2"
    core.handle(data, IN_CREATE, 0, b"link", 14)
    core.end_batch()
    assert (4, b"/data/link", IN_CREATE | IN_ISDIR) in _seen(core)
    core.handle(fs.wds[b"/etc2"], IN_CREATE, 0, b"y", 15)
    core.end_batch()
    assert _seen(core) == [(4, b"/data/link/y", IN_CREATE)]


def _kinds(core: Core) -> list[tuple[str, int, bytes, int, bool]]:
    return [
        (type(r).__name__, r.subject or 0, r.path, r.mask, r.synthetic)
        if isinstance(r, EventRecord)
        else (type(r).__name__, 0, r.path, 0, False)
        for r in records(core)
        if isinstance(r, EventRecord | ErrorRecord)
    ]


def test_an_event_path_beyond_the_wire_limit_is_an_error_not_an_event() -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data", events=("create",)))
    data = fs.wds[b"/data"]
    fits = b"a" * (MAX_EVENT_PATH - len(b"/data/"))
    core.handle(data, IN_CREATE, 0, fits, 1)
    core.handle(data, IN_CREATE, 0, fits + b"b", 1)
    core.end_batch()
    event, error = records(core)
    assert isinstance(event, EventRecord)
    assert (event.path, event.mask) == (b"/data/" + fits, IN_CREATE)
    assert len(event.path) == MAX_EVENT_PATH
    assert isinstance(error, ErrorRecord)
    assert (error.watch, error.subject, error.code, error.message) == (
        0, 0, "ENAMETOOLONG", "event path longer than PATH_MAX, not reported",
    )  # fmt: skip
    assert error.path_size == MAX_EVENT_PATH + 1


def test_a_watched_file_replaced_by_a_directory_is_watched_as_one() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    core = core_for(fs, subject("/data/f", events=("create", "modify")))
    data = fs.wds[b"/data"]
    core.handle(data, IN_CREATE, 0, b"other", 2)  # another name: not ours
    core.end_batch()
    assert records(core) == []
    fs.nodes[b"/data/f"] = "dir"
    fs.nodes[b"/data/f/in"] = "file"
    fs.calls.clear()
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"f", 3)
    core.end_batch()
    assert _kinds(core) == [
        ("EventRecord", 0, b"/data/f", IN_CREATE | IN_ISDIR, False),
        ("EventRecord", 0, b"/data/f/in", IN_CREATE, True),  # it already held a file
    ]
    rule = SubjectRule.compile(0, subject("/data/f", events=("create", "modify")))
    assert fs.calls == [(b"/data/f", rule.mask | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD, True)]
    assert _roles(core) == [("TREE", 0, b"")]


def test_a_watched_file_whose_directory_goes_is_anchored_higher_up() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    core = core_for(fs, subject("/data/f", events=("modify",)))
    data = fs.wds[b"/data"]
    del fs.nodes[b"/data/f"], fs.nodes[b"/data"]
    fs.calls.clear()
    core.handle(data, IN_DELETE_SELF, 0, b"", 4)
    core.end_batch()
    assert records(core) == []
    assert fs.calls == [(b"/", ANCHOR_MASK | IN_MASK_ADD, False)]
    assert _roles(core) == [("ANCHOR", 0, b"data")]


def test_a_missing_path_is_followed_down_as_its_components_appear() -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data/a/b", events=("create",)))
    data = fs.wds[b"/data"]
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"zz", 5)  # not the missing component
    core.handle(data, IN_DELETE, 0, b"a", 5)  # not a creation
    core.end_batch()
    assert (records(core), _roles(core)) == ([], [("ANCHOR", 0, b"a")])
    fs.nodes[b"/data/a"] = "dir"
    fs.calls.clear()
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"a", 6)
    core.end_batch()
    assert records(core) == []  # /data/a is not the watched path
    assert fs.calls == [(b"/data/a", ANCHOR_MASK | IN_MASK_ADD, False)]
    assert _roles(core) == [("ANCHOR", 0, b"b")]
    fs.nodes[b"/data/a/b"] = "dir"
    fs.calls.clear()
    core.handle(fs.wds[b"/data/a"], IN_CREATE | IN_ISDIR, 0, b"b", 7)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/a/b", IN_CREATE | IN_ISDIR, False)]
    rule = SubjectRule.compile(0, subject("/data/a/b", events=("create",)))
    assert fs.calls == [(b"/data/a/b", rule.mask | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD, True)]
    assert _roles(core) == [("TREE", 0, b"")]


def _errors(core: Core) -> list[tuple[int, int | None, str, bytes, str]]:
    return [
        (r.watch, r.subject, r.code, r.path, r.message)
        for r in records(core)
        if isinstance(r, ErrorRecord)
    ]


def test_a_path_that_cannot_be_resolved_is_an_exact_error_and_watches_nothing() -> None:
    fs = MaskFs({"/data": "dir", "/data/a": b"/data/b", "/data/b": b"/data/a"})
    core = core_for(fs, subject("/data/a/x", events=("create",)))
    assert _errors(core) == [
        (0, 0, "ELOOP", b"/data/a/x", "too many symbolic links resolving b'/data/a/x'")
    ]
    assert (fs.calls, _roles(core)) == ([], [])

    class Denied(MaskFs):
        def lookup(self, path: bytes) -> Lookup:
            if path == b"/data/secret":
                raise OSError(errno.EACCES, "Permission denied")
            return super().lookup(path)

    denied = Denied({"/data": "dir"})
    core = core_for(denied, subject("/data/secret/x", events=("create",)))
    assert _errors(core) == [(0, 0, "EACCES", b"/data/secret/x", "Permission denied")]
    assert _roles(core) == []


def test_the_watched_directory_itself_reports_and_is_followed_when_moved_away() -> None:
    fs = MaskFs({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data/d", events=("all",)))
    d = fs.wds[b"/data/d"]
    core.handle(d, IN_ATTRIB, 0, b"", 3)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/d", IN_ATTRIB | IN_ISDIR, False)]
    fs.nodes[b"/data/e"] = fs.nodes.pop(b"/data/d")
    fs.calls.clear()
    core.handle(d, IN_MOVE_SELF, 0, b"", 4)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/d", IN_MOVE_SELF | IN_ISDIR, False)]
    # Without followMove the path is what is watched: it is gone, so wait for it again.
    assert fs.calls == [(b"/data", ANCHOR_MASK | IN_MASK_ADD, False)]
    assert _roles(core) == [("ANCHOR", 0, b"d")]
    assert fs.unwatched == [d]


def test_ignored_names_get_no_event_and_no_watch_when_created() -> None:
    fs = MaskFs({"/data": "dir"})
    config = subject("/data", events=("create",), ignore=("*.swp",), recursive=True)
    core = core_for(fs, config)
    data = fs.wds[b"/data"]
    fs.nodes[b"/data/x.swp"] = "dir"
    fs.nodes[b"/data/y"] = "dir"
    fs.calls.clear()
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"x.swp", 5)
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"y", 5)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/y", IN_CREATE | IN_ISDIR, False)]
    assert fs.calls == [(b"/data/y", _mask(config) | TREE_BITS | IN_ONLYDIR | IN_MASK_ADD, True)]


def test_resolve_skips_dot_components_and_keeps_following_after_a_link() -> None:
    fs = FakeFs({"/etc": "dir", "/etc/x": "file", "/data": "dir", "/data/abs": b"/etc"})
    assert resolve(fs, b"/./data/./abs/./x") == Resolution(
        NodeKind.FILE, b"/etc/x", links=((b"/data", b"abs"),)
    )
    assert resolve(fs, b"/data/abs/nope/deeper") == Resolution(
        NodeKind.MISSING, b"/etc", b"nope", final=False, links=((b"/data", b"abs"),)
    )
    assert resolve(fs, b"/data/abs/nope").final


def test_resolve_follows_exactly_max_symlinks_links() -> None:
    nodes: dict[str, str | bytes] = {"/d": "dir"}
    for i in range(MAX_SYMLINKS):
        nodes[f"/l{i}"] = f"/l{i + 1}".encode()
    nodes[f"/l{MAX_SYMLINKS}"] = b"/d"
    fs = FakeFs(nodes)
    assert resolve(fs, b"/l1").path == b"/d"  # MAX_SYMLINKS links
    with pytest.raises(ResolveError) as err:
        resolve(fs, b"/l0")  # one more
    assert (err.value.code, str(err.value)) == ("ELOOP", "too many symbolic links resolving b'/l0'")


def test_a_long_walk_lets_the_engine_drain_inotify_every_drain_every_directories() -> None:
    nodes: dict[str, str | bytes] = {"/data": "dir"}
    for i in range(2 * DRAIN_EVERY + 10):
        nodes[f"/data/d{i}"] = "dir"
    fs = MaskFs(nodes)
    core = Core((subject("/data", events=("create",), recursive=True),), fs, lambda: 1)
    drains: list[int] = []
    core.drain = lambda: drains.append(len(fs.calls))
    core.start()
    assert len(fs.calls) == 2 * DRAIN_EVERY + 11
    assert drains == [DRAIN_EVERY - 1, 2 * DRAIN_EVERY - 1]  # before the 512th, 1024th watch


def test_a_tree_reached_through_a_symlink_is_watched_there_and_reported_here() -> None:
    fs = MaskFs({"/etc": "dir", "/etc/sub": "dir", "/data": "dir", "/data/link": b"/etc"})
    core = core_for(fs, subject("/data/link", events=("create",), recursive=True))
    assert [(path, listing) for path, _, listing in fs.calls[1:]] == [
        (b"/etc", True),
        (b"/etc/sub", True),
    ]
    core.handle(fs.wds[b"/etc/sub"], IN_CREATE, 0, b"x", 2)
    fs.nodes[b"/etc/new"] = "dir"
    fs.nodes[b"/etc/new/in"] = "dir"
    fs.calls.clear()
    core.handle(fs.wds[b"/etc"], IN_CREATE | IN_ISDIR, 0, b"new", 2)
    core.end_batch()
    assert _kinds(core) == [
        ("EventRecord", 0, b"/data/link/sub/x", IN_CREATE, False),
        ("EventRecord", 0, b"/data/link/new", IN_CREATE | IN_ISDIR, False),
        ("EventRecord", 0, b"/data/link/new/in", IN_CREATE | IN_ISDIR, True),
    ]
    assert [path for path, _, _ in fs.calls] == [b"/etc/new", b"/etc/new/in"]


def test_a_directory_vanishing_between_resolve_and_watch_is_resolved_again_bounded() -> None:
    class Vanishing(MaskFs):
        """/data/d exists for lookups, but watching it fails `fails` times (ENOENT)."""

        fails = 3

        def watch_dir(
            self, path: bytes, mask: int, listing: bool
        ) -> tuple[int, list[tuple[bytes, bool]]]:
            if path == b"/data/d" and self.fails:
                self.fails -= 1
                self.calls.append((path, mask, listing))
                raise OSError(errno.ENOENT, "gone")
            return super().watch_dir(path, mask, listing)

    fs = Vanishing({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data/d", events=("create",)))
    assert [path for path, _, _ in fs.calls] == [b"/data/d"] * 4  # 3 retries
    assert _roles(core) == [("TREE", 0, b"")]
    assert _errors(core) == []


class _AlwaysVanishing(MaskFs):
    """/data/d exists for lookups, but watching it fails (ENOENT) while `fails` is set."""

    fails = True

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        if path == b"/data/d" and self.fails:
            self.calls.append((path, mask, listing))
            raise OSError(errno.ENOENT, "gone")
        return super().watch_dir(path, mask, listing)


def test_a_directory_that_vanishes_on_every_retry_is_reported_and_awaited() -> None:
    fs = _AlwaysVanishing({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data/d", events=("create",)))
    # Gave up after 3 retries; then its parent is watched for it to come back.
    assert [path for path, _, _ in fs.calls] == [b"/data/d"] * 4 + [b"/data"]
    message = "vanished each time it was watched; not watched until it is created again"
    assert _errors(core) == [(0, 0, "EVANISHED", b"/data/d", message)]
    assert _roles(core) == [("ANCHOR", 0, b"d")]
    # It comes back: the anchor reports its creation and watches it.
    fs.fails = False
    core.handle(fs.wds[b"/data"], IN_CREATE | IN_ISDIR, 0, b"d", 2)
    core.end_batch()
    assert _roles(core) == [("TREE", 0, b"")]
    assert [k for k in _kinds(core) if k[0] == "EventRecord"] == [
        ("EventRecord", 0, b"/data/d", IN_CREATE | IN_ISDIR, False)
    ]


def _moved(fs: MaskFs, old: str, new: str) -> None:
    """Renames `old` and everything below it in the fake filesystem."""
    fs.nodes = {
        new.encode() + k[len(old) :] if k == old.encode() or k.startswith(old.encode() + b"/")
        else k: v
        for k, v in fs.nodes.items()
    }  # fmt: skip


@pytest.mark.parametrize("max_depth", [0, 3])
@pytest.mark.parametrize(
    ("new", "to_dir", "depths"),
    [
        ("/data/z", "/data", {b"/data/z": 1, b"/data/z/b": 2}),
        ("/data/c/a", "/data/c", {b"/data/c/a": 2, b"/data/c/a/b": 3}),
    ],
)
def test_a_subtree_renamed_inside_a_recursive_watch_is_reported_under_its_new_path(
    max_depth: int, new: str, to_dir: str, depths: dict[bytes, int]
) -> None:
    fs = MaskFs({"/data": "dir", "/data/a": "dir", "/data/a/b": "dir", "/data/c": "dir"})
    config = subject("/data", events=("create", "move"), recursive=True, max_depth=max_depth)
    core = core_for(fs, config)
    b = fs.wds[b"/data/a/b"]
    destination = fs.wds[to_dir.encode()]
    _moved(fs, "/data/a", new)
    core.handle(fs.wds[b"/data"], IN_MOVED_FROM | IN_ISDIR, 9, b"a", 3)
    core.handle(destination, IN_MOVED_TO | IN_ISDIR, 9, new.rsplit("/", 1)[1].encode(), 3)
    core.end_batch()
    assert _kinds(core) == [
        ("EventRecord", 0, b"/data/a", IN_MOVED_FROM | IN_ISDIR, False),
        ("EventRecord", 0, new.encode(), IN_MOVED_TO | IN_ISDIR, False),
    ]
    trees = {path: role.depth for path, role in core.trees[0].items()}
    assert {p: d for p, d in trees.items() if p.startswith(new.encode())} == depths
    assert not [p for p in trees if p.startswith(b"/data/a")]
    core.handle(fs.wds.get(new.encode() + b"/b", b), IN_CREATE, 0, b"x", 4)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, new.encode() + b"/b/x", IN_CREATE, False)]


def test_a_watched_file_created_with_its_directory_gets_a_synthetic_create() -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data/a/f", events=("create", "modify")))
    fs.nodes[b"/data/a"] = "dir"
    fs.nodes[b"/data/a/f"] = "file"  # both there before the engine saw /data/a
    core.handle(fs.wds[b"/data"], IN_CREATE | IN_ISDIR, 0, b"a", 3)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/a/f", IN_CREATE, True)]
    assert _roles(core) == [("FILE", 0, b"f")]


def test_only_the_watched_directory_reports_its_own_events() -> None:
    fs = MaskFs({"/data": "dir", "/data/s": "dir"})
    core = core_for(fs, subject("/data", events=("attrib", "create"), recursive=True))
    core.handle(fs.wds[b"/data/s"], IN_ATTRIB, 0, b"", 3)  # a subdirectory's own: its parent
    core.handle(fs.wds[b"/data"], IN_MODIFY, 0, b"", 3)  # not an event asked for
    core.handle(fs.wds[b"/data"], IN_ATTRIB | IN_ISDIR, 0, b"s", 3)  # the parent's report
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/s", IN_ATTRIB | IN_ISDIR, False)]


def test_a_symlink_removed_and_created_again_is_followed() -> None:
    fs = MaskFs({"/etc": "dir", "/data": "dir", "/data/l": b"/etc"})
    core = core_for(fs, subject("/data/l", events=("create",)))
    del fs.nodes[b"/data/l"]
    fs.calls.clear()
    core.handle(fs.wds[b"/data"], IN_DELETE, 0, b"l", 4)
    core.end_batch()
    assert (_kinds(core), _roles(core)) == ([], [("ANCHOR", 0, b"l")])
    assert fs.calls == [(b"/data", ANCHOR_MASK | IN_MASK_ADD, False)]
    fs.nodes[b"/data/l"] = b"/etc"
    core.handle(fs.wds[b"/data"], IN_CREATE, 0, b"l", 5)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/l", IN_CREATE, False)]
    assert _roles(core) == [("LINK", 0, b"l"), ("TREE", 0, b"")]
    core.handle(fs.wds[b"/data"], IN_CREATE, 0, b"other", 6)  # another name: nothing
    core.end_batch()
    assert _kinds(core) == []


def test_a_directory_holding_a_file_or_anchor_role_is_re_armed_only_when_it_goes() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    core = core_for(fs, subject("/data/f", events=("create", "modify", "attrib")))
    data = fs.wds[b"/data"]
    core.handle(data, IN_ATTRIB | IN_ISDIR, 0, b"", 2)  # the directory's own: not the file's
    core.end_batch()
    assert (_kinds(core), _roles(core)) == ([], [("FILE", 0, b"f")])
    fs.calls.clear()
    core.handle(data, IN_DELETE_SELF, 0, b"", 3)  # (and back at once: the file is there)
    core.end_batch()
    assert _kinds(core) == []  # the file did not appear: no synthetic CREATE
    assert _roles(core) == [("FILE", 0, b"f")]
    assert len(fs.calls) == 1
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data/a/b", events=("create",)))
    data = fs.wds[b"/data"]
    core.handle(data, IN_ATTRIB | IN_ISDIR, 0, b"", 2)
    core.end_batch()
    assert (_kinds(core), _roles(core)) == ([], [("ANCHOR", 0, b"a")])
    del fs.nodes[b"/data"]
    fs.calls.clear()
    core.handle(data, IN_DELETE_SELF, 0, b"", 3)
    core.end_batch()
    assert (_kinds(core), _roles(core)) == ([], [("ANCHOR", 0, b"data")])
    assert fs.calls == [(b"/", ANCHOR_MASK | IN_MASK_ADD, False)]


def test_watch_failures_are_exact_error_records() -> None:
    fs = MaskFs({"/data": "dir", "/data/f": "file"})
    fs.limit = 0  # every new inotify watch: ENOSPC
    core = core_for(fs, subject("/data/f", events=("modify",)))
    assert _errors(core) == [
        (0, 0, "ENOSPC", b"/data", "inotify watch limit reached (fs.inotify.max_user_watches)")
    ]
    assert _roles(core) == []

    class Failing(MaskFs):
        error = OSError(errno.EACCES, "Permission denied")

        def watch_dir(
            self, path: bytes, mask: int, listing: bool
        ) -> tuple[int, list[tuple[bytes, bool]]]:
            if path == b"/data/d":
                raise self.error
            return super().watch_dir(path, mask, listing)

    for error, code, message in [
        (OSError(errno.EACCES, "Permission denied"), "EACCES", "Permission denied"),
        (OSError("odd failure"), "EIO", "odd failure"),  # no errno: EIO, its text
    ]:
        Failing.error = error
        fs = Failing({"/data": "dir", "/data/d": "dir"})
        core = core_for(fs, subject("/data", events=("create",), recursive=True))
        assert _errors(core) == [(0, 0, code, b"/data/d", message)]


def test_a_rescan_watches_what_appeared_without_reporting_it() -> None:
    fs = MaskFs({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data", events=("create",), recursive=True))
    fs.nodes[b"/data/new"] = "dir"
    fs.nodes[b"/data/d/g"] = "file"
    fs.calls.clear()
    core.rescan()
    assert records(core) == []  # lost events are reported as the overflow, not invented
    assert sorted(path for path, _, _ in fs.calls) == [b"/data", b"/data/d", b"/data/new"]
    assert sorted(core.trees[0]) == [b"/data", b"/data/d", b"/data/new"]
    assert fs.unwatched == []  # the same directories keep their watches


def test_non_utf8_paths_and_ignore_patterns_keep_their_bytes() -> None:
    # A configured path and an ignore pattern with bytes that are not UTF-8 (surrogateescape).
    fs = MaskFs({"/data": "dir"})
    fs.nodes[b"/data/\xff"] = "dir"
    fs.nodes[b"/data/\xff/\xfeskip"] = "dir"
    fs.nodes[b"/data/\xff/keep"] = "dir"
    config = subject("/data/\udcff", events=("create",), recursive=True, ignore=("\udcfe*",))
    core = core_for(fs, config)
    assert sorted(path for path, _, _ in fs.calls) == [b"/data/\xff", b"/data/\xff/keep"]
    core.handle(fs.wds[b"/data/\xff"], IN_CREATE, 0, b"\xfeother", 2)
    core.handle(fs.wds[b"/data/\xff"], IN_CREATE, 0, b"x", 2)
    core.end_batch()
    assert _kinds(core) == [("EventRecord", 0, b"/data/\xff/x", IN_CREATE, False)]


@pytest.mark.parametrize("recursive", [False, True])
def test_only_a_new_directory_of_a_recursive_watch_is_walked(recursive: bool) -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data", events=("create", "delete"), recursive=recursive))
    data = fs.wds[b"/data"]
    fs.nodes[b"/data/f"] = "file"
    fs.nodes[b"/data/d"] = "dir"
    fs.calls.clear()
    core.handle(data, IN_CREATE, 0, b"f", 2)
    core.handle(data, IN_DELETE | IN_ISDIR, 0, b"gone", 2)
    assert fs.calls == []
    core.handle(data, IN_CREATE | IN_ISDIR, 0, b"d", 2)
    core.end_batch()
    assert [path for path, _, _ in fs.calls] == ([b"/data/d"] if recursive else [])
    assert _kinds(core) == [
        ("EventRecord", 0, b"/data/f", IN_CREATE, False),
        ("EventRecord", 0, b"/data/gone", IN_DELETE | IN_ISDIR, False),
        ("EventRecord", 0, b"/data/d", IN_CREATE | IN_ISDIR, False),
    ]


@pytest.mark.parametrize(
    ("max_depth", "watched"), [(1, [b"/data/a"]), (2, [b"/data/a", b"/data/a/b"])]
)
def test_a_new_directory_is_walked_down_to_max_depth_only(
    max_depth: int, watched: list[bytes]
) -> None:
    fs = MaskFs({"/data": "dir"})
    core = core_for(fs, subject("/data", events=("create",), recursive=True, max_depth=max_depth))
    for path in (b"/data/a", b"/data/a/b", b"/data/a/b/c"):
        fs.nodes[path] = "dir"
    fs.calls.clear()
    core.handle(fs.wds[b"/data"], IN_CREATE | IN_ISDIR, 0, b"a", 3)
    core.end_batch()
    assert [path for path, _, _ in fs.calls] == watched
    # Synthetic CREATEs for what the watched directories held when listed.
    listed = [b"/data/a/b", b"/data/a/b/c"][: len(watched)]
    assert _kinds(core) == [
        ("EventRecord", 0, b"/data/a", IN_CREATE | IN_ISDIR, False),
        *[("EventRecord", 0, path, IN_CREATE | IN_ISDIR, True) for path in listed],
    ]


def test_a_symlink_role_re_arms_only_for_its_name_or_its_directory_going() -> None:
    fs = MaskFs({"/etc": "dir", "/data": "dir", "/data/l": b"/etc"})
    core = core_for(fs, subject("/data/l", events=("create",)))
    data = fs.wds[b"/data"]
    fs.calls.clear()
    core.handle(data, IN_ATTRIB | IN_ISDIR, 0, b"", 2)  # the directory's own, not a removal
    core.handle(data, IN_ATTRIB, 0, b"l", 2)  # the link's metadata: it still points there
    core.handle(data, IN_CREATE, 0, b"other", 2)
    core.end_batch()
    assert fs.calls == []
    core.handle(data, IN_DELETE_SELF, 0, b"", 3)  # its directory went (and came back)
    core.end_batch()
    assert [path for path, _, _ in fs.calls] == [b"/data", b"/etc"]


def test_a_followed_directory_follows_only_its_own_rename() -> None:
    fs = MaskFs({"/data": "dir", "/data/d": "dir"})
    core = core_for(fs, subject("/data/d", events=("create",), follow_move=True))
    data = fs.wds[b"/data"]
    before = dict(core.trees[0])
    core.handle(data, IN_MOVED_FROM | IN_ISDIR, 5, b"other", 2)  # another directory leaves
    core.handle(data, IN_MOVED_TO | IN_ISDIR, 5, b"other2", 2)
    core.handle(data, IN_MOVED_TO | IN_ISDIR, 77, b"x", 2)  # something else arrives
    core.end_batch()
    assert core.trees[0] == before
    core.handle(data, IN_MOVED_FROM | IN_ISDIR, 6, b"d", 3)
    core.handle(data, IN_MOVED_TO | IN_ISDIR, 6, b"d2", 3)
    core.end_batch()
    assert sorted(core.trees[0]) == [b"/data/d2"]
