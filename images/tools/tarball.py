"""Deterministic tar streams: the bytes depend only on the entries, never on the build.

Entries are sorted by path component (a parent always precedes its children), every
mtime is the fixed SOURCE_DATE_EPOCH, owner names are dropped (numeric ids only) and no
PAX extras (atime, xattrs) survive, so two builds from the same inputs are bit-identical.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One member of a layer: a directory, regular file or symlink."""

    path: str  # relative, no leading "./" or "/", e.g. "usr/bin/python3"
    kind: bytes  # tarfile.DIRTYPE, REGTYPE or SYMTYPE
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    linkname: str = ""


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, tarfile.DIRTYPE, mode, uid, gid)


def regular(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, tarfile.REGTYPE, mode, uid, gid, data=data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.SYMTYPE, 0o777, linkname=target)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Adds a 0755 root-owned directory entry for every missing parent directory."""
    by_path = {entry.path: entry for entry in entries}
    for path in list(by_path):
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            by_path.setdefault(parent, directory(parent))
    return list(by_path.values())


def _sort_key(entry: Entry) -> list[str]:
    return entry.path.split("/")


def write_tar(entries: Iterable[Entry], mtime: int) -> bytes:
    """The tar bytes of `entries` (duplicates rejected), sorted, with every mtime = `mtime`."""
    ordered = sorted(entries, key=_sort_key)
    paths = [entry.path for entry in ordered]
    if len(set(paths)) != len(paths):
        raise ValueError("duplicate paths in layer")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in ordered:
            info = tarfile.TarInfo(entry.path)
            info.type = entry.kind
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = mtime
            info.linkname = entry.linkname
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == tarfile.REGTYPE else None)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no name and mtime 0 in the header, so the output depends on `data` only."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
