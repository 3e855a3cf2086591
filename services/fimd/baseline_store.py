"""Adapter: the node's baselines in one SQLite file (stdlib sqlite3, WAL, crash-safe).

One file per node (fimd's `--baseline-db`, on a hostPath under /var/lib/fim-k8s so it
outlives fimd's pod). A baseline is keyed by (namespace, pod UID, container, watcher UID,
subject key) and holds its entries; replacing or updating one (a comparison writes only
the entries that differ, `update`) is a single transaction, so a crash leaves the old
baseline or the new one, never a mix. Only fimd's scanner thread uses a `Store` (SQLite
connections stay in the thread that made them), the one writer. A comparison reads the
stored baseline without loading it whole (`Store.open`: one directory's entries at a time
for the walk, then every entry once, row by row).

A `Reader` serves the hash workers' point reads (the stored state of one path, for the
`previous` of a path's first event; docs/logging.md): one read-only connection per thread,
opened at its first read. WAL lets them read beside the writer without waiting for it, and
each read sees one committed baseline, the old one or the new one, never a mix. A read
returns an entry only if its baseline was stored (`updated_ns`) before the event: a
baseline that a comparison replaced after the event may hold the event's own change, and
would show it as its `previous`.

`summaries` sums up a watcher's baselines (the /baselines endpoint) on a read-only
connection of its own per call, beside the writer too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from libs.rootfs.reader import FileState
from libs.rootfs.walk import Entry

#: 2: baselines.truncated (the walk that stored it stopped at the entry cap).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS baselines (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    pod_uid TEXT NOT NULL,
    container TEXT NOT NULL,
    watcher_uid TEXT NOT NULL,
    subject TEXT NOT NULL,
    updated_ns INTEGER NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    UNIQUE (namespace, pod_uid, container, watcher_uid, subject)
);
CREATE TABLE IF NOT EXISTS entries (
    baseline INTEGER NOT NULL REFERENCES baselines(id) ON DELETE CASCADE,
    path BLOB NOT NULL,
    type TEXT NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hash_skipped TEXT NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    PRIMARY KEY (baseline, path)
) WITHOUT ROWID;
"""


@attrs.frozen
class BaselineKey:
    namespace: str
    pod_uid: str
    container: str
    watcher_uid: str
    subject: str


class StoreError(Exception):
    """The database cannot be opened or used (bad path, corrupt, wrong version)."""


class Store:
    def __init__(self, path: str) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise StoreError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
            if version == 1:
                self._db.execute(
                    "ALTER TABLE baselines ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as err:
            raise StoreError(f"{path}: {err}") from None

    def close(self) -> None:
        self._db.close()

    def _id(self, key: BaselineKey) -> int | None:
        row = self._db.execute(
            "SELECT id FROM baselines WHERE namespace=? AND pod_uid=? AND container=? "
            "AND watcher_uid=? AND subject=?",
            attrs.astuple(key),
        ).fetchone()
        return None if row is None else int(row[0])

    def load(self, key: BaselineKey) -> dict[bytes, Entry] | None:
        """The stored entries, or None when the subject has no baseline yet."""
        stored = self.open(key)
        return None if stored is None else dict(stored.entries())

    def open(self, key: BaselineKey) -> Stored | None:
        """The stored baseline of `key` to read without loading it; None if it has none."""
        number = self._id(key)
        return None if number is None else Stored(self._db, number)

    def replace(
        self,
        key: BaselineKey,
        entries: Mapping[bytes, Entry],
        now_ns: int,
        *,
        truncated: bool = False,
    ) -> None:
        """Stores `entries` as the baseline of `key`, in one transaction; `truncated`: the
        walk stopped at the entry cap."""
        self.update(key, now_ns, entries, (), truncated=truncated, clear=True)

    def update(
        self,
        key: BaselineKey,
        now_ns: int,
        write: Mapping[bytes, Entry],
        gone: Iterable[bytes],
        *,
        truncated: bool = False,
        clear: bool = False,
    ) -> None:
        """Writes the entries `write` and deletes the paths `gone` of `key`'s baseline (all
        its entries first with `clear`), in one transaction (a comparison writes only what
        differs, so an unchanged tree costs no entry write)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO baselines (namespace, pod_uid, container, watcher_uid, subject, "
                "updated_ns, truncated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, "
                "pod_uid, container, watcher_uid, subject) DO UPDATE SET "
                "updated_ns=excluded.updated_ns, truncated=excluded.truncated",
                (*attrs.astuple(key), now_ns, int(truncated)),
            )
            number = self._id(key)
            if clear:
                self._db.execute("DELETE FROM entries WHERE baseline=?", (number,))
            self._db.executemany(
                "DELETE FROM entries WHERE baseline=? AND path=?",
                ((number, path) for path in gone),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_row(number, path, e) for path, e in write.items()),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def baselines(self) -> list[tuple[BaselineKey, int]]:
        """Every stored baseline with the time (ns) it was last replaced."""
        rows = self._db.execute(
            "SELECT namespace, pod_uid, container, watcher_uid, subject, updated_ns FROM baselines"
        )
        return [(BaselineKey(*row[:5]), int(row[5])) for row in rows]

    def remove(self, keys: Iterable[BaselineKey]) -> int:
        """Removes these baselines and their entries; returns how many existed."""
        removed = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for key in keys:
                number = self._id(key)
                if number is not None:
                    self._db.execute("DELETE FROM baselines WHERE id=?", (number,))
                    removed += 1
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return removed

    def entry_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])


_ALL = (
    "SELECT path, type, mode, uid, gid, size, mtime_ns, sha256, hash_skipped, ctime_ns, ino, "
    "dev FROM entries WHERE baseline=?"
)
#: The entries directly below a directory: the paths from "<dir>/" up to "<dir>0" ("0"
#: follows "/"), less those with another "/" after the prefix.
_CHILDREN = _ALL + " AND path > ? AND path < ? AND instr(substr(path, ?), X'2F') = 0"


class Stored:
    """One stored baseline, read without loading it: by path (`get`) or in full, one row
    at a time (`entries`). Only in the thread of its `Store`, and not while that `Store`
    writes. `get` reads the stored entries of the path's directory in one query (a range
    of the primary key) and keeps them until a path of another directory is asked for, as
    a walk asks for the entries of one directory after another."""

    def __init__(self, db: sqlite3.Connection, number: int) -> None:
        self._db = db
        self._number = number
        self._parent: bytes | None = None
        self._children: dict[bytes, tuple[Any, ...]] = {}

    def get(self, path: bytes) -> Entry | None:
        parent = path[: path.rfind(b"/")]
        if parent != self._parent:
            prefix = parent + b"/"
            rows = self._db.execute(
                _CHILDREN, (self._number, prefix, parent + b"0", len(prefix) + 1)
            )
            self._parent, self._children = parent, {bytes(row[0]): row for row in rows}
        row = self._children.get(path)
        return None if row is None else _entry(row)

    def entries(self) -> Iterator[tuple[bytes, Entry]]:
        rows = self._db.execute(_ALL, (self._number,))
        return ((bytes(row[0]), _entry(row)) for row in rows)


class Reader:
    """Read-only point reads of stored entries, from any number of threads."""

    def __init__(
        self, path: str, timeout: float = 1.0, on_error: Callable[[], None] = lambda: None
    ) -> None:
        self._uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        self._timeout = timeout
        self._on_error = on_error
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        #: Reads that failed (no database yet, a corrupt one): their `previous` is absent.
        self.errors = 0

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self._uri, uri=True, timeout=self._timeout, check_same_thread=False
            )
            db.execute("PRAGMA query_only=ON")
            with self._lock:
                self._connections.append(db)
            self._local.db = db
        return db

    def file_state(self, key: BaselineKey, path: bytes, before_ns: int) -> FileState | None:
        """The stored state of the regular file at `path` in `key`'s baseline, if that
        baseline was stored before `before_ns` (wall clock); None otherwise or on error."""
        try:
            row = self._db().execute(_POINT, (*attrs.astuple(key), path, before_ns)).fetchone()
        except sqlite3.Error:
            with self._lock:
                self.errors += 1
            self._on_error()
            return None
        if row is None or row[1] != "file":
            return None
        return _entry(row).as_known()

    def close(self) -> None:
        """Closes every thread's connection (after those threads stopped reading)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()


#: One entry by baseline key and path: the UNIQUE index of baselines, then the primary key
#: of entries.
_POINT = (
    "SELECT e.path, e.type, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.sha256, "
    "e.hash_skipped, e.ctime_ns, e.ino, e.dev FROM baselines b JOIN entries e "
    "ON e.baseline = b.id WHERE b.namespace=? AND b.pod_uid=? AND b.container=? "
    "AND b.watcher_uid=? AND b.subject=? AND e.path=? AND b.updated_ns < ?"
)


@attrs.frozen
class Summary:
    """One stored baseline, summed up (`summaries`)."""

    key: BaselineKey
    updated_ns: int
    truncated: bool
    entries: int
    files: int
    dirs: int
    symlinks: int
    other: int
    bytes: int  # sizes of the regular files
    hashed: int  # files with a sha256
    hash_skipped: int  # files whose hash was skipped (too large, unreadable)


_SUMMARIES = """
SELECT b.namespace, b.pod_uid, b.container, b.watcher_uid, b.subject, b.updated_ns,
       b.truncated, count(e.path),
       coalesce(sum(e.type = 'file'), 0), coalesce(sum(e.type = 'dir'), 0),
       coalesce(sum(e.type = 'symlink'), 0),
       coalesce(sum(e.type NOT IN ('file', 'dir', 'symlink')), 0),
       coalesce(sum(CASE WHEN e.type = 'file' THEN e.size ELSE 0 END), 0),
       coalesce(sum(e.sha256 != ''), 0), coalesce(sum(e.hash_skipped != ''), 0)
FROM baselines AS b LEFT JOIN entries AS e ON e.baseline = b.id
WHERE b.watcher_uid = ?
GROUP BY b.id
ORDER BY b.namespace, b.pod_uid, b.container, b.subject
LIMIT ?
"""


class QueryTimeoutError(StoreError):
    """A read took longer than its budget and was stopped."""


def summaries(path: str, watcher_uid: str, *, limit: int, seconds: float) -> list[Summary]:
    """The first `limit` baselines of a watcher, summed up, read on a connection of its
    own that cannot write (WAL: the scanner's writes go on meanwhile); stopped with
    QueryTimeoutError after `seconds`. Raises StoreError when the file cannot be read."""
    deadline = time.monotonic() + seconds
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=seconds)
    except sqlite3.Error as err:
        raise StoreError(f"{path}: {err}") from None
    try:
        db.execute("PRAGMA query_only=1")
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        rows = db.execute(_SUMMARIES, (watcher_uid, limit)).fetchall()
    except sqlite3.OperationalError as err:
        if time.monotonic() > deadline:
            raise QueryTimeoutError(f"{path}: no answer within {seconds:g} s") from None
        raise StoreError(f"{path}: {err}") from None
    except sqlite3.Error as err:
        raise StoreError(f"{path}: {err}") from None
    finally:
        db.close()
    return [
        Summary(BaselineKey(*row[:5]), int(row[5]), bool(row[6]), *(int(v) for v in row[7:]))
        for row in rows
    ]


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(
        row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
        ctime_ns=row[9], ino=row[10], dev=row[11],
    )  # fmt: skip


def _row(number: int | None, path: bytes, e: Entry) -> tuple[object, ...]:
    return (
        number, path, e.kind, e.mode, e.uid, e.gid, e.size, e.mtime_ns,
        e.sha256, e.hash_skipped, e.ctime_ns, e.ino, e.dev,
    )  # fmt: skip
