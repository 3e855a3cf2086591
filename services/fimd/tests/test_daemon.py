"""Daemon (the shell) with a fake resolver and fake engines, but real control pipes, real
message queues and the real wire format: what engines send becomes lines, state, restarts;
admission refuses what does not fit."""

from __future__ import annotations

import base64
import time

import posix_ipc
import pytest

from fim.v1 import fim_pb2
from fim.v1.config_hash import config_hash
from libs.fimnotify_api import control, wire
from services.fimd.budget import MIB, Budgets
from services.fimd.capacity import MemoryReading
from services.fimd.daemon import CapacityError, Daemon, PreconditionError, key_of
from services.fimd.tests.harness import (
    FakeEngine,
    FakeLauncher,
    FakeResolver,
    create_watch,
    running_daemon,
    wait_for,
)
from services.fimd.tests.specs import CONTAINER, spec

IN_MODIFY = 0x2
NEW_CONTAINER = "containerd://" + "cd" * 32


def _status(daemon: Daemon, pod_uid: str = "pod-uid-1") -> fim_pb2.WatchStatus:
    return next(w for w in daemon.state().watches if w.key.pod_uid == pod_uid)


def _active(daemon: Daemon, pod_uid: str = "pod-uid-1") -> fim_pb2.WatchStatus:
    status: fim_pb2.WatchStatus = wait_for(
        lambda: (s := _status(daemon, pod_uid)).phase == fim_pb2.WATCH_PHASE_ACTIVE and s,
        what=f"{pod_uid} ACTIVE",
    )
    return status


def _adds(engine: FakeEngine) -> list[control.AddWatch]:
    return [m for m in engine.received if isinstance(m, control.AddWatch)]


@pytest.fixture
def resolver() -> FakeResolver:
    resolver = FakeResolver()
    resolver.pids[CONTAINER] = 4242
    resolver.pids[NEW_CONTAINER] = 4343
    return resolver


def test_event_records_become_enriched_lines(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, metrics):
        changed, status = create_watch(daemon, spec(tags={"team": "payments"}))
        assert changed
        assert status.phase == fim_pb2.WATCH_PHASE_PENDING
        status = _active(daemon)
        engine = launcher.holding(1)
        (add,) = _adds(engine)
        assert (add.watch, add.pid, add.label) == (1, 4242, "shop/myapp-logs:web-0/app")
        assert add.identity.start_time == 77  # what the resolver found, checked by the engine
        assert "ab" * 32 in add.identity.cgroup_leaves
        assert add.subjects[0].paths == ("/data",)
        assert (status.pid, status.watcher_pid, status.inotify_watches) == (4242, engine.pid, 7)
        limits = daemon.state().limits
        assert (limits.inotify_watches_in_use, limits.inotify_instances_in_use) == (7, 2)
        engine.send(
            *[wire.EventRecord(i * 1000, IN_MODIFY, 1, 0, b"/data/f%d" % i) for i in range(3)]
        )
        events = wait_for(lambda: len(capture.events()) == 3 and capture.events())
        assert [e["path"] for e in events] == ["/data/f0", "/data/f1", "/data/f2"]
        assert events[0]["tags"] == {"team": "payments"}
        assert events[0]["watcher"] == "shop/myapp-logs"
        assert metrics.events.labels("shop/myapp-logs", "MODIFY")._value.get() == 3
        assert capture.ops("watch_added")
        assert capture.ops("watch_active")
        assert [line["engine"] for line in capture.ops("engine_started")] == ["e0", "e1"]


def test_same_spec_is_noop_and_changed_spec_overlaps(resolver: FakeResolver) -> None:
    launcher = FakeLauncher(auto=False)
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, spec(tags={"v": "1"}))
        old = launcher.holding(1)
        old.send(wire.ReadyRecord(1, 1, 3, 0))
        _active(daemon)
        changed, _ = create_watch(daemon, spec(tags={"v": "1"}))
        assert not changed
        changed, status = create_watch(daemon, spec(tags={"v": "2"}))
        assert changed
        assert status.phase == fim_pb2.WATCH_PHASE_ACTIVE
        new = launcher.holding(2)
        assert new is not old  # the engine with fewer watches
        time.sleep(0.1)
        assert not any(isinstance(m, control.RemoveWatch) for m in old.received)
        old.send(wire.EventRecord(1, IN_MODIFY, 1, 0, b"/data/during-switch"))
        new.send(wire.ReadyRecord(2, 2, 3, 0))
        wait_for(lambda: control.RemoveWatch(1) in old.received, what="old removed")
        old.send(wire.GoneRecord(3, 1, wire.GoneReason.REMOVED))
        new.send(wire.EventRecord(2, IN_MODIFY, 2, 0, b"/data/after"))
        events = wait_for(lambda: len(capture.events()) == 2 and capture.events())
        assert [(e["path"], e["tags"]) for e in events] == [
            ("/data/during-switch", {"v": "1"}),
            ("/data/after", {"v": "2"}),
        ]
        wait_for(lambda: daemon.pool.engine_of(1) is None, what="GONE processed")
        assert _status(daemon).phase == fim_pb2.WATCH_PHASE_ACTIVE
        assert not capture.ops("watcher_exited")


def test_killed_engine_restarts_and_its_watches_resume_with_the_gap_reported(
    resolver: FakeResolver,
) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, metrics):
        for pod in ("a", "b", "c"):  # e0, e1, e0: the engine with the fewest watches
            create_watch(daemon, spec(pod_uid=pod))
            _active(daemon, pod)
        victim, survivor = launcher.holding(1), launcher.holding(2)
        assert victim is launcher.holding(3) is not survivor
        calls = resolver.calls
        victim.exit(-9, wire.EventRecord(5, IN_MODIFY, 1, 0, b"/data/last-words"))
        for i in range(50):  # the other engine's watch keeps reporting meanwhile
            survivor.send(wire.EventRecord(i, IN_MODIFY, 2, 0, b"/data/b%d" % i))
        (exited,) = wait_for(lambda: capture.ops("engine_exited"), what="engine_exited")
        assert (exited["engine"], exited["watches"], exited["restart_in"]) == ("e0", 2, 0)
        assert exited["detail"] == "killed by SIGKILL"
        wait_for(lambda: capture.ops("engine_restarted"), what="engine_restarted")
        resumed = wait_for(lambda: len(capture.ops("watch_resumed")) == 2 and capture.ops(
            "watch_resumed"), what="watch_resumed lines")  # fmt: skip
        assert resumed[0]["gapStart"] <= resumed[0]["gapEnd"]
        assert resumed[0]["gapStart"].endswith("Z")
        restarted = launcher.engines[2]
        for pod in ("a", "c"):
            status = _active(daemon, pod)
            assert status.restarts == 1
            assert status.watcher_pid == restarted.pid
        # Both were resolved again, with one scan, before they were added again.
        assert resolver.calls == calls + 1
        assert metrics.engine_exits.labels("e0")._value.get() == 1
        events = wait_for(lambda: len(capture.events()) == 51 and capture.events())
        paths = {e["path"] for e in events}
        assert paths == {"/data/last-words"} | {f"/data/b{i}" for i in range(50)}
        assert _status(daemon, "b").restarts == 0
        restarted.send(wire.EventRecord(9, IN_MODIFY, _adds(restarted)[0].watch, 0, b"/data/x"))
        wait_for(lambda: any(e["path"] == "/data/x" for e in capture.events()))


def test_target_gone_and_mismatch_are_resolved_again(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, spec())
        _active(daemon)
        resolver.pids[CONTAINER] = 5555
        launcher.holding(1).send(
            wire.GoneRecord(9, 1, wire.GoneReason.TARGET_GONE, "pid 4242 gone")
        )
        assert launcher.holding(2).adds[2].pid == 5555
        gone = wait_for(lambda: capture.ops("target_gone"), what="target_gone line")
        assert gone[0]["detail"] == "TARGET_GONE: pid 4242 gone"
        assert _active(daemon).pid == 5555
        del resolver.pids[CONTAINER]
        launcher.holding(2).send(wire.GoneRecord(9, 2, wire.GoneReason.TARGET_MISMATCH, "reused"))
        wait_for(lambda: _status(daemon).phase == fim_pb2.WATCH_PHASE_FAILED, what="FAILED")
        assert _status(daemon).reason == "ContainerNotFound"


def test_failed_watch_is_retried_with_backoff(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        create_watch(daemon, spec())
        _active(daemon)
        launcher.holding(1).send(wire.GoneRecord(9, 1, wire.GoneReason.FAILED, "EACCES"))
        wait_for(lambda: _status(daemon).reason == "Restarting", what="Restarting")
        assert "watch failed (FAILED: EACCES); restart in 0.5s" in _status(daemon).message
        launcher.holding(2)  # added again after the backoff
        assert _active(daemon).restarts == 1
        # The op line goes through the writer thread, after the status changed.
        wait_for(lambda: capture.ops("watch_resumed"), what="watch_resumed line")


def test_status_records_become_op_lines_and_state(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1) as (daemon, capture, metrics):
        create_watch(daemon, spec(pod_uid="a"))
        create_watch(daemon, spec(pod_uid="b"))
        _active(daemon, "a")
        _active(daemon, "b")
        (engine,) = launcher.engines
        long_path = b"/data/x" + b"\xc3\xa9" * 600  # the engine cuts it inside an "é"
        engine.send(
            wire.OverflowRecord(1),
            wire.DroppedRecord(2, 1, 17),
            wire.ErrorRecord(3, 1, "ENOSPC", 0, b"/data/deep", "inotify watch limit reached"),
            wire.ErrorRecord(4, 2, "EDIRCAP", 0, long_path, "10000 directories", len(long_path)),
            wire.ReadyRecord(5, 2, 10000, 0, limited=42),
        )
        (limited,) = wait_for(lambda: capture.ops("watch_limited"), what="watch_limited")
        assert capture.ops("events_dropped")[0]["count"] == 17
        # One inotify instance for the engine: every watch on it may have lost events.
        assert {line["pod"] for line in capture.ops("inotify_overflow")} == {"web-0"}
        assert len(capture.ops("inotify_overflow")) == 2
        assert capture.ops("watch_error")[0]["code"] == "ENOSPC"
        cut = long_path[: wire.MAX_ERROR_PATH]
        assert limited["path"] == cut.decode("utf-8", "replace")
        assert limited["path"].endswith("é\ufffd")
        assert base64.b64decode(limited["pathBytes"]) == cut
        assert (limited["pathTruncated"], limited["pathSize"]) == (True, 1207)
        status = _status(daemon, "a")
        assert (status.phase, status.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "WatchLimit")
        status = wait_for(lambda: (s := _status(daemon, "b")).inotify_watches == 10000 and s)
        assert (status.phase, status.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "WatchLimited")
        assert status.message.endswith("... and the directories below it are not watched: "
                                       "10000 directories")  # fmt: skip
        assert metrics.dropped.labels("shop/myapp-logs", "fimnotify")._value.get() == 17


def test_lost_and_bad_messages_are_reported(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1) as (_, capture, metrics):
        (engine,) = launcher.engines
        engine._packer.seq += 2
        engine.send(wire.OverflowRecord(1))
        engine._queue.send(b"FN\x09 and garbage")
        (lost,) = wait_for(lambda: capture.ops("messages_lost"), what="messages_lost")
        assert (lost["engine"], lost["count"]) == ("e0", 2)
        (bad,) = wait_for(lambda: capture.ops("bad_message"), what="bad_message")
        assert "version 9" in bad["detail"]
        assert metrics.messages_lost.labels("e0")._value.get() == 3


def test_destroy_removes_the_watch_from_its_engine(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        watch = spec()
        create_watch(daemon, watch)
        engine = launcher.holding(1)
        assert daemon.destroy(key_of(watch.key))
        wait_for(lambda: control.RemoveWatch(1) in engine.received, what="RemoveWatch")
        assert daemon.state().watches == []
        assert not daemon.destroy(key_of(watch.key))
        wait_for(lambda: daemon.pool.engine_of(1) is None, what="GONE REMOVED")
        wait_for(lambda: capture.ops("watch_removed"), what="watch_removed line")
        assert daemon.state().limits.inotify_watches_in_use == 0


def test_unknown_container_is_a_precondition_error(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, _, _):
        with pytest.raises(PreconditionError, match="no process of container"):
            create_watch(daemon, spec(container_id="containerd://" + "ef" * 32))
        assert daemon.state().watches == []
        assert all(not e.received for e in launcher.engines)


def test_watches_beyond_a_budget_are_refused_and_change_nothing(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    memory = [MemoryReading(limit=None, working_set=10 * MIB)]
    budgets = Budgets(max_watches=2, memory_bytes=100 * MIB, watch_cost=MIB)
    with running_daemon(resolver, launcher, budgets=budgets, memory=lambda: memory[0]) as (
        daemon,
        capture,
        metrics,
    ):
        create_watch(daemon, spec(pod_uid="a"))
        create_watch(daemon, spec(pod_uid="b"))
        with pytest.raises(CapacityError) as err:
            create_watch(daemon, spec(pod_uid="c"))
        assert str(err.value) == "NodeCapacity: watches: 2 of 2 in use (budget: --max-watches 2)"
        assert sorted(w.key.pod_uid for w in daemon.state().watches) == ["a", "b"]
        # A changed spec of a held watch is no new watch.
        assert create_watch(daemon, spec(pod_uid="a", tags={"v": "2"}))[0]
        memory[0] = MemoryReading(limit=None, working_set=89 * MIB + 1)
        with pytest.raises(CapacityError, match=r"^NodeCapacity: memory: working set 89 MiB"):
            create_watch(daemon, spec(pod_uid="b", tags={"v": "2"}))
        assert metrics.rejected.labels("watches")._value.get() == 1
        assert metrics.rejected.labels("memory")._value.get() == 1
        rejected = wait_for(lambda: len(capture.ops("watch_rejected")) == 2 and capture.ops(
            "watch_rejected"))  # fmt: skip
        assert [line["budget"] for line in rejected] == ["watches", "memory"]
        assert _status(daemon, "b").config_hash == config_hash(spec(pod_uid="b"))
        assert len([m for e in launcher.engines for m in _adds(e)]) == 3  # a, b, a again


def test_no_engine_with_an_inotify_instance_refuses_watches(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1) as (daemon, _, _):
        (engine,) = launcher.engines
        engine.send(wire.ErrorRecord(1, wire.ENGINE, "EMFILE", None, b"", "no instance"))
        wait_for(lambda: daemon.pool.usable() == 0, what="engine unusable")
        assert daemon.state().limits.inotify_instances_in_use == 0
        with pytest.raises(CapacityError, match=r"^NodeCapacity: inotify instances: none of"):
            create_watch(daemon, spec())


def test_shutdown_writes_what_engines_sent_as_they_stopped(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher) as (daemon, capture, _):
        for watch, pod in enumerate(("a", "b"), start=1):
            create_watch(daemon, spec(pod_uid=pod))
            _active(daemon, pod)
            engine = launcher.holding(watch)
            # Sent when fimd closes the engine's stdin at shutdown, after the I/O loop ended:
            # only the final drain reads them, and only the writer's final flush prints them.
            engine.last_words = [
                wire.EventRecord(i, IN_MODIFY, watch, 0, b"/data/last-%s-%d" % (pod.encode(), i))
                for i in range(3)
            ]
        names = [e.queue_name for e in daemon.pool.engines]
        before = len(capture.events())
    assert before == 0
    assert sorted(e["path"] for e in capture.events()) == [
        f"/data/last-{pod}-{i}" for pod in ("a", "b") for i in range(3)
    ]
    assert {e["pod"] for e in capture.events()} == {"web-0"}
    assert [e.status for e in launcher.engines] == [0, 0]  # stdin closed: clean exits
    for name in names:
        with pytest.raises(posix_ipc.ExistentialError):
            posix_ipc.MessageQueue(name)
    assert len(capture.ops("watch_added")) == 2


def test_an_event_for_a_subject_the_watch_lacks_is_reported(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1) as (daemon, capture, metrics):
        create_watch(daemon, spec())
        _active(daemon)
        (engine,) = launcher.engines
        engine.send(
            wire.EventRecord(1, IN_MODIFY, 1, 5, b"/data/no-such-subject"),
            wire.EventRecord(2, IN_MODIFY, 1, 0, b"/data/fine"),
        )
        (bad,) = wait_for(lambda: capture.ops("bad_subject"), what="bad_subject")
        assert (bad["level"], bad["engine"], bad["watcher"]) == ("error", "e0", "shop/myapp-logs")
        (event,) = wait_for(capture.events, what="the good event")
        assert event["path"] == "/data/fine"
        assert metrics.events.labels("shop/myapp-logs", "MODIFY")._value.get() == 1


def test_event_lines_the_writer_drops_are_counted_per_watcher(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1, max_event_bytes=1) as (
        daemon,
        capture,
        metrics,
    ):
        create_watch(daemon, spec())
        _active(daemon)
        (engine,) = launcher.engines
        engine.send(*[wire.EventRecord(i, IN_MODIFY, 1, 0, b"/data/f%d" % i) for i in range(4)])
        engine.send(wire.EventRecord(9, IN_MODIFY, 1, 0, b"/data/g"))
        wait_for(
            lambda: metrics.dropped.labels("shop/myapp-logs", "output")._value.get() == 5,
            what="5 event lines dropped at the output",
        )
        assert metrics.output_dropped.labels("event", "buffer")._value.get() == 5
        assert metrics.events.labels("shop/myapp-logs", "MODIFY")._value.get() == 5
        reports = wait_for(lambda: capture.ops("output_dropped"), what="output_dropped line")
        assert sum(r["events"] for r in reports) <= 5
    assert capture.events() == []
    reports = capture.ops("output_dropped")
    assert sum(r["events"] for r in reports) == 5
    assert all(r["level"] == "error" and r["ops"] == 0 for r in reports)


def test_operational_lines_the_writer_drops_are_counted(resolver: FakeResolver) -> None:
    launcher = FakeLauncher()
    with running_daemon(resolver, launcher, engines=1, max_op_bytes=1) as (
        daemon,
        capture,
        metrics,
    ):
        create_watch(daemon, spec())
        _active(daemon)
        (engine,) = launcher.engines
        engine.send(wire.EventRecord(1, IN_MODIFY, 1, 0, b"/data/f"))
        wait_for(capture.events, what="the event (its buffer has room)")
        # engine_started, watch_added, watch_active: none fits a 1-byte buffer.
        dropped = metrics.output_dropped.labels("op", "buffer")
        wait_for(lambda: dropped._value.get() >= 3, what="3 op lines dropped")
    assert [line["msg"] for line in capture.json() if line["kind"] == "op"] == [
        "output_dropped"
    ] * len(capture.ops("output_dropped"))
    assert sum(r["ops"] for r in capture.ops("output_dropped")) == dropped._value.get()
