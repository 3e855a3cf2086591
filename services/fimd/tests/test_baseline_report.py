"""`GET /baselines` on fimd's metrics listener: a real SQLite store, a real HTTP server
(Metrics.serve), read beside the writer; /metrics stays prometheus_client's exposition."""

from __future__ import annotations

import json
import sqlite3
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.rootfs.walk import Entry
from services.fimd import baseline_report
from services.fimd.baseline_report import BaselineEndpoint, Subjects, document
from services.fimd.baseline_store import BaselineKey, Store, Summary, summaries
from services.fimd.metrics import Metrics

W1 = "0b3c9c1e-2f54-4a43-9d1e-6c1a4d1b2a01"
KEY = BaselineKey("shop", "pod-1", "app", W1, "s" * 32)
ORPHAN = BaselineKey("shop", "pod-gone", "app", W1, "s" * 32)
OTHER = BaselineKey("shop", "pod-1", "app", "another-watcher", "s" * 32)


def _entry(kind: str, size: int = 0, sha256: str = "", skipped: str = "") -> Entry:
    mode = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(kind, 0)
    return Entry(kind, mode | 0o644, 0, 0, size, 1, sha256=sha256, hash_skipped=skipped)


TREE = {
    b"/cfg": _entry("dir", 4096),
    b"/cfg/a": _entry("file", 10, sha256="a" * 64),
    b"/cfg/b": _entry("file", 32, sha256="b" * 64),
    b"/cfg/big": _entry("file", 1000, skipped="size 1000 > 100"),
    b"/cfg/link": _entry("symlink", 5),
    b"/cfg/fifo": _entry("other"),
}
SUBJECTS: Subjects = {("pod-1", "app", "s" * 32): ("web-0", ("/cfg",))}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    path = str(tmp_path / "baselines.sqlite")
    store = Store(path)
    store.replace(KEY, TREE, 1_764_583_200_000_000_000)  # 2025-12-01T10:00:00Z
    store.replace(ORPHAN, {b"/cfg": TREE[b"/cfg"]}, 1_764_583_200_000_000_000, truncated=True)
    store.replace(OTHER, {b"/x": TREE[b"/cfg/a"]}, 1)
    yield path, store
    store.close()


@pytest.fixture
def served(db: tuple[str, Store]) -> str:
    endpoint = BaselineEndpoint("n1", db[0], lambda uid: SUBJECTS if uid == W1 else {})
    port = Metrics().serve("127.0.0.1", 0, routes={"/baselines": endpoint.wsgi})
    return f"http://127.0.0.1:{port}"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own server
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_watchers_baselines_are_summed_up_per_pod_container_and_subject(served: str) -> None:
    code, doc = _get(f"{served}/baselines?watcher={W1}")
    assert code == 200
    assert (doc["node"], doc["watcher"], doc["shown"], doc["total"]) == ("n1", W1, 2, 2)
    assert doc["clipped"] is False
    held, orphan = doc["baselines"]  # by namespace, pod UID, container, subject
    assert held == {
        "namespace": "shop", "pod": "web-0", "podUID": "pod-1", "container": "app",
        "subject": "s" * 32, "paths": ["/cfg"], "watched": True, "entries": 6, "files": 3,
        "dirs": 1, "symlinks": 1, "other": 1, "bytes": 1042, "hashed": 2, "hashSkipped": 1,
        "updated": "2025-12-01T10:00:00.000000Z", "truncated": False,
    }  # fmt: skip
    assert (orphan["pod"], orphan["podUID"], orphan["watched"]) == ("", "pod-gone", False)
    assert "paths" not in orphan
    assert (orphan["entries"], orphan["dirs"], orphan["truncated"]) == (1, 1, True)


def test_metrics_are_served_as_before_beside_it(served: str) -> None:
    with urllib.request.urlopen(f"{served}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
        assert answer.headers["Content-Type"].startswith("text/plain")
    assert "# HELP fimd_baseline_scans_total" in text


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        ("", 400, "exactly one watcher"),
        (f"watcher={W1}&watcher={W1}", 400, "exactly one watcher"),
        ("watcher=Not_A_UID", 400, "not a Kubernetes UID"),
        ("watcher=" + "a" * 254, 400, "not a Kubernetes UID"),
        ("watcher=%00", 400, "not a Kubernetes UID"),
        ("a=1&" * 20 + f"watcher={W1}", 400, "Max number of fields exceeded"),
    ],
)
def test_a_bad_query_is_a_clear_400(served: str, query: str, code: int, says: str) -> None:
    got, doc = _get(f"{served}/baselines?{query}")
    assert got == code
    assert says in doc["error"]


def test_an_unknown_watcher_has_no_baselines(served: str) -> None:
    assert _get(f"{served}/baselines?watcher=nobody") == (
        200,
        {"node": "n1", "watcher": "nobody", "baselines": [], "shown": 0, "total": 0,
         "clipped": False},
    )  # fmt: skip


def test_without_a_database_it_says_so() -> None:
    endpoint = BaselineEndpoint("n1", "", lambda uid: {})
    port = Metrics().serve("127.0.0.1", 0, routes={"/baselines": endpoint.wsgi})
    code, doc = _get(f"http://127.0.0.1:{port}/baselines?watcher={W1}")
    assert code == 404
    assert "--baseline-db" in doc["error"]


def test_a_read_does_not_wait_for_the_writers_open_transaction(db: tuple[str, Store]) -> None:
    path, _ = db
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM entries")  # not committed: readers see the last commit
    try:
        (first, _) = summaries(path, W1, limit=10, seconds=5)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert first.entries == len(TREE)


def test_a_slow_read_is_stopped_and_answered_503(db: tuple[str, Store]) -> None:
    path, store = db
    many = {f"/cfg/{i}".encode(): TREE[b"/cfg/a"] for i in range(20_000)}
    store.replace(KEY, many, 1)
    answer = BaselineEndpoint("n1", path, lambda uid: {}, seconds=0).answer(f"watcher={W1}")
    assert answer.status.startswith("503")
    assert b"no answer within" in answer.body


def test_rows_are_capped_and_the_body_is_bounded(db: tuple[str, Store]) -> None:
    path, store = db
    long_paths = tuple(f"/{'p' * 4000}{i}" for i in range(64))
    keys = [BaselineKey("shop", f"pod-{i:05}", "app", W1, "s" * 32) for i in range(3000)]
    for key in keys[:40]:
        store.replace(key, {b"/x": TREE[b"/cfg/a"]}, 1)
    subjects = {(k.pod_uid, k.container, k.subject): ("web", long_paths) for k in keys}
    found = summaries(path, W1, limit=baseline_report.MAX_ROWS + 1, seconds=5)
    body = document("n1", W1, found, subjects, more=False)
    doc = json.loads(body)
    assert (doc["total"], doc["clipped"]) == (42, False)  # 40 + KEY + ORPHAN
    row = doc["baselines"][1]
    assert len(row["paths"]) == baseline_report.MAX_PATHS
    assert row["pathsOmitted"] == 64 - baseline_report.MAX_PATHS
    assert {len(p) for p in row["paths"]} == {baseline_report.MAX_PATH_CHARS}
    # Many rows: as many as fit the byte bound, the rest counted.
    rows = [
        Summary(k, 1, False, 1, 1, 0, 0, 0, 1, 1, 0) for k in keys
    ] * 2  # 6000 rows of about 4.5 KB
    body = document("n1", W1, rows, subjects, more=True)
    doc = json.loads(body)
    assert len(body) <= baseline_report.MAX_BODY_BYTES + 200
    assert doc["clipped"] is True
    assert 0 < doc["shown"] == len(doc["baselines"]) < doc["total"] == 6000


def test_a_version_1_database_gains_the_truncated_column(tmp_path: Path) -> None:
    path = str(tmp_path / "old.sqlite")
    with sqlite3.connect(path) as raw:
        raw.executescript(
            "CREATE TABLE baselines (id INTEGER PRIMARY KEY, namespace TEXT NOT NULL, "
            "pod_uid TEXT NOT NULL, container TEXT NOT NULL, watcher_uid TEXT NOT NULL, "
            "subject TEXT NOT NULL, updated_ns INTEGER NOT NULL, UNIQUE (namespace, pod_uid, "
            "container, watcher_uid, subject));"
            "INSERT INTO baselines VALUES (1, 'shop', 'pod-1', 'app', 'w', 's', 5);"
            "PRAGMA user_version=1;"
        )
    store = Store(path)
    try:
        assert store.baselines() == [(BaselineKey("shop", "pod-1", "app", "w", "s"), 5)]
        (summary,) = summaries(path, "w", limit=10, seconds=5)
        assert (summary.truncated, summary.entries) == (False, 0)
    finally:
        store.close()


def test_reads_beyond_the_concurrency_bound_are_refused(db: tuple[str, Store]) -> None:
    endpoint = BaselineEndpoint("n1", db[0], lambda uid: {})
    held = [endpoint._slots.acquire(blocking=False) for _ in range(baseline_report.MAX_CONCURRENT)]
    assert all(held)
    answer = endpoint.answer(f"watcher={W1}")
    assert answer.status.startswith("503")
    assert b"busy" in answer.body
    endpoint._slots.release()
    assert endpoint.answer(f"watcher={W1}").status == "200 OK"
