"""The supervision state machine: desired watches + observed engine records -> actions.

Pure: no I/O, no clock, no threads. The shell (`services.fimd.daemon`) feeds it requests
(`upsert`, `destroy`), observations (`started`, `ready`, `degraded`, `exited`, `resolved`)
and the time (`tick`), and executes the returned actions:

- `Spawn(key, incarnation)`: add the watch's current spec and target to an engine of the
  pool under the wire watch number `incarnation` (AddWatch); report `started`, or `exited`
  (FAILED) if no engine can take it.
- `Stop(key, incarnation)`: remove that incarnation from its engine (RemoveWatch); its GONE
  REMOVED record is reported with `exited`.
- `Resolve(key)`: resolve the watch's container ID again; report `resolved`.
- `Notice(...)`: an operational line (and metrics) about a state change.

Every incarnation of a watch has its own number, unique for the life of fimd (the `watch` of
every record about it). A spec change adds a new incarnation first and removes the old ones
only when the new one is READY (or gone), so the switch has no window without a watch (events
may be reported twice during the overlap, never missed). An incarnation that ends unasked
(its engine died, the engine gave up on it, or its container process vanished) is added again
after the container ID has been resolved again: at once the first time, with exponential
backoff when it keeps failing before it gets READY. A watch that was ACTIVE and lost its only
incarnation reports `watch_resumed` (not `watch_active`) when it is READY again, so the shell
can report the gap.
"""

from __future__ import annotations

import enum

import attrs

from libs import backoff as _backoff

#: (watcher_uid, pod_uid, container_name)
Key = tuple[str, str, str]

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
RESOLVE_RETRY = 5.0


class Phase(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"


class ExitKind(enum.Enum):
    """How a watch incarnation ended (from its GONE record, or its engine's exit)."""

    STOPPED = "stopped"  # removed on request (GONE REMOVED)
    FAILED = "failed"  # could not be set up or kept (GONE FAILED, no engine): retry with backoff
    TARGET_GONE = "target_gone"  # the container process vanished: resolve again now
    TARGET_MISMATCH = "target_mismatch"  # the PID is another process (reused): resolve again
    ENGINE_DIED = "engine_died"  # its engine exited: resolve and add again now
    CONFIG_REJECTED = "config_rejected"  # cannot be sent to an engine: retrying cannot help


@attrs.frozen
class Spawn:
    key: Key
    incarnation: int


@attrs.frozen
class Stop:
    key: Key
    incarnation: int


@attrs.frozen
class Resolve:
    key: Key


@attrs.frozen
class Notice:
    key: Key
    msg: str
    level: str = "info"
    detail: str = ""


Action = Spawn | Stop | Resolve | Notice


@attrs.define
class Process:
    """One incarnation of a watch (one AddWatch to one engine)."""

    incarnation: int
    pid: int = 0  # the engine's
    ready: bool = False
    watches: int = 0


@attrs.define
class Watch:
    """What the supervisor knows about one watch."""

    key: Key
    config_hash: str
    container_id: str
    target_pid: int  # 0 = unresolved
    phase: Phase
    since: float
    reason: str = ""
    message: str = ""
    current: Process | None = None
    retiring: dict[int, Process] = attrs.field(factory=dict)
    restarts: int = 0
    failures: int = 0  # consecutive, for the backoff
    retry_at: float | None = None
    needs_resolve: bool = False
    #: The incarnation whose error set `reason` (kept when that incarnation reports READY).
    degraded_by: int | None = None
    #: It was ACTIVE and lost its only incarnation: not watched until READY again.
    interrupted: bool = False


def backoff(failures: int) -> float:
    return _backoff.delay(failures, base=BACKOFF_BASE, cap=BACKOFF_MAX)


class Supervisor:
    """All watches of this fimd; see the module docstring."""

    def __init__(self) -> None:
        self.watches: dict[Key, Watch] = {}
        self._next_incarnation = 1

    def _spawn(self, watch: Watch) -> Spawn:
        incarnation = self._next_incarnation
        self._next_incarnation += 1
        watch.current = Process(incarnation)
        watch.retry_at = None
        return Spawn(watch.key, incarnation)

    @staticmethod
    def _set_phase(watch: Watch, phase: Phase, now: float, reason: str = "", msg: str = "") -> None:
        if watch.phase is not phase:
            watch.since = now
        watch.phase, watch.reason, watch.message = phase, reason, msg

    def _retire_current(self, watch: Watch) -> list[Action]:
        """Keeps a ready current incarnation until its successor is ready."""
        old, watch.current = watch.current, None
        if old is None:
            return []
        if old.ready:
            watch.retiring[old.incarnation] = old
            return []
        return [Stop(watch.key, old.incarnation)]  # it watches nothing yet: remove now

    def upsert(
        self, key: Key, config_hash: str, container_id: str, target_pid: int, now: float
    ) -> tuple[bool, list[Action]]:
        """A CreateWatch whose container ID resolved to `target_pid`; returns (changed, actions)."""
        watch = self.watches.get(key)
        if watch is None:
            watch = Watch(key, config_hash, container_id, target_pid, Phase.PENDING, now)
            self.watches[key] = watch
            return True, [self._spawn(watch), Notice(key, "watch_added")]
        if watch.config_hash == config_hash:
            if watch.phase is not Phase.FAILED:
                return False, []
            # The caller repeats a failed watch: retry now rather than wait for the timer.
            watch.target_pid, watch.failures, watch.needs_resolve = target_pid, 0, False
            self._set_phase(watch, Phase.PENDING, now, "Retrying")
            return False, [*self._retire_current(watch), self._spawn(watch)]
        watch.config_hash, watch.container_id, watch.target_pid = (
            config_hash,
            container_id,
            target_pid,
        )
        watch.failures, watch.needs_resolve = 0, False
        actions = self._retire_current(watch)
        if watch.phase is not Phase.ACTIVE:
            self._set_phase(watch, Phase.PENDING, now, "Updating")
        actions += [self._spawn(watch), Notice(key, "watch_updated")]
        return True, actions

    def destroy(self, key: Key) -> tuple[bool, list[Action]]:
        """Forgets the watch; returns (existed, actions)."""
        watch = self.watches.pop(key, None)
        if watch is None:
            return False, []
        actions: list[Action] = [Stop(key, inc) for inc in watch.retiring]
        if watch.current is not None:
            actions.append(Stop(key, watch.current.incarnation))
        return True, [*actions, Notice(key, "watch_removed")]

    def _process(self, key: Key, incarnation: int) -> tuple[Watch, Process] | None:
        watch = self.watches.get(key)
        if watch is None:
            return None
        if watch.current is not None and watch.current.incarnation == incarnation:
            return watch, watch.current
        proc = watch.retiring.get(incarnation)
        return None if proc is None else (watch, proc)

    def started(self, key: Key, incarnation: int, pid: int) -> None:
        found = self._process(key, incarnation)
        if found is not None:
            found[1].pid = pid

    def ready(
        self,
        key: Key,
        incarnation: int,
        watches: int,
        pending: int,
        now: float,
        *,
        limited: int = 0,
    ) -> list[Action]:
        """The engine reported the incarnation's inotify watches in place (after the add or a
        rescan): `pending` configured paths do not exist yet, `limited` directories were left
        out by the per-watch directory cap."""
        found = self._process(key, incarnation)
        if found is None:
            return []
        watch, proc = found
        proc.ready, proc.watches = True, watches
        if proc is not watch.current:
            return []
        first = watch.phase is not Phase.ACTIVE or watch.interrupted
        if watch.degraded_by == incarnation:
            self._set_phase(watch, Phase.ACTIVE, now, watch.reason, watch.message)
        elif limited:
            text = f"{limited} directories beyond the per-watch directory cap are not watched"
            self._set_phase(watch, Phase.ACTIVE, now, "WatchLimited", text)
        elif pending:
            text = f"{pending} configured path(s) do not exist yet"
            self._set_phase(watch, Phase.ACTIVE, now, "PathsPending", text)
        else:
            self._set_phase(watch, Phase.ACTIVE, now)
        watch.failures = 0
        actions: list[Action] = [Stop(key, inc) for inc in watch.retiring]
        switched = bool(watch.retiring)
        watch.retiring.clear()
        if first:
            msg = "watch_resumed" if watch.interrupted else "watch_active"
            actions.append(Notice(key, msg, detail=f"{watches} inotify watches"))
        elif switched:  # an updated spec is in effect from now on; the old one is removed
            actions.append(Notice(key, "update_active", detail=f"{watches} inotify watches"))
        watch.interrupted = False
        return actions

    def degraded(self, key: Key, incarnation: int, reason: str, message: str) -> None:
        """The incarnation could not watch everything (inotify watch limit, directory cap,
        a path error): ACTIVE stays ACTIVE, with this reason."""
        found = self._process(key, incarnation)
        if found is not None and found[1] is found[0].current:
            watch = found[0]
            watch.reason, watch.message, watch.degraded_by = reason, message, incarnation

    def exited(
        self, key: Key, incarnation: int, kind: ExitKind, detail: str, now: float
    ) -> list[Action]:
        found = self._process(key, incarnation)
        if found is None:
            return []
        watch, proc = found
        if proc is not watch.current:
            del watch.retiring[incarnation]
            return []
        watch.current = None
        if kind is ExitKind.STOPPED:
            # Nobody removes a current incarnation; if an engine does, add it again.
            kind = ExitKind.FAILED
        if kind is ExitKind.CONFIG_REJECTED:
            self._set_phase(watch, Phase.FAILED, now, "ConfigRejected", detail)
            return [Notice(key, "watch_failed", "error", detail)]
        # Still watched by an incarnation of the previous spec: ACTIVE, but restarting.
        phase = Phase.ACTIVE if watch.retiring else Phase.PENDING
        if watch.phase is Phase.ACTIVE and not watch.retiring:
            watch.interrupted = True
        watch.needs_resolve = True
        if kind in (ExitKind.TARGET_GONE, ExitKind.TARGET_MISMATCH):
            return self._retarget(watch, kind, detail, phase, now)
        watch.failures += 1
        # A healthy watch whose engine died is added again at once; one that keeps failing
        # before it is READY (possibly what kills its engine) waits.
        first_loss = kind is ExitKind.ENGINE_DIED and watch.failures == 1
        delay = 0.0 if first_loss else backoff(watch.failures)
        what = "engine exited" if kind is ExitKind.ENGINE_DIED else "watch failed"
        text = f"{what} ({detail}); restart in {delay:.1f}s"
        self._set_phase(watch, phase, now, "Restarting", text)
        notice = Notice(key, "watcher_exited", "error", text)
        if first_loss:
            return [notice, Resolve(key)]
        watch.retry_at = now + delay
        return [notice]

    def _retarget(
        self, watch: Watch, kind: ExitKind, detail: str, phase: Phase, now: float
    ) -> list[Action]:
        """The target process is gone or is another one: resolve the container again, at
        once the first time, with backoff when it keeps happening before the watch is READY
        (an engine and the resolver that disagree must not spin)."""
        watch.failures += 1
        reason = "TargetGone" if kind is ExitKind.TARGET_GONE else "TargetMismatch"
        self._set_phase(watch, phase, now, reason, detail)
        notice = Notice(watch.key, kind.value, "warning", detail)
        if watch.failures == 1:
            return [Resolve(watch.key), notice]
        watch.retry_at = now + backoff(watch.failures)
        return [notice]

    def resolved(self, key: Key, target_pid: int, detail: str, now: float) -> list[Action]:
        """Result of a Resolve action: the new target PID, or 0 with the reason."""
        watch = self.watches.get(key)
        if watch is None or not watch.needs_resolve or watch.current is not None:
            return []
        if target_pid == 0:
            watch.retry_at = now + RESOLVE_RETRY
            self._set_phase(watch, Phase.FAILED, now, "ContainerNotFound", detail)
            return [Notice(key, "watch_failed", "error", detail)]
        watch.needs_resolve, watch.target_pid = False, target_pid
        watch.restarts += 1
        detail = f"target PID {target_pid}"
        if watch.phase is not Phase.ACTIVE:
            self._set_phase(watch, Phase.PENDING, now, "Restarting", detail)
        notice = Notice(key, "watcher_restarted", detail=detail)
        return [*self._retire_current(watch), self._spawn(watch), notice]

    def tick(self, now: float) -> list[Action]:
        """Re-resolutions (and so restarts) whose time has come."""
        actions: list[Action] = []
        for watch in self.watches.values():
            if watch.retry_at is None or watch.retry_at > now or watch.current is not None:
                continue
            watch.retry_at = None
            if watch.needs_resolve:
                actions.append(Resolve(watch.key))
        return actions
