"""File attributes and hashes in the daemon: fake engines over real queues send event
records, fimd reads the real files through a container root (a temporary directory behind
a procfs-shaped directory: `<proc>/<pid>/root`) with its hash pool, and writes them on the
event lines in the order of the events. The reader itself is tested in
//libs/rootfs:reader_test, the rendering in test_attributes.py."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fim.v1 import fim_pb2
from libs.fimnotify_api import wire
from libs.fimnotify_api.masks import IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_ISDIR, IN_MODIFY
from libs.rootfs.reader import FileState, NotRegular
from services.fimd.hashing import HashPool, Job
from services.fimd.metrics import Metrics
from services.fimd.tests.harness import (
    FakeLauncher,
    FakeResolver,
    create_watch,
    fake_container,
    running_daemon,
    wait_for,
)
from services.fimd.tests.specs import CONTAINER, spec

PID = 4242
WATCHER = "shop/myapp-logs"


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver({CONTAINER: PID})


@pytest.fixture
def container(tmp_path: Path) -> tuple[str, Path]:
    return fake_container(tmp_path, PID, "ab" * 32)


def _watch(*, hash_: str = "sha256", attributes: bool = False) -> fim_pb2.WatchSpec:
    watch = spec(events=("create", "modify", "closewrite", "delete"))
    watch.subjects[0].hash = hash_
    watch.subjects[0].attributes = attributes
    return watch


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _value(metrics: Metrics, counter: str, *labels: str) -> float:
    value: float = getattr(metrics, counter).labels(*labels)._value.get()
    return value


def test_lines_carry_the_state_after_and_the_last_known_one(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, proc_root=proc) as (daemon, capture, _):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        (rootfs / "data" / "app.conf").write_bytes(b"v1")
        engine.send(wire.EventRecord(1, IN_CLOSE_WRITE, 1, 0, b"/data/app.conf"))
        wait_for(lambda: len(capture.events()) == 1, what="the first line")
        (rootfs / "data" / "app.conf").write_bytes(b"version 2")
        os.chmod(rootfs / "data" / "app.conf", 0o600)
        engine.send(wire.EventRecord(2, IN_CLOSE_WRITE, 1, 0, b"/data/app.conf"))
        wait_for(lambda: len(capture.events()) == 2, what="the second line")
        (rootfs / "data" / "app.conf").unlink()
        engine.send(wire.EventRecord(3, IN_DELETE, 1, 0, b"/data/app.conf"))
        first, second, gone = wait_for(lambda: capture.events()[2:] and capture.events())
    st_mode = "0600"
    assert first["sha256"] == _sha(b"v1")
    assert first["size"] == 2
    assert "previous" not in first
    assert second["sha256"] == _sha(b"version 2")
    assert (second["size"], second["mode"]) == (9, st_mode)
    assert second["uid"] == os.getuid()
    assert second["gid"] == os.getgid()
    assert second["previous"]["sha256"] == _sha(b"v1")
    assert second["previous"]["size"] == 2
    assert second["previous"]["mtime"] == first["mtime"]
    assert "sha256" not in gone
    assert "size" not in gone
    assert gone["previous"]["sha256"] == _sha(b"version 2")
    assert gone["event"] == "DELETE"


def test_directories_and_subjects_without_attributes_are_unchanged(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    (rootfs / "data" / "f").write_bytes(b"x")
    with running_daemon(resolver, launcher, proc_root=proc) as (daemon, capture, _):
        create_watch(daemon, _watch(hash_=""))
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(
            wire.EventRecord(1, IN_CREATE | IN_ISDIR, 1, 0, b"/data/d"),
            wire.EventRecord(2, IN_MODIFY, 1, 0, b"/data/f"),
        )
        lines = wait_for(lambda: capture.events()[1:] and capture.events(), what="two lines")
    assert set(lines[0]) == {
        "kind", "time", "node", "namespace", "pod", "container", "watcher", "event", "path",
        "isDir", "tags",
    }  # fmt: skip
    assert set(lines[1]) == set(lines[0])


def test_attributes_without_hash(resolver: FakeResolver, container: tuple[str, Path]) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    (rootfs / "data" / "f").write_bytes(b"abc")
    with running_daemon(resolver, launcher, proc_root=proc) as (daemon, capture, _):
        create_watch(daemon, _watch(hash_="", attributes=True))
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(wire.EventRecord(1, IN_MODIFY, 1, 0, b"/data/f"))
        (line,) = wait_for(capture.events, what="the line")
    assert line["size"] == 3
    assert "sha256" not in line
    assert "hashSkipped" not in line


def test_lines_keep_the_order_of_the_events(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    """Directory events need no file read, but wait for the file events before them."""
    proc, rootfs = container
    launcher = FakeLauncher()
    records: list[wire.Record] = []
    for i in range(200):
        (rootfs / "data" / f"f{i}").write_bytes(b"%d" % i * 1000)
        records.append(wire.EventRecord(i, IN_CLOSE_WRITE, 1, 0, b"/data/f%d" % i))
        records.append(wire.EventRecord(i, IN_CREATE | IN_ISDIR, 1, 0, b"/data/d%d" % i))
    with running_daemon(resolver, launcher, proc_root=proc) as (daemon, capture, _):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        for start in range(0, len(records), 50):
            engine.send(*records[start : start + 50])
        lines = wait_for(lambda: len(capture.events()) == 400 and capture.events())
    expected = [p for i in range(200) for p in (f"/data/f{i}", f"/data/d{i}")]
    assert [line["path"] for line in lines] == expected
    for i in range(200):
        assert lines[2 * i]["sha256"] == _sha(b"%d" % i * 1000)


class GatedPool(HashPool):
    """The real pool whose workers wait for `gate` before their first job, so that its
    backlog fills deterministically."""

    def __init__(self, backlog: int) -> None:
        super().__init__(workers=1, backlog=backlog)
        self.gate = threading.Event()

    def _work(self) -> None:
        self.gate.wait()
        super()._work()


def test_a_full_backlog_skips_the_hash_counts_and_reports_it(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    pool = GatedPool(backlog=2)
    for i in range(5):
        (rootfs / "data" / f"f{i}").write_bytes(b"%d" % i)
    with running_daemon(resolver, launcher, proc_root=proc, hashing=pool) as (
        daemon,
        capture,
        metrics,
    ):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(*[wire.EventRecord(i, IN_MODIFY, 1, 0, b"/data/f%d" % i) for i in range(5)])
        wait_for(lambda: capture.ops("hash_backlog_full"), what="the backlog op line")
        assert daemon.snapshot().hash_backlog == 2
        assert not capture.events()  # the first two wait for their hash, the rest behind them
        pool.gate.set()
        lines = wait_for(lambda: len(capture.events()) == 5 and capture.events())
        ops = wait_for(
            lambda: (
                sum(op["count"] for op in capture.ops("hash_backlog_full")) == 3
                and capture.ops("hash_backlog_full")
            ),
            what="every skipped file in an op line",
        )
    assert [line["path"] for line in lines] == [f"/data/f{i}" for i in range(5)]
    assert [line.get("sha256") for line in lines[:2]] == [_sha(b"0"), _sha(b"1")]
    for line in lines[2:]:
        assert line["hashSkipped"] == "the hash backlog is full"
        assert "sha256" not in line
    assert ops[0]["count"] == 1  # at once; the next ones at most a second later
    assert all(op["backlog"] == 2 for op in ops)
    assert _value(metrics, "hash_skipped", WATCHER, "backlog") == 3


def test_a_file_over_the_cap_gets_hash_skipped(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    (rootfs / "data" / "big").write_bytes(b"x" * 2048)
    pool = HashPool(max_bytes=1024)
    with running_daemon(resolver, launcher, proc_root=proc, hashing=pool) as (daemon, capture, _):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(wire.EventRecord(1, IN_MODIFY, 1, 0, b"/data/big"))
        (line,) = wait_for(capture.events, what="the line")
    assert line["hashSkipped"] == "size 2048 is over the cap 1024"
    assert line["size"] == 2048


def test_a_root_that_cannot_be_opened_is_reported_on_the_line(
    resolver: FakeResolver, tmp_path: Path
) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, proc_root=str(tmp_path)) as (daemon, capture, _):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(wire.EventRecord(1, IN_MODIFY, 1, 0, b"/data/f"))
        (line,) = wait_for(capture.events, what="the line")
    assert line["hashSkipped"].startswith("container root: process 4242 not found")


def test_stopping_writes_every_deferred_line(
    resolver: FakeResolver, container: tuple[str, Path]
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    pool = GatedPool(backlog=100)
    (rootfs / "data" / "f").write_bytes(b"f")
    with running_daemon(resolver, launcher, proc_root=proc, hashing=pool) as (
        daemon,
        capture,
        _,
    ):
        create_watch(daemon, _watch())
        engine = wait_for(lambda: launcher.holding(1), what="the watch on an engine")
        engine.send(*[wire.EventRecord(i, IN_MODIFY, 1, 0, b"/data/f") for i in range(10)])
        wait_for(lambda: daemon.hashing.backlog == 10, what="ten files waiting")
        pool.gate.set()  # fimd stops now; the lines are written before it has stopped
    lines = capture.events()
    assert len(lines) == 10
    assert all(line["sha256"] == _sha(b"f") for line in lines)


def _job_result(root: int, path: bytes) -> FileState | NotRegular | Any:
    job = Job(root, path, hash_content=True)
    pool = HashPool(workers=1, backlog=1)
    assert pool.submit(job)
    job.done.wait(5)
    pool.stop()
    return job.result


def test_the_pool_survives_a_bad_descriptor() -> None:
    assert _job_result(-1, b"/x") == NotRegular("EBADF")
    with pytest.raises(ValueError, match="at least 1"):
        HashPool(workers=0)


def test_jobs_for_a_file_that_waits_already_share_its_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"one")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    pool = GatedPool(backlog=3)
    try:
        jobs = [Job(root, b"/f", hash_content=True) for _ in range(3)]
        other = Job(root, b"/g", hash_content=True)
        assert all(pool.submit(job) for job in jobs)
        assert not pool.submit(other)  # followers count in the backlog too
        assert jobs[0].followers == jobs[1:]
        pool.gate.set()
        for job in jobs:
            assert job.done.wait(5)
        assert [job.result for job in jobs] == [jobs[0].result] * 3
        assert isinstance(jobs[0].result, FileState)
        assert jobs[0].result.sha256 == _sha(b"one")
        wait_for(lambda: pool.backlog == 0, what="an empty backlog")
        assert pool.submit(other)
    finally:
        pool.stop()
        os.close(root)


def test_a_job_reads_its_stored_state_in_the_worker_and_reuses_its_hash(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"one")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    pool = GatedPool(backlog=3)
    readers: list[str] = []
    try:
        st = os.stat(tmp_path / "f")
        stored = FileState(
            st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns,
            st.st_ino, st.st_dev, sha256="5" * 64,
        )  # fmt: skip

        def lookup() -> FileState:
            readers.append(threading.current_thread().name)
            return stored

        leader = Job(root, b"/f", True, lookup=lookup)
        follower = Job(root, b"/f", True)
        assert pool.submit(leader)
        assert pool.submit(follower)
        pool.gate.set()
        assert leader.done.wait(5)
        assert follower.done.wait(5)
    finally:
        pool.stop()
        os.close(root)
    assert readers == ["fimd-hash-0"]  # in the worker, once: the follower has no lookup
    assert (leader.stored, follower.stored) == (stored, None)
    assert isinstance(leader.result, FileState)
    assert leader.result.sha256 == "5" * 64  # unchanged since stored: not read again
