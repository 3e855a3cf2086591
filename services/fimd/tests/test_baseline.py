"""The pure part of baselines: the diff, the new baseline, the subject key and the lines."""

from __future__ import annotations

import json
import stat

import attrs

from libs.fimnotify_api.subject import SubjectConfig
from libs.rootfs.walk import Entry, Walk
from services.fimd import baseline
from services.fimd.baseline import ADDED, CHANGED, REMOVED, Change, diff
from services.fimd.lines import Identity, record_line

FILE = Entry("file", stat.S_IFREG | 0o644, 0, 0, 4, 1_000_000_000, sha256="a" * 64)
DIR = Entry("dir", stat.S_IFDIR | 0o755, 0, 0, 4096, 1_000_000_000)


def _walk(entries: dict[bytes, Entry], truncated: bool = False) -> Walk:
    return Walk(entries, truncated)


def test_added_removed_and_changed_by_path() -> None:
    before = {b"/d": DIR, b"/d/gone": FILE, b"/d/same": FILE, b"/d/edit": FILE}
    edited = attrs.evolve(FILE, sha256="b" * 64, size=9, mtime_ns=2_000_000_000)
    after = {b"/d": DIR, b"/d/new": FILE, b"/d/same": FILE, b"/d/edit": edited}
    changes = diff(before, _walk(after))
    assert changes == [
        Change(CHANGED, b"/d/edit", FILE, edited, ("sha256", "size", "mtime")),
        Change(REMOVED, b"/d/gone", FILE, None),
        Change(ADDED, b"/d/new", None, FILE),
    ]


def test_a_comparison_writes_only_what_differs_in_any_stored_field() -> None:
    moved = attrs.evolve(FILE, ino=70, ctime_ns=8)  # no drift, but stored for the hash reuse
    edited = attrs.evolve(FILE, size=9)
    stored = [(b"/same", FILE), (b"/moved", FILE), (b"/edit", FILE), (b"/gone", FILE)]
    walked = _walk({b"/same": FILE, b"/moved": moved, b"/edit": edited, b"/new": FILE})
    found = baseline.compare(iter(stored), walked)
    assert found.changes == diff(dict(stored), walked)
    assert [(c.change, c.path) for c in found.changes] == [
        (CHANGED, b"/edit"), (REMOVED, b"/gone"), (ADDED, b"/new"),
    ]  # fmt: skip
    assert found.write == {b"/moved": moved, b"/edit": edited, b"/new": FILE}
    assert found.gone == [b"/gone"]
    partial = baseline.compare(iter(stored), _walk({b"/same": FILE}, truncated=True))
    assert (partial.changes, partial.write, partial.gone) == ([], {}, [])


def test_what_is_compared() -> None:
    assert baseline.differing(FILE, attrs.evolve(FILE, mode=stat.S_IFREG | 0o600)) == ("mode",)
    assert baseline.differing(FILE, attrs.evolve(FILE, uid=1, gid=2)) == ("uid", "gid")
    assert baseline.differing(FILE, attrs.evolve(FILE, kind="symlink")) == ("type",)
    # A hash only when both sides have one (e.g. not over the size cap).
    assert baseline.differing(FILE, attrs.evolve(FILE, sha256="", hash_skipped="size")) == ()
    # Not the inode or ctime (a restarted container has new ones for the same files).
    assert baseline.differing(FILE, attrs.evolve(FILE, ino=9, ctime_ns=5, dev=3)) == ()
    # A directory's size and mtime change with its entries: those are reported instead.
    assert baseline.differing(DIR, attrs.evolve(DIR, size=8192, mtime_ns=5)) == ()
    assert baseline.differing(DIR, attrs.evolve(DIR, mode=stat.S_IFDIR | 0o777)) == ("mode",)


def test_a_truncated_walk_reports_no_removal_and_keeps_what_it_did_not_reach() -> None:
    before = {b"/a": FILE, b"/b": FILE}
    partial = _walk({b"/a": FILE, b"/c": FILE}, truncated=True)
    assert diff(before, partial) == [Change(ADDED, b"/c", None, FILE)]
    found = baseline.compare(before.items(), partial)
    assert (found.write, found.gone) == ({b"/c": FILE}, [])  # /b stays in the baseline
    complete = baseline.compare(before.items(), _walk({b"/a": FILE}))
    assert (complete.write, complete.gone) == ({}, [b"/b"])


def test_the_subject_key_follows_what_decides_the_tree() -> None:
    base = SubjectConfig(paths=("/etc",), events=("modify",), hash="sha256")
    key = baseline.subject_key(base)
    assert key == baseline.subject_key(attrs.evolve(base, events=("all",), tags={"a": "b"}))
    for other in (
        attrs.evolve(base, paths=("/etc", "/usr")),
        attrs.evolve(base, recursive=True),
        attrs.evolve(base, ignore=("*.swp",)),
        attrs.evolve(base, hash="", attributes=True),
    ):
        assert baseline.subject_key(other) != key
    assert baseline.has_baseline(base)
    assert not baseline.has_baseline(attrs.evolve(base, hash=""))


def test_drift_and_scan_lines() -> None:
    who = Identity("n1", "shop", "web-0", "app", "shop/etc")
    edited = attrs.evolve(FILE, sha256="b" * 64, size=9)
    change = Change(CHANGED, b"/etc/\xff", FILE, edited, ("sha256", "size"))
    line = json.loads(record_line("drift", who, baseline.drift_record(change, "scheduled", {})))
    assert line["kind"] == "drift"
    assert line["watcher"] == "shop/etc"
    assert (line["change"], line["reason"], line["type"]) == ("CHANGED", "scheduled", "file")
    assert line["pathBytes"] == "L2V0Yy//"
    assert line["changed"] == ["sha256", "size"]
    assert line["before"]["sha256"] == "a" * 64
    assert line["after"] == {
        "type": "file", "sha256": "b" * 64, "size": 9, "mode": "0644", "uid": 0, "gid": 0,
        "mtime": "1970-01-01T00:00:01.000000Z",
    }  # fmt: skip
    removed = baseline.drift_record(Change(REMOVED, b"/x", FILE, None), "activation", {"t": "v"})
    assert "after" not in removed
    assert removed["tags"] == {"t": "v"}
    walked = _walk({b"/a": FILE, b"/b": FILE})
    scan = baseline.summarize("activation", True, walked, [change], 0.0123)
    assert baseline.scan_record(scan) == {
        "reason": "activation", "baseline": True, "scanned": 2, "added": 0, "removed": 0,
        "changed": 1, "durationSeconds": 0.012, "truncated": False, "errors": 0,
    }  # fmt: skip
