"""Baselines: the pure part (which subjects have one, their key, the diff, the lines).

A subject with `attributes` or `hash` has a baseline: the entries of its tree (path, type,
mode, uid, gid, size, mtime, and sha256 with `hash`) stored in the node's database
(`baseline_store.py`), keyed by namespace, pod UID, container, watcher UID and the
subject's key (`subject_key`: a digest of what decides its tree, so a changed subject
starts a new baseline instead of reporting its new paths as drift). On every
(re)activation of its watch, and on every scheduled scan, the tree is walked and compared
with the stored baseline: each difference is one drift line, then one scan line sums it up,
then the baseline is replaced (docs/logging.md, *Drift*)::

    {"kind":"drift","time":"...","node":"n1","namespace":"shop","pod":"web-0",
     "container":"app","watcher":"shop/etc","reason":"activation","change":"CHANGED",
     "path":"/etc/app.conf","type":"file","changed":["sha256","size","mtime"],
     "before":{"sha256":"...","size":4,...},"after":{"sha256":"...","size":9,...},"tags":{}}

    {"kind":"scan","time":"...",...,"reason":"activation","baseline":true,"scanned":120,
     "added":0,"removed":0,"changed":1,"durationSeconds":0.031,"truncated":false,"errors":0}

ADDED has only `after`, REMOVED only `before`. A walk cut short by the entry cap
(`truncated`) reports no REMOVED (what it did not reach is not known to be gone). The first
walk of a subject (no stored baseline: `"baseline":false`) reports no drift, it makes one.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterable, Mapping, Sequence

import attrs

from libs.fimnotify_api.subject import SubjectConfig
from libs.rootfs.walk import Entry, Rules, Walk
from services.fimd.lines import format_time, path_fields

ADDED = "ADDED"
REMOVED = "REMOVED"
CHANGED = "CHANGED"
#: The entry fields a drift compares, as the line names them.
COMPARED = ("type", "sha256", "size", "mode", "uid", "gid", "mtime")


def has_baseline(subject: SubjectConfig) -> bool:
    return subject.with_attributes


def subject_key(subject: SubjectConfig) -> str:
    """A digest of what decides the subject's tree and its entries."""
    doc = {
        "paths": list(subject.paths),
        "recursive": subject.recursive,
        "maxDepth": subject.max_depth,
        "ignore": list(subject.ignore),
        "onlyDir": subject.only_dir,
        "hash": subject.hash,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def rules(subject: SubjectConfig, *, max_bytes: int, max_entries: int) -> Rules:
    return Rules(
        recursive=subject.recursive,
        max_depth=subject.max_depth,
        ignore=subject.ignore,
        only_dir=subject.only_dir,
        hash_content=bool(subject.hash),
        max_bytes=max_bytes,
        max_entries=max_entries,
    )


@attrs.frozen
class Change:
    change: str  # ADDED, REMOVED, CHANGED
    path: bytes
    before: Entry | None
    after: Entry | None
    fields: tuple[str, ...] = ()  # CHANGED: the compared fields that differ


def _values(entry: Entry) -> dict[str, object]:
    return {
        "type": entry.kind,
        "sha256": entry.sha256,
        "size": entry.size,
        "mode": stat.S_IMODE(entry.mode),
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime": entry.mtime_ns,
    }


def differing(before: Entry, after: Entry) -> tuple[str, ...]:
    """The compared fields that differ; a hash only when both sides have one, mtime and
    size not for directories (their size and mtime change with every entry added)."""
    old, new = _values(before), _values(after)
    out = []
    for name in COMPARED:
        if name == "sha256" and not (before.sha256 and after.sha256):
            continue
        if name in ("size", "mtime") and before.kind == after.kind == "dir":
            continue
        if old[name] != new[name]:
            out.append(name)
    return tuple(out)


def diff(before: Mapping[bytes, Entry], after: Walk) -> list[Change]:
    """The changes from the stored entries to the walk, by path."""
    return compare(before.items(), after).changes


def _path_of(change: Change) -> bytes:
    return change.path


@attrs.frozen
class Comparison:
    """What a comparison found and what the baseline must store of it: the changes, and
    the entries to write (added, or differing in any stored field, inode and ctime too)
    and the paths to delete (none for a truncated walk: what it did not reach stays)."""

    changes: list[Change]
    write: dict[bytes, Entry]
    gone: list[bytes]


def compare(stored: Iterable[tuple[bytes, Entry]], after: Walk) -> Comparison:
    """`diff` and the baseline's update from the stored entries read one at a time, so
    that only the walk is held whole (an unchanged entry costs one comparison)."""
    pending = dict(after.entries)  # walked, not met among the stored entries yet
    changes: list[Change] = []
    write: dict[bytes, Entry] = {}
    gone: list[bytes] = []
    for path, old in stored:
        new = pending.pop(path, None)
        if new is None:
            if not after.truncated:
                gone.append(path)
                changes.append(Change(REMOVED, path, old, None))
            continue
        if old == new and _same_identity(old, new):
            continue
        write[path] = new
        fields = differing(old, new)
        if fields:
            changes.append(Change(CHANGED, path, old, new, fields))
    for path, new in pending.items():
        write[path] = new
        changes.append(Change(ADDED, path, None, new))
    changes.sort(key=_path_of)
    return Comparison(changes, write, gone)


def _same_identity(old: Entry, new: Entry) -> bool:
    return (old.ctime_ns, old.ino, old.dev) == (new.ctime_ns, new.ino, new.dev)


def _state(entry: Entry) -> dict[str, object]:
    doc: dict[str, object] = {"type": entry.kind}
    if entry.sha256:
        doc["sha256"] = entry.sha256
    elif entry.hash_skipped:
        doc["hashSkipped"] = entry.hash_skipped
    doc.update(
        size=entry.size,
        mode=f"{stat.S_IMODE(entry.mode):04o}",
        uid=entry.uid,
        gid=entry.gid,
        mtime=format_time(entry.mtime_ns),
    )
    return doc


@attrs.frozen
class Scan:
    """What one comparison found, for its scan line."""

    reason: str  # activation, rescan, scheduled, requested
    had_baseline: bool
    scanned: int
    added: int
    removed: int
    changed: int
    seconds: float
    truncated: bool
    errors: int


def summarize(
    reason: str, had_baseline: bool, walked: Walk, changes: Sequence[Change], seconds: float
) -> Scan:
    counts = {ADDED: 0, REMOVED: 0, CHANGED: 0}
    for change in changes:
        counts[change.change] += 1
    return Scan(
        reason, had_baseline, len(walked.entries), counts[ADDED], counts[REMOVED],
        counts[CHANGED], seconds, walked.truncated, walked.errors,
    )  # fmt: skip


def drift_record(change: Change, reason: str, tags: Mapping[str, str]) -> dict[str, object]:
    """The fields of a drift line after the identity (the caller adds kind, time, who)."""
    shown = change.after or change.before
    assert shown is not None
    doc: dict[str, object] = {"reason": reason, "change": change.change}
    doc.update(path_fields(change.path))
    doc["type"] = shown.kind
    if change.fields:
        doc["changed"] = list(change.fields)
    if change.before is not None:
        doc["before"] = _state(change.before)
    if change.after is not None:
        doc["after"] = _state(change.after)
    doc["tags"] = dict(sorted(tags.items()))
    return doc


def scan_record(scan: Scan) -> dict[str, object]:
    return {
        "reason": scan.reason,
        "baseline": scan.had_baseline,
        "scanned": scan.scanned,
        "added": scan.added,
        "removed": scan.removed,
        "changed": scan.changed,
        "durationSeconds": round(scan.seconds, 3),
        "truncated": scan.truncated,
        "errors": scan.errors,
    }
