"""The node's baseline database on a real SQLite file."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from libs.rootfs.walk import Entry
from services.fimd.baseline_store import BaselineKey, Reader, Store, StoreError

KEY = BaselineKey("shop", "pod-1", "app", "watcher-1", "s" * 32)
FILE = Entry("file", stat.S_IFREG | 0o644, 1, 2, 4, 5, sha256="a" * 64, ctime_ns=6, ino=7, dev=8)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(str(tmp_path / "baselines.sqlite"))
    yield store
    store.close()


def test_a_baseline_round_trips_with_its_identity_fields(store: Store) -> None:
    assert store.load(KEY) is None
    entries = {b"/etc/a": FILE, b"/etc/\xff": FILE}
    store.replace(KEY, entries, 100)
    loaded = store.load(KEY)
    assert loaded == entries
    assert loaded is not None
    assert (loaded[b"/etc/a"].ino, loaded[b"/etc/a"].ctime_ns) == (7, 6)
    store.replace(KEY, {b"/etc/b": FILE}, 200)
    assert store.load(KEY) == {b"/etc/b": FILE}
    assert store.baselines() == [(KEY, 200)]


def test_baselines_are_separate_and_removed_with_their_entries(store: Store) -> None:
    other = BaselineKey("shop", "pod-2", "app", "watcher-1", "s" * 32)
    store.replace(KEY, {b"/a": FILE}, 1)
    store.replace(other, {b"/b": FILE, b"/c": FILE}, 1)
    assert store.entry_count() == 3
    assert store.remove([other, BaselineKey("x", "y", "z", "w", "v")]) == 1
    assert store.load(other) is None
    assert store.load(KEY) == {b"/a": FILE}
    assert store.entry_count() == 1


def test_the_file_is_in_wal_mode_and_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sqlite")
    first = Store(path)
    first.replace(KEY, {b"/a": FILE}, 1)
    first.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = Store(path)
    assert again.load(KEY) == {b"/a": FILE}
    again.close()


def test_a_failed_replace_keeps_the_old_baseline(store: Store) -> None:
    store.replace(KEY, {b"/a": FILE}, 1)

    class Broken(Mapping[bytes, Entry]):
        """Fails while its entries are written, like a crash in the middle."""

        def __getitem__(self, key: bytes) -> Entry:
            raise KeyError(key)

        def __iter__(self) -> Iterator[bytes]:
            yield b"/b"
            raise RuntimeError("crash in the middle")

        def __len__(self) -> int:
            return 2

        def items(self) -> Any:
            return ((k, FILE) for k in self)

    with pytest.raises(RuntimeError):
        store.replace(KEY, Broken(), 2)
    assert store.load(KEY) == {b"/a": FILE}


def test_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="junk"):
        Store(str(tmp_path / "junk"))
    with sqlite3.connect(tmp_path / "future") as raw:
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(str(tmp_path / "future"))


def test_a_reader_finds_one_stored_file_stored_before_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sqlite")
    reader = Reader(path)
    try:
        assert reader.file_state(KEY, b"/a", 1000) is None  # no database yet
        assert reader.errors == 1
        store = Store(path)
        folder = Entry("dir", stat.S_IFDIR | 0o755, 0, 0, 0, 0)
        skipped = attrs.evolve(FILE, sha256="", hash_skipped="size 9 is over the cap 4")
        store.replace(KEY, {b"/a": FILE, b"/d": folder, b"/big": skipped}, 100)
        store.close()
        state = reader.file_state(KEY, b"/a", 101)
        assert state is not None
        assert (state.size, state.mode, state.uid, state.gid, state.mtime_ns) == (
            4,
            FILE.mode,
            1,
            2,
            5,
        )
        assert (state.sha256, state.ctime_ns, state.ino, state.dev) == ("a" * 64, 6, 7, 8)
        big = reader.file_state(KEY, b"/big", 101)
        assert big is not None
        assert (big.sha256, big.skipped) == ("", "size 9 is over the cap 4")
        assert reader.file_state(KEY, b"/a", 100) is None  # stored after (or at) the event
        assert reader.file_state(KEY, b"/d", 101) is None  # not a regular file
        assert reader.file_state(KEY, b"/x", 101) is None
        other = BaselineKey("shop", "pod-2", "app", "watcher-1", "s" * 32)
        assert reader.file_state(other, b"/a", 101) is None
        assert reader.errors == 1
    finally:
        reader.close()


def test_a_reader_reads_the_committed_baseline_beside_a_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sqlite")
    store = Store(path)
    store.replace(KEY, {b"/a": FILE}, 100)
    store.close()
    reader = Reader(path, timeout=0)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM entries")
        assert reader.file_state(KEY, b"/a", 101) is not None  # the old one, without waiting
        writer.execute("COMMIT")
        assert reader.file_state(KEY, b"/a", 101) is None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db().execute("DELETE FROM baselines")
    finally:
        writer.close()
        reader.close()


def test_an_update_writes_and_deletes_only_what_it_is_given(store: Store) -> None:
    store.replace(KEY, {b"/a": FILE, b"/b": FILE, b"/gone": FILE}, 1)
    edited = attrs.evolve(FILE, size=9)
    before = store._db.total_changes
    store.update(KEY, 2, {b"/b": edited, b"/new": FILE}, [b"/gone"], truncated=True)
    assert store._db.total_changes - before == 1 + 1 + 2  # baselines row, /gone, 2 writes
    assert store.load(KEY) == {b"/a": FILE, b"/b": edited, b"/new": FILE}
    assert store.baselines() == [(KEY, 2)]


def test_a_stored_baseline_is_read_by_path_and_row_by_row(store: Store) -> None:
    assert store.open(KEY) is None
    paths = [b"/a", b"/\xff", b"/d", b"/d/f", b"/d/s", b"/d/s/f", b"/d-x", b"/d0", b"/d/\xff"]
    entries = {path: attrs.evolve(FILE, size=i) for i, path in enumerate(paths)}
    store.replace(KEY, entries, 1)
    store.replace(attrs.evolve(KEY, pod_uid="pod-2"), {b"/d/g": FILE}, 1)
    stored = store.open(KEY)
    assert stored is not None
    found = stored.get(b"/a")
    assert found == entries[b"/a"]
    assert found is not None
    assert (found.ctime_ns, found.ino, found.dev) == (6, 7, 8)
    # In the order of a walk: a directory's entries, then another directory's.
    for path in [b"/d", b"/d/f", b"/d/s", b"/d/\xff", b"/d/s/f", b"/d-x", b"/d0", b"/\xff"]:
        assert stored.get(path) == entries[path], path
    for path in [b"/x", b"/d/x", b"/d/g", b"/d/s/g", b"/d/s/f/x"]:
        assert stored.get(path) is None, path
    assert dict(stored.entries()) == entries
