from collections.abc import Sequence

from services.fimd.supervisor import (
    BACKOFF_MAX,
    ExitKind,
    Notice,
    Phase,
    Resolve,
    Spawn,
    Stop,
    Supervisor,
    backoff,
)

KEY = ("w", "p", "c")


def _no_notices(actions: Sequence[object]) -> list[object]:
    return [a for a in actions if not isinstance(a, Notice)]


def _active(sup: Supervisor) -> int:
    """Creates KEY and brings it to ACTIVE; returns the incarnation."""
    _, actions = sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    (spawn,) = _no_notices(actions)
    assert isinstance(spawn, Spawn)
    sup.started(KEY, spawn.incarnation, 500)
    sup.ready(KEY, spawn.incarnation, watches=3, pending=0, now=1.0)
    return spawn.incarnation


def test_create_spawns_and_ready_makes_active() -> None:
    sup = Supervisor()
    changed, actions = sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    assert changed
    assert actions == [Spawn(KEY, 1), Notice(KEY, "watch_added")]
    assert sup.watches[KEY].phase is Phase.PENDING
    sup.started(KEY, 1, 500)
    assert sup.ready(KEY, 1, watches=3, pending=1, now=2.0) == [
        Notice(KEY, "watch_active", detail="3 inotify watches")
    ]
    watch = sup.watches[KEY]
    assert (watch.phase, watch.since, watch.reason) == (Phase.ACTIVE, 2.0, "PathsPending")
    assert watch.current is not None
    assert (watch.current.pid, watch.current.watches) == (500, 3)


def test_same_spec_is_a_noop() -> None:
    sup = Supervisor()
    _active(sup)
    assert sup.upsert(KEY, "h1", "cid", 100, now=5.0) == (False, [])


def test_changed_spec_starts_new_before_stopping_old() -> None:
    sup = Supervisor()
    old = _active(sup)
    changed, actions = sup.upsert(KEY, "h2", "cid", 100, now=5.0)
    assert changed
    assert _no_notices(actions) == [Spawn(KEY, old + 1)]  # old keeps running
    assert sup.watches[KEY].phase is Phase.ACTIVE
    assert sup.ready(KEY, old + 1, watches=4, pending=0, now=6.0) == [
        Stop(KEY, old),
        Notice(KEY, "update_active", detail="4 inotify watches"),
    ]
    assert sup.exited(KEY, old, ExitKind.STOPPED, "", now=6.5) == []
    assert sup.watches[KEY].config_hash == "h2"
    assert sup.watches[KEY].retiring == {}


def test_failed_watch_is_resolved_again_with_exponential_backoff() -> None:
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.FAILED, "GONE FAILED", now=10.0)
    assert [a.msg for a in actions if isinstance(a, Notice)] == ["watcher_exited"]
    watch = sup.watches[KEY]
    assert (watch.phase, watch.reason) == (Phase.PENDING, "Restarting")
    assert sup.tick(10.4) == []
    assert sup.tick(10.5) == [Resolve(KEY)]  # every restart resolves the container again
    restart = sup.resolved(KEY, 100, "", now=10.6)
    assert _no_notices(restart) == [Spawn(KEY, inc + 1)]
    assert watch.restarts == 1
    sup.exited(KEY, inc + 1, ExitKind.FAILED, "again", now=11.0)
    assert watch.retry_at == 12.0  # second failure: 1 s
    assert backoff(100) == BACKOFF_MAX


def test_engine_death_restarts_at_once_then_backs_off_and_reports_the_gap() -> None:
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.ENGINE_DIED, "killed by SIGKILL", now=10.0)
    assert Resolve(KEY) in actions  # no waiting for a healthy watch
    watch = sup.watches[KEY]
    assert (watch.phase, watch.interrupted) == (Phase.PENDING, True)
    (spawn,) = _no_notices(sup.resolved(KEY, 100, "", now=10.1))
    assert spawn == Spawn(KEY, inc + 1)
    # Its new engine dies too before it is READY: now it waits.
    actions = sup.exited(KEY, inc + 1, ExitKind.ENGINE_DIED, "again", now=10.2)
    assert Resolve(KEY) not in actions
    assert watch.retry_at == 11.2
    assert sup.tick(11.2) == [Resolve(KEY)]
    sup.resolved(KEY, 100, "", now=11.3)
    assert sup.ready(KEY, inc + 2, watches=3, pending=0, now=11.5) == [
        Notice(KEY, "watch_resumed", detail="3 inotify watches")
    ]
    assert (watch.phase, watch.interrupted, watch.failures) == (Phase.ACTIVE, False, 0)


def test_target_gone_resolves_again() -> None:
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.TARGET_GONE, "", now=3.0)
    assert Resolve(KEY) in actions
    actions = sup.resolved(KEY, 0, "no process", now=3.1)
    watch = sup.watches[KEY]
    assert (watch.phase, watch.reason) == (Phase.FAILED, "ContainerNotFound")
    assert sup.tick(8.1) == [Resolve(KEY)]
    actions = sup.resolved(KEY, 222, "", now=8.2)
    assert Spawn(KEY, inc + 1) in actions
    assert (watch.target_pid, watch.phase, watch.restarts) == (222, Phase.PENDING, 1)


def test_a_mismatched_target_is_resolved_again_then_with_backoff_if_it_keeps_happening() -> None:
    """GONE TARGET_MISMATCH (a reused PID): resolve at once and say so; if the next
    incarnation is refused too before it is READY, wait instead of spinning."""
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.TARGET_MISMATCH, "start time differs", now=3.0)
    assert actions == [
        Resolve(KEY),
        Notice(KEY, "target_mismatch", "warning", "start time differs"),
    ]
    watch = sup.watches[KEY]
    assert watch.reason == "TargetMismatch"
    actions = sup.resolved(KEY, 222, "", now=3.1)
    assert Spawn(KEY, inc + 1) in actions
    actions = sup.exited(KEY, inc + 1, ExitKind.TARGET_MISMATCH, "again", now=3.2)
    assert actions == [Notice(KEY, "target_mismatch", "warning", "again")]
    assert sup.tick(3.3) == []
    assert sup.tick(3.2 + backoff(2)) == [Resolve(KEY)]


def test_losing_the_new_incarnation_during_an_update_keeps_the_old_one() -> None:
    sup = Supervisor()
    old = _active(sup)
    sup.upsert(KEY, "h2", "cid", 100, now=5.0)
    sup.exited(KEY, old + 1, ExitKind.ENGINE_DIED, "", now=6.0)
    watch = sup.watches[KEY]
    # The old incarnation still watches: ACTIVE, no gap.
    assert (watch.phase, watch.interrupted, list(watch.retiring)) == (Phase.ACTIVE, False, [old])
    assert Spawn(KEY, old + 2) in sup.resolved(KEY, 100, "", now=6.1)
    assert sup.ready(KEY, old + 2, 2, 0, now=6.5) == [
        Stop(KEY, old),
        Notice(KEY, "update_active", detail="2 inotify watches"),
    ]


def test_rejected_config_fails_without_retry_until_repeated() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    sup.exited(KEY, 1, ExitKind.CONFIG_REJECTED, "bad", now=1.0)
    assert sup.watches[KEY].phase is Phase.FAILED
    assert sup.tick(100.0) == []
    changed, actions = sup.upsert(KEY, "h1", "cid", 100, now=101.0)
    assert not changed
    assert actions == [Spawn(KEY, 2)]


def test_destroy_stops_every_process_and_is_idempotent() -> None:
    sup = Supervisor()
    old = _active(sup)
    sup.upsert(KEY, "h2", "cid", 100, now=5.0)
    existed, actions = sup.destroy(KEY)
    assert existed
    assert set(_no_notices(actions)) == {Stop(KEY, old), Stop(KEY, old + 1)}
    assert sup.destroy(KEY) == (False, [])
    # Late reports about forgotten processes are ignored.
    assert sup.exited(KEY, old, ExitKind.STOPPED, "", now=6.0) == []
    assert sup.ready(KEY, old + 1, 1, 0, now=6.0) == []


def test_degraded_keeps_active_with_reason() -> None:
    sup = Supervisor()
    inc = _active(sup)
    sup.degraded(KEY, inc, "WatchLimit", "ENOSPC /data/x")
    watch = sup.watches[KEY]
    assert (watch.phase, watch.reason) == (Phase.ACTIVE, "WatchLimit")
    # A rescan's READY of the same incarnation keeps what its error said.
    sup.ready(KEY, inc, watches=3, pending=0, now=2.0)
    assert watch.reason == "WatchLimit"


def test_directory_cap_makes_the_watch_limited() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    sup.ready(KEY, 1, watches=10, pending=1, now=1.0, limited=5)
    watch = sup.watches[KEY]
    assert (watch.phase, watch.reason) == (Phase.ACTIVE, "WatchLimited")
    assert watch.message.startswith("5 directories")
    sup.ready(KEY, 1, watches=10, pending=0, now=2.0)  # rescan: now all fit
    assert (watch.phase, watch.reason) == (Phase.ACTIVE, "")
