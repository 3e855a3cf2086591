from collections.abc import Sequence

import attrs

from services.fimd.supervisor import (
    BACKOFF_MAX,
    RESOLVE_RETRY,
    ExitKind,
    Notice,
    Phase,
    Process,
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


# --- exact transitions: every field of the watch and every action, after each step ----------


def _fields(sup: Supervisor) -> dict[str, object]:
    """The watch's scalar fields (its incarnations are checked separately)."""
    fields = attrs.asdict(sup.watches[KEY], recurse=False)
    del fields["current"], fields["retiring"], fields["key"]
    return fields


BASE = {
    "config_hash": "h1",
    "container_id": "cid",
    "target_pid": 100,
    "phase": Phase.ACTIVE,
    "since": 1.0,
    "reason": "",
    "message": "",
    "restarts": 0,
    "failures": 0,
    "retry_at": None,
    "needs_resolve": False,
    "degraded_by": None,
    "interrupted": False,
}


def test_exact_state_of_a_new_and_an_active_watch() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.5)
    assert _fields(sup) == {**BASE, "phase": Phase.PENDING, "since": 0.5}
    assert sup.watches[KEY].current == Process(1)
    sup.started(KEY, 1, 500)
    sup.started(KEY, 99, 600)  # unknown incarnation: ignored
    assert sup.watches[KEY].current == Process(1, pid=500)
    assert sup.ready(KEY, 1, watches=3, pending=0, now=1.0) == [
        Notice(KEY, "watch_active", detail="3 inotify watches")
    ]
    assert _fields(sup) == BASE
    assert sup.watches[KEY].current == Process(1, pid=500, ready=True, watches=3)
    # A rescan's READY: same phase (since unchanged), no notice.
    assert sup.ready(KEY, 1, watches=4, pending=2, now=7.0) == []
    assert _fields(sup) == {
        **BASE,
        "reason": "PathsPending",
        "message": "2 configured path(s) do not exist yet",
    }
    assert sup.ready(KEY, 1, watches=4, pending=0, now=8.0, limited=3) == []
    assert _fields(sup) == {
        **BASE,
        "reason": "WatchLimited",
        "message": "3 directories beyond the per-watch directory cap are not watched",
    }


def test_exact_state_after_a_rejected_config() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    assert sup.exited(KEY, 1, ExitKind.CONFIG_REJECTED, "too long", now=2.0) == [
        Notice(KEY, "watch_failed", "error", "too long")
    ]
    assert _fields(sup) == {
        **BASE,
        "phase": Phase.FAILED,
        "since": 2.0,
        "reason": "ConfigRejected",
        "message": "too long",
    }
    assert sup.watches[KEY].current is None
    changed, actions = sup.upsert(KEY, "h1", "cid", 101, now=3.0)
    assert (changed, actions) == (False, [Spawn(KEY, 2)])
    assert _fields(sup) == {
        **BASE,
        "target_pid": 101,
        "phase": Phase.PENDING,
        "since": 3.0,
        "reason": "Retrying",
    }


def test_exact_state_after_an_engine_died_and_the_watch_came_back() -> None:
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.ENGINE_DIED, "killed by SIGKILL", now=10.0)
    text = "engine exited (killed by SIGKILL); restart in 0.0s"
    assert actions == [Notice(KEY, "watcher_exited", "error", text), Resolve(KEY)]
    lost = {
        **BASE,
        "phase": Phase.PENDING,
        "since": 10.0,
        "reason": "Restarting",
        "message": text,
        "failures": 1,
        "needs_resolve": True,
        "interrupted": True,
    }
    assert _fields(sup) == lost
    assert sup.watches[KEY].current is None
    assert sup.tick(100.0) == []  # nothing scheduled: the Resolve was returned at once
    assert sup.resolved(KEY, 222, "", now=10.5) == [
        Spawn(KEY, inc + 1),
        Notice(KEY, "watcher_restarted", detail="target PID 222"),
    ]
    assert _fields(sup) == {
        **lost,
        "target_pid": 222,
        "message": "target PID 222",
        "restarts": 1,
        "needs_resolve": False,
    }
    # Resolved once: a second answer is ignored.
    assert sup.resolved(KEY, 333, "", now=10.6) == []
    assert sup.ready(KEY, inc + 1, watches=2, pending=0, now=11.0) == [
        Notice(KEY, "watch_resumed", detail="2 inotify watches")
    ]
    assert _fields(sup) == {**BASE, "target_pid": 222, "since": 11.0, "restarts": 1}


def test_exact_state_after_failures_with_backoff() -> None:
    sup = Supervisor()
    inc = _active(sup)
    actions = sup.exited(KEY, inc, ExitKind.FAILED, "GONE FAILED", now=10.0)
    text = "watch failed (GONE FAILED); restart in 0.5s"
    assert actions == [Notice(KEY, "watcher_exited", "error", text)]
    failed = {
        **BASE,
        "phase": Phase.PENDING,
        "since": 10.0,
        "reason": "Restarting",
        "message": text,
        "failures": 1,
        "retry_at": 10.5,
        "needs_resolve": True,
        "interrupted": True,
    }
    assert _fields(sup) == failed
    assert sup.tick(10.49) == []
    assert sup.tick(10.5) == [Resolve(KEY)]
    assert _fields(sup) == {**failed, "retry_at": None}
    assert sup.tick(10.6) == []  # once
    sup.resolved(KEY, 100, "", now=10.6)
    # A current incarnation the engine removed unasked (GONE REMOVED) fails like GONE FAILED.
    actions = sup.exited(KEY, inc + 1, ExitKind.STOPPED, "REMOVED", now=11.0)
    assert actions == [
        Notice(KEY, "watcher_exited", "error", "watch failed (REMOVED); restart in 1.0s")
    ]
    assert sup.watches[KEY].retry_at == 12.0


def test_exact_state_when_the_container_cannot_be_found() -> None:
    sup = Supervisor()
    inc = _active(sup)
    assert sup.exited(KEY, inc, ExitKind.TARGET_GONE, "no such process", now=3.0) == [
        Resolve(KEY),
        Notice(KEY, "target_gone", "warning", "no such process"),
    ]
    assert _fields(sup) == {
        **BASE,
        "phase": Phase.PENDING,
        "since": 3.0,
        "reason": "TargetGone",
        "message": "no such process",
        "failures": 1,
        "needs_resolve": True,
        "interrupted": True,
    }
    assert sup.resolved(KEY, 0, "no process of container cid", now=4.0) == [
        Notice(KEY, "watch_failed", "error", "no process of container cid")
    ]
    assert _fields(sup) == {
        **BASE,
        "phase": Phase.FAILED,
        "since": 4.0,
        "reason": "ContainerNotFound",
        "message": "no process of container cid",
        "failures": 1,
        "retry_at": 4.0 + RESOLVE_RETRY,
        "needs_resolve": True,
        "interrupted": True,
    }
    assert sup.tick(4.0 + RESOLVE_RETRY) == [Resolve(KEY)]
    sup.resolved(KEY, 7, "", now=10.0)
    assert _fields(sup)["phase"] is Phase.PENDING
    assert _fields(sup)["reason"] == "Restarting"


def test_exact_state_of_a_spec_update() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    # Updated before it was ever READY: the first incarnation watches nothing, stop it now.
    changed, actions = sup.upsert(KEY, "h2", "cid2", 200, now=1.0)
    assert (changed, actions) == (
        True,
        [Stop(KEY, 1), Spawn(KEY, 2), Notice(KEY, "watch_updated")],
    )
    assert _fields(sup) == {
        **BASE,
        "config_hash": "h2",
        "container_id": "cid2",
        "target_pid": 200,
        "phase": Phase.PENDING,
        "since": 0.0,
        "reason": "Updating",
    }
    assert sup.ready(KEY, 2, watches=1, pending=0, now=2.0) == [
        Notice(KEY, "watch_active", detail="1 inotify watches")
    ]
    # Updated while ACTIVE: the ready incarnation keeps watching until its successor is READY.
    changed, actions = sup.upsert(KEY, "h3", "cid2", 200, now=3.0)
    assert (changed, actions) == (True, [Spawn(KEY, 3), Notice(KEY, "watch_updated")])
    watch = sup.watches[KEY]
    assert list(watch.retiring) == [2]
    assert (watch.phase, watch.since, watch.reason) == (Phase.ACTIVE, 2.0, "")
    assert sup.ready(KEY, 2, watches=5, pending=0, now=3.5) == []  # the old one's rescan
    assert watch.retiring[2].watches == 5
    assert sup.exited(KEY, 2, ExitKind.ENGINE_DIED, "", now=4.0) == []  # retiring: forgotten
    assert watch.retiring == {}
    assert sup.ready(KEY, 3, watches=1, pending=0, now=5.0) == []  # nothing to switch from


def test_tick_skips_watches_with_a_current_incarnation() -> None:
    sup = Supervisor()
    inc = _active(sup)
    sup.exited(KEY, inc, ExitKind.FAILED, "x", now=1.0)
    sup.watches[KEY].current = Process(42)
    assert sup.tick(100.0) == []
    assert sup.watches[KEY].retry_at == 1.5
    sup.watches[KEY].current = None
    sup.watches[KEY].needs_resolve = False
    assert sup.tick(100.0) == []
    assert sup.watches[KEY].retry_at is None


def test_degraded_applies_to_the_current_incarnation_only() -> None:
    sup = Supervisor()
    old = _active(sup)
    sup.upsert(KEY, "h2", "cid", 100, now=5.0)
    sup.degraded(KEY, old, "WatchLimit", "from the retiring one")
    sup.degraded(KEY, 99, "WatchLimit", "unknown")
    assert (_fields(sup)["reason"], _fields(sup)["degraded_by"]) == ("", None)
    sup.degraded(KEY, old + 1, "PathError", "ENOENT /x")
    assert _fields(sup)["degraded_by"] == old + 1
    assert sup.ready(KEY, old + 1, watches=1, pending=3, now=6.0) == [
        Stop(KEY, old),
        Notice(KEY, "update_active", detail="1 inotify watches"),
    ]
    assert (_fields(sup)["reason"], _fields(sup)["message"]) == ("PathError", "ENOENT /x")


def test_destroy_of_a_watch_without_incarnation() -> None:
    sup = Supervisor()
    inc = _active(sup)
    sup.exited(KEY, inc, ExitKind.FAILED, "x", now=1.0)
    assert sup.destroy(KEY) == (True, [Notice(KEY, "watch_removed")])
    assert KEY not in sup.watches
    assert sup.resolved(KEY, 5, "", now=2.0) == []


def test_late_or_unasked_resolutions_are_ignored_and_restarts_add_up() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    sup.exited(KEY, 1, ExitKind.CONFIG_REJECTED, "bad", now=1.0)
    assert sup.resolved(KEY, 5, "", now=2.0) == []  # nothing asked for a resolution
    sup.upsert(KEY, "h1", "cid", 100, now=3.0)
    for inc, now in ((2, 4.0), (3, 5.0)):
        sup.exited(KEY, inc, ExitKind.TARGET_GONE, "", now=now)
        sup.resolved(KEY, 100 + inc, "", now=now)
    assert _fields(sup)["restarts"] == 2


def test_a_failed_watch_restarting_or_updated_starts_a_new_phase_now() -> None:
    sup = Supervisor()
    inc = _active(sup)
    sup.exited(KEY, inc, ExitKind.TARGET_GONE, "", now=2.0)
    sup.resolved(KEY, 0, "gone", now=3.0)  # FAILED since 3.0
    sup.tick(8.0)
    sup.resolved(KEY, 7, "", now=8.0)
    assert (_fields(sup)["phase"], _fields(sup)["since"]) == (Phase.PENDING, 8.0)
    sup.exited(KEY, inc + 1, ExitKind.TARGET_GONE, "", now=9.0)
    sup.resolved(KEY, 0, "gone", now=10.0)  # FAILED again
    sup.upsert(KEY, "h2", "cid", 100, now=11.0)  # a new spec
    assert (_fields(sup)["phase"], _fields(sup)["since"]) == (Phase.PENDING, 11.0)


def test_an_error_before_the_first_ready_is_kept_and_the_phase_starts_then() -> None:
    sup = Supervisor()
    sup.upsert(KEY, "h1", "cid", 100, now=0.0)
    sup.degraded(KEY, 1, "WatchLimit", "ENOSPC /data")
    sup.ready(KEY, 1, watches=1, pending=0, now=2.0)
    assert _fields(sup) | {"degraded_by": None} == {
        **BASE, "since": 2.0, "reason": "WatchLimit", "message": "ENOSPC /data"
    }  # fmt: skip
    other = Supervisor()
    other.upsert(KEY, "h1", "cid", 100, now=0.0)
    other.ready(KEY, 1, watches=1, pending=0, now=3.0, limited=2)
    assert (_fields(other)["phase"], _fields(other)["since"]) == (Phase.ACTIVE, 3.0)


def test_tick_looks_at_every_watch() -> None:
    sup = Supervisor()
    other = ("w", "p2", "c")
    for key in (KEY, other):
        _, actions = sup.upsert(key, "h1", "cid", 100, now=0.0)
        (spawn,) = _no_notices(actions)
        assert isinstance(spawn, Spawn)
        sup.exited(key, spawn.incarnation, ExitKind.FAILED, "x", now=1.0)
    sup.watches[KEY].current = Process(99)  # skipped: it has an incarnation
    assert sup.tick(10.0) == [Resolve(other)]
