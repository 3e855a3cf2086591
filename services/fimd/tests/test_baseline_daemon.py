"""Baselines in the daemon: fake engines over real queues report READY, fimd's scanner walks
a real container root (a temporary directory behind a procfs-shaped directory), compares it
with the baseline in a real SQLite file and writes drift and scan lines. The walk, the store
and the diff are tested on their own in //libs/rootfs:walk_test, baseline_store_test and
baseline_test."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from fim.v1 import fim_pb2
from libs.fimnotify_api import wire
from libs.fimnotify_api.masks import IN_DELETE, IN_MODIFY
from services.fimd.baseline_store import BaselineKey, Store, summaries
from services.fimd.daemon import Daemon, key_of
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.scanner import Scanner
from services.fimd.tests.harness import (
    Capture,
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
    proc, rootfs = fake_container(tmp_path, PID, "ab" * 32)
    (rootfs / "data" / "app.conf").write_bytes(b"v1")
    (rootfs / "data" / "old").write_bytes(b"old")
    return proc, rootfs


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "baselines.sqlite"


def _watch() -> fim_pb2.WatchSpec:
    watch = spec(events=("modify",), recursive=True)
    watch.subjects[0].hash = "sha256"
    return watch


@contextmanager
def _fimd(
    resolver: FakeResolver,
    proc: str,
    db: Path,
    launcher: FakeLauncher | None = None,
    **scanner_args: Any,
) -> Iterator[tuple[Daemon, Capture, Metrics]]:
    """A running daemon whose scanner keeps its baselines in `db` (`scanner_args`: the
    Scanner's orphan_grace, clock)."""

    def make(writer: LineWriter, metrics: Metrics) -> Scanner:
        return Scanner(str(db), writer, metrics, proc_root=proc, max_bytes=1 << 20, **scanner_args)

    with running_daemon(resolver, launcher or FakeLauncher(), proc_root=proc, scanner=make) as (
        parts
    ):
        yield parts


def _kind(capture: Capture, kind: str) -> list[dict[str, Any]]:
    return [line for line in capture.json() if line.get("kind") == kind]


def _scans(capture: Capture, count: int = 1) -> list[dict[str, Any]]:
    """The scan lines, once there are at least `count`."""
    scans: list[dict[str, Any]] = wait_for(
        lambda: len(_kind(capture, "scan")) >= count and _kind(capture, "scan"),
        what=f"{count} scan line(s)",
    )
    return scans


def _activated(daemon: Daemon, capture: Capture, watch: fim_pb2.WatchSpec) -> None:
    """Creates the watch and waits until its first comparison is over: its scan line is
    written, then its baseline stored (the scanner is idle again)."""
    create_watch(daemon, watch)
    _scans(capture)
    wait_for(lambda: daemon.scanner is not None and daemon.scanner.idle(), what="stored")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored(db: Path) -> list[BaselineKey]:
    with closing(Store(str(db))) as store:
        return [key for key, _ in store.baselines()]


def test_changes_while_fimd_was_down_are_drift_with_before_and_after(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, rootfs = container
    with _fimd(resolver, proc, db) as (daemon, capture, _):
        create_watch(daemon, _watch())
        (first,) = _scans(capture)
    assert first["baseline"] is False  # no baseline yet: this one is made, no drift
    assert first["scanned"] == 3  # /data, app.conf, old
    assert (first["reason"], first["watcher"], first["pod"]) == ("activation", WATCHER, "web-0")
    # fimd is down: the container changes.
    (rootfs / "data" / "app.conf").write_bytes(b"version 2")
    (rootfs / "data" / "old").unlink()
    (rootfs / "data" / "new").write_bytes(b"new")
    with _fimd(resolver, proc, db) as (daemon, capture, metrics):
        create_watch(daemon, _watch())
        (scan,) = _scans(capture)
        drift = _kind(capture, "drift")
    assert (scan["baseline"], scan["added"], scan["removed"], scan["changed"]) == (True, 1, 1, 1)
    by_path = {line["path"]: line for line in drift}
    changed = by_path["/data/app.conf"]
    assert changed["change"] == "CHANGED"
    assert changed["before"]["sha256"] == _sha(b"v1")
    assert changed["after"]["sha256"] == _sha(b"version 2")
    assert "sha256" in changed["changed"]
    assert by_path["/data/new"]["change"] == "ADDED"
    assert by_path["/data/new"]["after"]["sha256"] == _sha(b"new")
    assert by_path["/data/old"]["change"] == "REMOVED"
    assert "after" not in by_path["/data/old"]
    assert metrics.drift.labels(WATCHER, "CHANGED")._value.get() == 1
    (key,) = _stored(db)
    with closing(Store(str(db))) as store:
        entries = store.load(key)
    assert entries is not None
    assert entries[b"/data/app.conf"].sha256 == _sha(b"version 2")  # the baseline moved on


def test_an_engine_restart_compares_again(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, rootfs = container
    launcher = FakeLauncher()
    with _fimd(resolver, proc, db, launcher) as (daemon, capture, _):
        _activated(daemon, capture, _watch())
        (rootfs / "data" / "app.conf").write_bytes(b"changed while not watched")
        launcher.holding(1).exit(-9)  # the engine dies; fimd adds the watch to a new one
        _scans(capture, 2)
        (drift,) = _kind(capture, "drift")
    assert drift["path"] == "/data/app.conf"
    assert drift["after"]["sha256"] == _sha(b"changed while not watched")


def test_a_subject_without_attributes_has_no_baseline(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    with _fimd(resolver, container[0], db) as (daemon, capture, _):
        create_watch(daemon, spec(events=("modify",)))
        wait_for(lambda: daemon.snapshot().watches_by_phase["active"] == 1, what="active")
        assert daemon.scanner is not None
        assert daemon.scanner.idle()
    assert not _kind(capture, "scan")


def test_destroyed_and_orphaned_baselines_are_removed(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    orphan = BaselineKey("shop", "pod-gone", "app", "watcher-1", "s" * 32)
    with closing(Store(str(db))) as store:
        store.replace(orphan, {}, 1)  # made long ago by a pod deleted while fimd was down
    watch = _watch()
    with _fimd(resolver, container[0], db, orphan_grace=0.0) as (daemon, capture, _):
        create_watch(daemon, watch)
        wait_for(lambda: capture.ops("baselines_removed"), what="the orphan removed")
        _scans(capture)
        assert [k.pod_uid for k in _stored(db)] == ["pod-uid-1"]
        daemon.destroy(key_of(watch.key))
        wait_for(lambda: len(capture.ops("baselines_removed")) == 2, what="its baseline removed")
    assert _stored(db) == []


def test_an_unusable_database_is_reported_and_fimd_goes_on(
    resolver: FakeResolver, container: tuple[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    launcher = FakeLauncher()
    with _fimd(resolver, container[0], tmp_path / "junk", launcher) as (daemon, capture, metrics):
        (op,) = wait_for(lambda: capture.ops("baseline_unavailable"), what="the error line")
        create_watch(daemon, _watch())
        wait_for(lambda: daemon.snapshot().watches_by_phase["active"] == 1, what="active")
        launcher.holding(1).send(_modified(b"/data/app.conf"))
        (line,) = wait_for(capture.events, what="the event line")
    assert "junk" in op["detail"]
    assert line["sha256"] == _sha(b"v1")
    assert "previous" not in line
    assert metrics.baseline_read_errors._value.get() == 1


class Clock:
    """Monotonic time that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_a_scan_interval_compares_again_and_reports_in_the_watch_state(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, rootfs = container
    clock = Clock()
    watch = _watch()
    watch.scan_interval_s = 60
    with _fimd(resolver, proc, db, clock=clock) as (daemon, capture, _):
        _activated(daemon, capture, watch)
        status = wait_for(
            lambda: daemon.state().watches[0].last_scan.reason and daemon.state().watches[0],
            what="the comparison in the watch state",
        )
        assert status.last_scan.reason == "activation"
        assert (status.last_scan.scanned, status.last_scan.changed) == (3, 0)
        assert daemon.scanner is not None
        (rootfs / "data" / "old").write_bytes(b"changed between scans")
        clock.offset += 61  # a minute later
        daemon.scanner.poke()
        scans = _scans(capture, 2)
        (drift,) = _kind(capture, "drift")
        status = wait_for(
            lambda: (
                daemon.state().watches[0].last_scan.reason == "scheduled"
                and daemon.state().watches[0]
            ),
            what="the scheduled scan in the watch state",
        )
    assert (scans[1]["reason"], scans[1]["changed"], scans[1]["baseline"]) == (
        "scheduled", 1, True,
    )  # fmt: skip
    assert (drift["path"], drift["reason"]) == ("/data/old", "scheduled")
    assert drift["after"]["sha256"] == _sha(b"changed between scans")
    assert status.last_scan.changed == 1
    assert status.last_scan.time.ToNanoseconds() > 0


def test_a_new_scan_request_compares_now(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, rootfs = container
    watch = _watch()
    with _fimd(resolver, proc, db) as (daemon, capture, _):
        _activated(daemon, capture, watch)
        first = wait_for(lambda: daemon.state().watches[0].last_scan.reason, what="state")
        assert (first, daemon.state().watches[0].last_scan.request) == ("activation", "")
        (rootfs / "data" / "new").write_bytes(b"new")
        watch.scan_request = "0123456789abcdef"
        create_watch(daemon, watch)
        scans = _scans(capture, 2)
        # The watch state says which request its last comparison answered.
        answered = wait_for(
            lambda: (
                daemon.state().watches[0].last_scan.request == watch.scan_request
                and daemon.state().watches[0].last_scan
            ),
            what="the answered request in the watch state",
        )
        create_watch(daemon, watch)  # the same request again: nothing new
        wait_for(lambda: daemon.scanner is not None and daemon.scanner.idle(), what="idle")
        (drift,) = _kind(capture, "drift")
    assert (answered.reason, answered.added, answered.scanned) == ("requested", 1, 4)
    assert [s["reason"] for s in scans] == ["activation", "requested"]
    assert (drift["change"], drift["path"], drift["reason"]) == ("ADDED", "/data/new", "requested")
    assert len(_kind(capture, "scan")) == 2


def test_a_restarted_container_is_compared_with_the_previous_ones_baseline(
    resolver: FakeResolver, container: tuple[str, Path], tmp_path: Path, db: Path
) -> None:
    proc, _ = container
    second = CONTAINER[:-4] + "cdef"
    rootfs2 = fake_container(tmp_path / "second", 4343, second.split("//")[1])[1]
    (Path(proc) / "4343").symlink_to(tmp_path / "second" / "proc" / "4343")
    (rootfs2 / "data" / "app.conf").write_bytes(b"written at start")
    (rootfs2 / "data" / "old").write_bytes(b"old")
    resolver.pids[second] = 4343
    watch = _watch()
    with _fimd(resolver, proc, db) as (daemon, capture, _):
        _activated(daemon, capture, watch)
        watch.container_id = second  # the kubelet restarted the container
        create_watch(daemon, watch)
        scans = _scans(capture, 2)
        drift = {d["path"]: d for d in _kind(capture, "drift")}["/data/app.conf"]
    assert scans[1]["reason"] == "activation"
    assert (drift["path"], drift["change"]) == ("/data/app.conf", "CHANGED")
    assert drift["before"]["sha256"] == _sha(b"v1")
    assert drift["after"]["sha256"] == _sha(b"written at start")


def test_a_destroyed_watch_created_again_within_the_grace_finds_its_baseline(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    """The controller destroys a watch while its container restarts and creates it again."""
    proc, rootfs = container
    watch = _watch()
    with _fimd(resolver, proc, db) as (daemon, capture, _):
        _activated(daemon, capture, watch)
        daemon.destroy(key_of(watch.key))
        (rootfs / "data" / "app.conf").write_bytes(b"written while not watched")
        create_watch(daemon, watch)
        scans = _scans(capture, 2)
        (drift,) = _kind(capture, "drift")
    assert scans[1]["baseline"] is True
    assert not capture.ops("baselines_removed")
    assert (drift["path"], drift["change"]) == ("/data/app.conf", "CHANGED")


def _modified(path: bytes, time_ns: int = 0) -> wire.EventRecord:
    return wire.EventRecord(time_ns or time.time_ns(), IN_MODIFY, 1, 0, path)


def test_the_first_event_of_a_path_has_its_stored_state_as_previous(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, rootfs = container
    (rootfs / "data" / "early").write_bytes(b"early")
    launcher = FakeLauncher()
    with _fimd(resolver, proc, db, launcher) as (daemon, capture, _):
        _activated(daemon, capture, _watch())
        (rootfs / "data" / "app.conf").write_bytes(b"version 2")
        (rootfs / "data" / "old").unlink()
        (rootfs / "data" / "new").write_bytes(b"new")
        engine = launcher.holding(1)
        engine.send(
            _modified(b"/data/app.conf"),
            _modified(b"/data/app.conf"),
            wire.EventRecord(time.time_ns(), IN_DELETE, 1, 0, b"/data/old"),
            _modified(b"/data/new"),
        )
        wait_for(lambda: len(capture.events()) == 4, what="four lines")
        (rootfs / "data" / "old").write_bytes(b"old again")
        engine.send(_modified(b"/data/old"), _modified(b"/data/early", 1))  # 1: before it
        lines = wait_for(lambda: len(capture.events()) == 6 and capture.events())
    first, second, gone, added, again, early = lines
    assert first["previous"]["sha256"] == _sha(b"v1")  # from the baseline
    assert first["sha256"] == _sha(b"version 2")
    assert second["previous"]["sha256"] == _sha(b"version 2")  # reported by the watch
    assert gone["previous"]["sha256"] == _sha(b"old")
    assert "sha256" not in gone
    assert "previous" not in added  # not in the baseline
    assert "previous" not in again  # reported gone since: the baseline's state is not it
    assert "previous" not in early  # the baseline was stored after it: may hold its change
    assert early["sha256"] == _sha(b"early")


def test_a_walk_cut_at_the_entry_cap_is_stored_as_truncated_and_named_for_the_endpoint(
    resolver: FakeResolver, container: tuple[str, Path], db: Path
) -> None:
    proc, _ = container
    watch = _watch()
    with _fimd(resolver, proc, db, max_entries=2) as (daemon, capture, _):
        _activated(daemon, capture, watch)
        (scan,) = _kind(capture, "scan")
        subjects = daemon.baseline_subjects(watch.key.watcher_uid)
        assert daemon.baseline_subjects("someone-else") == {}
        wait_for(lambda: daemon.scanner is not None and daemon.scanner.idle(), what="stored")
    (summary,) = summaries(str(db), watch.key.watcher_uid, limit=10, seconds=5)
    assert (scan["truncated"], summary.truncated, summary.entries) == (True, True, 2)
    key = summary.key
    pod, paths = subjects[(key.pod_uid, key.container, key.subject)]
    assert (pod, paths) == (watch.identity.pod_name, tuple(watch.subjects[0].paths))
