"""Daemon (the shell) with fake resolver and spawner, but real message queues and the real
wire format: what fimnotify sends becomes lines, state and restarts."""

from __future__ import annotations

import posix_ipc
import pytest

from fim.v1 import fim_pb2
from services.fimd.daemon import Daemon, PreconditionError, accept, key_of
from services.fimd.tests.harness import (
    Capture,
    FakeResolver,
    FakeSpawner,
    running_daemon,
    wait_for,
)
from services.fimd.tests.specs import CONTAINER, spec
from libs.fimnotify_api import wire

IN_MODIFY = 0x2
NEW_CONTAINER = "containerd://" + "cd" * 32


def _create(daemon: Daemon, watch: fim_pb2.WatchSpec) -> tuple[bool, fim_pb2.WatchStatus]:
    return daemon.create(accept(fim_pb2.CreateWatchRequest(spec=watch), daemon.node))


def _status(daemon: Daemon) -> fim_pb2.WatchStatus:
    (status,) = daemon.state().watches
    return status


@pytest.fixture
def resolver() -> FakeResolver:
    resolver = FakeResolver()
    resolver.pids[CONTAINER] = 4242
    return resolver


def _ready(spawner: FakeSpawner, daemon: Daemon, index: int = -1) -> None:
    spawner.children[index].send(wire.ReadyRecord(1, watches=7, pending=0))
    wait_for(lambda: _status(daemon).phase == fim_pb2.WATCH_PHASE_ACTIVE, what="ACTIVE")


def test_event_records_become_enriched_lines(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, metrics):
        changed, status = _create(daemon, spec(tags={"team": "payments"}))
        assert changed
        assert status.phase == fim_pb2.WATCH_PHASE_PENDING
        (child,) = spawner.children
        assert child.config.pid == 4242
        assert child.config.subjects[0].paths == ("/data",)
        _ready(spawner, daemon)
        status = _status(daemon)
        assert (status.pid, status.watcher_pid, status.inotify_watches) == (4242, child.pid, 7)
        assert daemon.state().limits.inotify_watches_in_use == 7
        child.send(*[wire.EventRecord(i * 1000, IN_MODIFY, 0, b"/data/f%d" % i) for i in range(3)])
        events = wait_for(lambda: len(capture.events()) == 3 and capture.events())
        assert [e["path"] for e in events] == ["/data/f0", "/data/f1", "/data/f2"]
        assert events[0]["tags"] == {"team": "payments"}
        assert events[0]["watcher"] == "shop/myapp-logs"
        assert metrics.events.labels("shop/myapp-logs", "MODIFY")._value.get() == 3
        assert capture.ops("watch_added")
        assert capture.ops("watch_active")


def test_same_spec_is_noop_and_changed_spec_overlaps(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, _):
        _create(daemon, spec(tags={"v": "1"}))
        _ready(spawner, daemon)
        changed, _ = _create(daemon, spec(tags={"v": "1"}))
        assert not changed
        assert len(spawner.children) == 1
        changed, status = _create(daemon, spec(tags={"v": "2"}))
        assert changed
        assert status.phase == fim_pb2.WATCH_PHASE_ACTIVE
        old, new = spawner.children
        assert not old.terminated  # still watching until the new one is ready
        old.send(wire.EventRecord(1, IN_MODIFY, 0, b"/data/during-switch"))
        _ready(spawner, daemon)
        wait_for(lambda: old.terminated, what="old stopped")
        new.send(wire.EventRecord(2, IN_MODIFY, 0, b"/data/after"))
        events = wait_for(lambda: len(capture.events()) == 2 and capture.events())
        assert [(e["path"], e["tags"]) for e in events] == [
            ("/data/during-switch", {"v": "1"}),
            ("/data/after", {"v": "2"}),
        ]


def test_crashed_watcher_is_restarted_with_backoff(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, metrics):
        _create(daemon, spec())
        _ready(spawner, daemon)
        spawner.children[0].exit(1, wire.EventRecord(5, IN_MODIFY, 0, b"/data/last-words"))
        wait_for(lambda: capture.ops("watcher_exited"), what="exit reported")
        assert wait_for(capture.events)[0]["path"] == "/data/last-words"
        wait_for(lambda: len(spawner.children) == 2, what="restart")
        _ready(spawner, daemon)
        assert _status(daemon).restarts == 1
        assert metrics.restarts.labels("shop/myapp-logs")._value.get() == 1


def test_target_gone_is_resolved_again(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, _):
        _create(daemon, spec())
        _ready(spawner, daemon)
        resolver.pids[CONTAINER] = 5555
        spawner.children[0].exit(
            int(wire.ExitStatus.TARGET_GONE),
            wire.ExitRecord(9, wire.ExitReason.TARGET_GONE, 3, "pid 4242 gone"),
        )
        wait_for(lambda: len(spawner.children) == 2, what="respawn")
        assert spawner.children[1].config.pid == 5555
        gone = wait_for(lambda: capture.ops("target_gone"), what="target_gone line")
        assert gone[0]["detail"].endswith("pid 4242 gone")
        del resolver.pids[CONTAINER]
        spawner.children[1].exit(int(wire.ExitStatus.TARGET_GONE))
        wait_for(lambda: _status(daemon).phase == fim_pb2.WATCH_PHASE_FAILED, what="FAILED")
        assert _status(daemon).reason == "ContainerNotFound"


def test_status_records_become_op_lines_and_state(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, metrics):
        _create(daemon, spec())
        _ready(spawner, daemon)
        spawner.children[0].send(
            wire.OverflowRecord(1),
            wire.DroppedRecord(2, 17),
            wire.ErrorRecord(3, "ENOSPC", 0, b"/data/deep", "inotify watch limit reached"),
        )
        wait_for(lambda: capture.ops("watch_error"), what="error line")
        assert capture.ops("events_dropped")[0]["count"] == 17
        assert capture.ops("inotify_overflow")[0]["pod"] == "web-0"
        status = _status(daemon)
        assert (status.phase, status.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "WatchLimit")
        assert metrics.dropped.labels("shop/myapp-logs", "fimnotify")._value.get() == 17


def test_destroy_stops_the_child_and_removes_its_queue(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, _):
        watch = spec()
        _create(daemon, watch)
        child = spawner.children[0]
        assert daemon.destroy(key_of(watch.key))
        assert child.terminated
        assert daemon.state().watches == []
        assert not daemon.destroy(key_of(watch.key))

        def queue_gone() -> bool:
            try:
                posix_ipc.MessageQueue(child.config.queue_name).close()
            except posix_ipc.ExistentialError:
                return True
            return False

        wait_for(queue_gone, what="queue unlinked")
        wait_for(lambda: capture.ops("watch_removed"), what="watch_removed line")


def test_unknown_container_is_a_precondition_error(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, _, _):
        with pytest.raises(PreconditionError, match="no process of container"):
            _create(daemon, spec(container_id=NEW_CONTAINER))
        assert daemon.state().watches == []
        assert spawner.children == []


def test_shutdown_stops_children_and_flushes(resolver: FakeResolver) -> None:
    spawner = FakeSpawner()
    with running_daemon(resolver, spawner) as (daemon, capture, _):
        _create(daemon, spec(pod_uid="a"))
        _create(daemon, spec(pod_uid="b"))
    assert all(child.terminated for child in spawner.children)
    assert isinstance(capture, Capture)
    assert len(capture.ops("watch_added")) == 2
