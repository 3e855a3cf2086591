"""The imperative shell around the supervisor: executes its actions and feeds it what happens.

A watch incarnation is one AddWatch to one engine of the pool (`engines.py`); its number is
the wire `watch` of every record about it, so records are routed by that number to the
incarnation's `Handle` (its renderer and identity). Admission (`budget.py`) runs before a
create changes anything: a watch beyond a node budget is refused with `CapacityError`.

Threads: gRPC handlers call `create`/`destroy`/`state` (under `_lock`); one I/O loop thread
(`run`) polls the pool (queues, control pipes, exited engines), renders event lines, feeds
records and engine exits to the supervisor and runs its timers. The pool is started with
`start` before the loop and stopped with `stop_engines` after it.

Event volume: a watch with a coalescing subject or a line budget (its own, else the
daemon's `line_budget`) has a `volume.Volume`; its events go through it, the loop ticks
the ones holding something back, and a watch's incarnation that goes away (and every one
at `stop_engines`) is flushed, so no event held back is lost.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable

import attrs
from google.protobuf.timestamp_pb2 import Timestamp

from fim.v1 import fim_pb2
from fim.v1.config_hash import config_hash
from libs.fimnotify_api import control, wire
from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.subject import SubjectConfig
from libs.k8s.container_id import ContainerId, ContainerIdError, parse_container_id
from libs.rootfs.reader import FileState
from libs.rootfs.target import Target as PinnedRoot
from libs.rootfs.target import TargetGoneError, TargetMismatchError
from services.fimd import attributes, baseline, budget, engines, queues
from services.fimd.baseline_report import Subjects
from services.fimd.baseline_store import BaselineKey, Reader
from services.fimd.capacity import MemoryReading, inotify_limits
from services.fimd.hashing import HashPool, Job
from services.fimd.lines import EventRenderer, Identity, decode_path, format_time, path_fields
from services.fimd.logformat import Template
from services.fimd.metrics import Metrics, Snapshot
from services.fimd.output import LineWriter
from services.fimd.resolver import ContainerNotFoundError, Resolver, Target
from services.fimd.scanner import Scanner, ScanRequest, baseline_key
from services.fimd.supervisor import (
    Action,
    ExitKind,
    Key,
    Notice,
    Phase,
    Resolve,
    Spawn,
    Stop,
    Supervisor,
    Watch,
)
from services.fimd.validation import ValidationError, validate_spec
from services.fimd.volume import Item, Line, Volume

LOOP_INTERVAL = 0.05
MAX_LABEL = 1024

_PHASES = {
    Phase.PENDING: fim_pb2.WATCH_PHASE_PENDING,
    Phase.ACTIVE: fim_pb2.WATCH_PHASE_ACTIVE,
    Phase.FAILED: fim_pb2.WATCH_PHASE_FAILED,
}
_GONE_KINDS = {
    wire.GoneReason.REMOVED: ExitKind.STOPPED,
    wire.GoneReason.TARGET_GONE: ExitKind.TARGET_GONE,
    wire.GoneReason.FAILED: ExitKind.FAILED,
    # The PID was reused or the process moved: the container is resolved again.
    wire.GoneReason.TARGET_MISMATCH: ExitKind.TARGET_MISMATCH,
}

#: Reads the memory cgroup (None: unknown).
MemoryProbe = Callable[[], MemoryReading | None]


class PreconditionError(Exception):
    """The request is valid but cannot be honoured now (container not on this node)."""


class CapacityError(Exception):
    """The watch would exceed a node budget; the message starts with `NodeCapacity: `."""

    def __init__(self, exhausted: budget.Exhausted) -> None:
        super().__init__(str(exhausted))
        self.exhausted = exhausted


@attrs.frozen
class Entry:
    """The accepted spec of a watch and what is derived from it once."""

    spec: fim_pb2.WatchSpec
    config_hash: str
    container_id: ContainerId
    identity: Identity
    template: Template | None
    subjects: tuple[SubjectConfig, ...]


@attrs.define(eq=False)
class Deferred:
    """An event of a watch with attributes, waiting for its file to be read (`job`) or for
    the events before it, so that a watch's lines keep their order."""

    record: wire.EventRecord
    names: list[str]
    now: float
    job: Job | None = None
    skipped: str = ""  # why its file is not read (e.g. the hash backlog was full)


@attrs.define(eq=False)
class Handle:
    """One watch incarnation held by one engine."""

    key: Key
    incarnation: int
    entry: Entry
    renderer: EventRenderer
    engine: str = ""
    volume: Volume | None = None
    #: Attributes: the target process it was started on, the pinned root (opened at the
    #: first file to read; "" or why it could not be), events waiting in order, and
    #: whether the incarnation is gone (flushed once nothing waits any more).
    pid: int = 0
    identity: ProcessIdentity = attrs.field(factory=ProcessIdentity)
    root: PinnedRoot | None = None
    root_error: str = ""
    deferred: deque[Deferred] = attrs.field(factory=deque)
    closing: bool = False
    #: The reason of its first comparison: "requested" when only scan_request changed.
    activation: str = "activation"
    #: The baseline key of each baseline subject (by index), made at its first use.
    baseline_keys: dict[int, BaselineKey] = attrs.field(factory=dict)


def key_of(key: fim_pb2.WatchKey) -> Key:
    return (key.watcher_uid, key.pod_uid, key.container_name)


def accept(request: fim_pb2.CreateWatchRequest, node: str) -> Entry:
    """Validates a CreateWatch request into an Entry; raises ValidationError."""
    spec = request.spec
    template, subjects = validate_spec(spec)
    digest = config_hash(spec)
    if request.config_hash and request.config_hash != digest:
        raise ValidationError(
            "config_hash", f"{request.config_hash!r} does not match the spec (fimd: {digest!r})"
        )
    try:
        container_id = parse_container_id(spec.container_id)
    except ContainerIdError as err:
        raise ValidationError("spec.container_id", str(err)) from None
    ident = spec.identity
    identity = Identity(
        node=node,
        namespace=ident.pod_namespace,
        pod=ident.pod_name,
        container=spec.key.container_name,
        watcher=f"{ident.watcher_namespace}/{ident.watcher_name}",
    )
    return Entry(spec, digest, container_id, identity, template, subjects)


def _only_scan_requested(old: fim_pb2.WatchSpec, new: fim_pb2.WatchSpec) -> bool:
    """The new spec differs from the old one in a new, non-empty scan_request only."""
    if not new.scan_request or new.scan_request == old.scan_request:
        return False
    plain_old, plain_new = fim_pb2.WatchSpec(), fim_pb2.WatchSpec()
    plain_old.CopyFrom(old)
    plain_new.CopyFrom(new)
    plain_old.ClearField("scan_request")
    plain_new.ClearField("scan_request")
    return plain_old == plain_new


def _who(entry: Entry) -> dict[str, str]:
    """The watch's identity for operational lines (which carry the node already)."""
    fields = entry.identity.fields()
    del fields["node"]
    return fields


class Daemon:
    """All watches of one node; see the module docstring."""

    def __init__(
        self,
        node: str,
        resolver: Resolver,
        launcher: engines.Launcher,
        writer: LineWriter,
        metrics: Metrics,
        *,
        engine_count: int = 1,
        budgets: budget.Budgets | None = None,
        memory: MemoryProbe = lambda: None,
        proc_root: str = "/proc",
        queue_prefix: str = queues.DEFAULT_PREFIX,
        queue_geometry: queues.Geometry = queues.DEFAULT_GEOMETRY,
        max_dirs: int = control.DEFAULT_MAX_DIRS,
        clock: Callable[[], float] = time.monotonic,
        line_budget: int = 0,
        hashing: HashPool | None = None,
        scanner: Scanner | None = None,
    ) -> None:
        self.node = node
        #: Lines per second of a watch whose spec sets no line_budget (0 = none).
        self.line_budget = line_budget
        self.instance_id = uuid.uuid4().hex
        self.budgets = budgets or budget.Budgets()
        self._resolver = resolver
        self._writer = writer
        self._metrics = metrics
        self._memory = memory
        self._proc_root = proc_root
        self._queue_prefix = queue_prefix
        self._clock = clock
        self._lock = threading.RLock()
        self._core = Supervisor()
        self._entries: dict[Key, Entry] = {}
        self._handles: dict[int, Handle] = {}  # by incarnation (= wire watch number)
        #: Wall clock (ns) since when an interrupted ACTIVE watch has not been watched.
        self._gaps: dict[Key, int] = {}
        #: The last resolution of each watch's container (its PID is the supervisor's).
        self._targets: dict[Key, Target] = {}
        #: Incarnations whose Volume holds something back (I/O thread only).
        self._volume_pending: dict[int, Handle] = {}
        #: Files of watches with attributes are read off the I/O thread by this pool; the
        #: incarnations with deferred events, and each watch's last known file states.
        self.hashing = hashing or HashPool()
        self._deferring: dict[int, Handle] = {}
        #: Watches whose next incarnation was asked for by a new scan_request only.
        self._requested: set[Key] = set()
        self._known: dict[Key, attributes.LastKnown] = {}
        self._hash_overflow = 0  # events since the last hash_backlog_full line
        #: Compares the trees of baseline subjects with their stored baselines (None: off).
        self.scanner = scanner
        if scanner is not None:
            scanner.live = self.live_keys
        #: The hash workers' reads of stored states, for the `previous` of first events.
        self._stored = (
            Reader(scanner.path, on_error=metrics.baseline_read_errors.inc)
            if scanner is not None
            else None
        )
        self._hash_overflow_at = 0.0
        self.pool = engines.EnginePool(
            launcher,
            engine_count,
            instance=self.instance_id,
            queue_prefix=queue_prefix,
            geometry=queue_geometry,
            proc_root=proc_root,
            max_dirs=max_dirs,
            clock=clock,
        )
        self._stopping = threading.Event()
        metrics.watch_state(self.snapshot)

    # --- requests (gRPC threads) -------------------------------------------------------

    def create(self, entry: Entry) -> tuple[bool, fim_pb2.WatchStatus]:
        """Upserts the watch; raises PreconditionError if its container is not here and
        CapacityError if it does not fit (nothing changes then)."""
        key = key_of(entry.spec.key)
        with self._lock:
            watch = self._core.watches.get(key)
            if watch and watch.config_hash == entry.config_hash and watch.phase is not Phase.FAILED:
                return False, self._status(watch)
        # Scanning /proc takes milliseconds: not under the lock.
        try:
            target = self._resolver.resolve(entry.container_id)
        except ContainerNotFoundError as err:
            raise PreconditionError(str(err)) from None
        with self._lock:
            watch = self._core.watches.get(key)
            if watch is None or watch.config_hash != entry.config_hash:
                self._admit(entry, new_watch=watch is None)
            old = self._entries.get(key)
            if old is not None and _only_scan_requested(old.spec, entry.spec):
                self._requested.add(key)
            self._entries[key] = entry
            self._targets[key] = target
            changed, actions = self._core.upsert(
                key, entry.config_hash, str(entry.container_id), target.pid, self._clock()
            )
            self._execute(actions)
            return changed, self._status(self._core.watches[key])

    def _usage(self) -> budget.Usage:
        reading = self._memory()
        return budget.Usage(
            watches=len(self._core.watches),
            inotify_watches=self.pool.inotify_watches(),
            engines_usable=self.pool.usable(),
            engines=len(self.pool.engines),
            working_set=reading.working_set if reading is not None else None,
            max_user_instances=inotify_limits(self._proc_root).max_user_instances,
        )

    def _admit(self, entry: Entry, *, new_watch: bool) -> None:
        exhausted = budget.check(self.budgets, self._usage(), new_watch=new_watch)
        if exhausted is None:
            return
        self._metrics.rejected.labels(exhausted.budget).inc()
        self._writer.op(
            "watch_rejected", "warning", budget=exhausted.budget, detail=str(exhausted),
            **_who(entry),
        )  # fmt: skip
        raise CapacityError(exhausted)

    def destroy(self, key: Key) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            existed, actions = self._core.destroy(key)
            self._execute(actions, entry)
            self._entries.pop(key, None)
            self._gaps.pop(key, None)
            self._targets.pop(key, None)
            self._known.pop(key, None)
            self._requested.discard(key)
        if self.scanner is not None:
            self.scanner.forget(key)
        return existed

    def state(self) -> fim_pb2.GetWatchStateResponse:
        with self._lock:
            snap = self.snapshot()
            return fim_pb2.GetWatchStateResponse(
                node_name=self.node,
                instance_id=self.instance_id,
                watches=[self._status(w) for w in self._core.watches.values()],
                limits=fim_pb2.NodeLimits(
                    max_user_watches=snap.max_user_watches,
                    inotify_watches_in_use=snap.inotify_watches_in_use,
                    max_user_instances=snap.max_user_instances,
                    inotify_instances_in_use=snap.inotify_instances_in_use,
                ),
            )

    def snapshot(self) -> Snapshot:
        with self._lock:
            phases = {p.value: 0 for p in Phase}
            for watch in self._core.watches.values():
                phases[watch.phase.value] += 1
            limits = inotify_limits(self._proc_root)
            reading = self._memory()
            return Snapshot(
                watches_by_phase=phases,
                inotify_watches_in_use=self.pool.inotify_watches(),
                max_user_watches=limits.max_user_watches,
                # One inotify instance per running engine (but those that got EMFILE).
                inotify_instances_in_use=self.pool.usable(),
                max_user_instances=limits.max_user_instances,
                engines=len(self.pool.engines),
                engines_live=self.pool.live(),
                inotify_watch_budget=self.budgets.inotify_watches,
                memory_budget=self.budgets.memory_bytes or 0,
                memory_working_set=reading.working_set if reading is not None else 0,
                hash_backlog=self.hashing.backlog,
                hash_backlog_limit=self.hashing.backlog_limit,
            )

    def _status(self, watch: Watch) -> fim_pb2.WatchStatus:
        since = Timestamp()
        # The supervisor's clock is monotonic; convert to wall time for the caller.
        since.FromNanoseconds(int((time.time() - (self._clock() - watch.since)) * 1e9))
        current = watch.current
        return fim_pb2.WatchStatus(
            key=self._entries[watch.key].spec.key,
            config_hash=watch.config_hash,
            phase=_PHASES[watch.phase],
            reason=watch.reason,
            message=watch.message,
            container_id=watch.container_id,
            pid=watch.target_pid,
            watcher_pid=current.pid if current else 0,
            inotify_watches=current.watches if current else 0,
            restarts=watch.restarts,
            since=since,
            last_scan=self._last_scan(watch.key),
        )

    def _last_scan(self, key: Key) -> fim_pb2.ScanSummary | None:
        last = self.scanner.last.get(key) if self.scanner is not None else None
        if last is None:
            return None
        when = Timestamp()
        when.FromNanoseconds(last.time_ns)
        return fim_pb2.ScanSummary(
            time=when, reason=last.reason, scanned=last.scanned, added=last.added,
            removed=last.removed, changed=last.changed, request=last.request,
        )  # fmt: skip

    # --- actions -----------------------------------------------------------------------

    def _execute(self, actions: list[Action], entry: Entry | None = None, when_ns: int = 0) -> None:
        """Runs actions (under the lock); `entry` identifies a watch already forgotten,
        `when_ns` is the time of the record that caused them."""
        resolves: list[Key] = []
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Stop):
                self.pool.remove(action.incarnation)
            elif isinstance(action, Resolve):
                resolves.append(action.key)
            else:
                self._notice(action, entry or self._entries.get(action.key), when_ns)
        if resolves:
            self._resolve(resolves)

    def _spawn(self, action: Spawn) -> None:
        entry = self._entries[action.key]
        watch = self._core.watches[action.key]
        who = entry.identity
        label = f"{who.watcher}:{who.pod}/{who.container}"[:MAX_LABEL]
        target = self._targets.get(action.key)
        start_time = target.start_time if target and target.pid == watch.target_pid else 0
        identity = ProcessIdentity(start_time, entry.container_id.cgroup_leaf_names())
        add = control.AddWatch(
            action.incarnation, watch.target_pid, label, entry.subjects, identity
        )
        renderer = EventRenderer(who, [s.tags for s in entry.subjects], entry.template)
        windows = [s.coalesce_ms / 1000 for s in entry.spec.subjects]
        line_budget = entry.spec.line_budget or self.line_budget
        vol = Volume(windows, line_budget) if line_budget or any(windows) else None
        # Routable before the engine can answer.
        handle = Handle(
            action.key, action.incarnation, entry, renderer, volume=vol,
            pid=watch.target_pid, identity=identity,
        )  # fmt: skip
        if action.key in self._requested:
            self._requested.discard(action.key)
            handle.activation = "requested"
        self._handles[action.incarnation] = handle
        try:
            engine = self.pool.assign(add)
        except engines.NoEngineError as err:
            del self._handles[action.incarnation]
            self._execute(self._exited(handle, ExitKind.FAILED, f"no engine can take it: {err}"))
            return
        except control.ControlError as err:
            del self._handles[action.incarnation]
            self._execute(self._exited(handle, ExitKind.CONFIG_REJECTED, str(err)))
            return
        handle.engine = engine.name
        self._core.started(action.key, action.incarnation, engine.pid)

    def _exited(self, handle: Handle, kind: ExitKind, detail: str, gap_ns: int = 0) -> list[Action]:
        """The incarnation ended: tells the supervisor and returns its actions; a gap starts
        at `gap_ns` (or now) if that leaves an ACTIVE watch unwatched."""
        actions = self._core.exited(handle.key, handle.incarnation, kind, detail, self._clock())
        watch = self._core.watches.get(handle.key)
        if watch is not None and watch.interrupted:
            self._gaps.setdefault(handle.key, gap_ns or time.time_ns())
        return actions

    def _resolve(self, keys: list[Key]) -> None:
        """Resolves the containers of `keys` again, with one scan of /proc."""
        wanted = {key: self._entries[key].container_id for key in keys if key in self._entries}
        targets = self._resolver.resolve_many(set(wanted.values()))
        for key, container_id in wanted.items():
            target = targets.get(container_id)
            if target is not None:
                self._targets[key] = target
            detail = "" if target else f"no process of container {container_id} found"
            pid = target.pid if target else 0
            self._execute(self._core.resolved(key, pid, detail, self._clock()))

    def _notice(self, notice: Notice, entry: Entry | None, when_ns: int) -> None:
        fields: dict[str, object] = {}
        if entry is not None:
            fields.update(_who(entry))
        if notice.detail:
            fields["detail"] = notice.detail
        if notice.msg == "watcher_restarted" and entry is not None:
            self._metrics.restarts.labels(entry.identity.watcher).inc()
        level = notice.level
        if notice.msg == "watch_resumed":
            end = when_ns or time.time_ns()
            start = self._gaps.pop(notice.key, end)
            fields.update(gapStart=format_time(start), gapEnd=format_time(end))
            fields["gapSeconds"] = round(max(0, end - start) / 1e9, 3)
            level = "warning"
        self._writer.op(notice.msg, level, **fields)

    # --- I/O loop ----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the engines and the baseline scanner (before `run`)."""
        if self.scanner is not None:
            self.scanner.start()
        for happening in self.pool.start():
            self._happened(happening)

    def run(self) -> None:
        """The I/O loop; returns after `shutdown`."""
        while not self._stopping.is_set():
            for happening in self.pool.poll(LOOP_INTERVAL):
                self._happened(happening)
            self._drain()
            self._report_hash_overflow()
            self._tick_volumes()
            with self._lock:
                self._execute(self._core.tick(self._clock()))

    # --- event volume (I/O thread) -----------------------------------------------------

    def _tick_volumes(self) -> None:
        """Writes the lines of coalescing windows and budget intervals that have ended."""
        if not self._volume_pending:
            return
        now = self._clock()
        for number, handle in list(self._volume_pending.items()):
            assert handle.volume is not None
            self._put_events(handle, self._volume_lines(handle, handle.volume.tick(now)))
            if not handle.volume.pending:
                del self._volume_pending[number]

    def _flush_volume(self, handle: Handle) -> None:
        """Writes everything the incarnation's Volume holds back (it goes away); with
        deferred events, once they are written (`_drain`)."""
        if handle.deferred:
            handle.closing = True
            return
        self._close_root(handle)
        self._volume_pending.pop(handle.incarnation, None)
        if handle.volume is not None:
            lines = self._volume_lines(handle, handle.volume.flush(self._clock()))
            self._put_events(handle, lines)

    def _flush_all_volumes(self) -> None:
        self._drain(wait=True)
        for handle in list(self._handles.values()):
            self._flush_volume(handle)

    def _volume_lines(self, handle: Handle, items: list[Item]) -> list[str]:
        """Renders `items` of the incarnation's Volume and counts its lines and savings."""
        out = self._render(handle, items)
        self._count_volume(handle)
        return out

    @staticmethod
    def _render(handle: Handle, items: list[Item]) -> list[str]:
        render_line = handle.renderer.render_line
        out: list[str] = []
        for item in items:
            if isinstance(item, Line):
                out.append(render_line(item))
            else:
                out.append(handle.renderer.render_summary(item, time.time_ns()))
        return out

    def _count_volume(self, handle: Handle) -> None:
        """Moves the Volume's counts into the metrics; remembers it if it holds lines back."""
        assert handle.volume is not None
        counts = handle.volume.take_counts()
        watcher = handle.entry.identity.watcher
        if counts.lines > counts.summaries:
            self._metrics.lines.labels(watcher, "event").inc(counts.lines - counts.summaries)
        if counts.summaries:
            self._metrics.lines.labels(watcher, "summary").inc(counts.summaries)
        if counts.saved_coalescing:
            self._metrics.lines_saved.labels(watcher, "coalescing").inc(counts.saved_coalescing)
        if counts.saved_budget:
            self._metrics.lines_saved.labels(watcher, "budget").inc(counts.saved_budget)
        if handle.volume.pending:
            self._volume_pending[handle.incarnation] = handle

    def _put_events(self, handle: Handle, out: list[str]) -> None:
        """Queues lines of one watch; lines the writer drops are counted for its watcher."""
        if out and not self._writer.put_events(out):
            self._metrics.dropped.labels(handle.entry.identity.watcher, "output").inc(len(out))

    def _happened(self, happening: engines.Happening) -> None:
        if isinstance(happening, engines.Records):
            self._records(happening.engine, happening.records)
        elif isinstance(happening, engines.Lost):
            self._metrics.messages_lost.labels(happening.engine).inc(happening.count)
            self._writer.op(
                "messages_lost", "error", engine=happening.engine, count=happening.count
            )
        elif isinstance(happening, engines.BadMessage):
            self._metrics.messages_lost.labels(happening.engine).inc()
            self._writer.op(
                "bad_message", "error", engine=happening.engine, detail=happening.detail
            )
        elif isinstance(happening, engines.Started):
            msg = "engine_restarted" if happening.restart else "engine_started"
            self._writer.op(
                msg, "warning" if happening.restart else "info",
                engine=happening.engine, pid=happening.pid,
            )  # fmt: skip
        elif isinstance(happening, engines.StartFailed):
            self._writer.op(
                "engine_start_failed", "error", engine=happening.engine,
                detail=happening.detail, retry_in=happening.retry_in,
            )  # fmt: skip
        else:
            self._engine_exited(happening)

    def _engine_exited(self, exited: engines.Exited) -> None:
        """Every watch the engine held is gone; its watches are added again."""
        self._metrics.engine_exits.labels(exited.engine).inc()
        self._writer.op(
            "engine_exited", "error", engine=exited.engine, pid=exited.pid,
            detail=exited.detail, watches=len(exited.watches), restart_in=exited.restart_in,
        )  # fmt: skip
        detail = f"engine {exited.engine} {exited.detail}"
        with self._lock:
            actions: list[Action] = []
            for number in sorted(exited.watches):
                handle = self._handles.pop(number, None)
                if handle is not None:
                    self._flush_volume(handle)
                    kind = ExitKind.ENGINE_DIED
                    actions += self._exited(handle, kind, detail, exited.alive_ns)
            # All at once: their containers are resolved again with one scan of /proc.
            self._execute(actions)

    def _records(self, engine: str, records: list[wire.Record]) -> None:
        out: list[str] = []
        per_watcher: Counter[str] = Counter()
        unrouted = 0
        now = self._clock()
        touched: dict[int, Handle] = {}  # incarnations with a Volume in this batch
        seen: Counter[tuple[str, str]] = Counter()  # (watcher, event) received
        plain_lines: Counter[str] = Counter()  # lines of watches without a Volume
        for record in records:
            if not isinstance(record, wire.EventRecord):
                self._status_record(engine, record)
                continue
            handle = self._handles.get(record.watch)
            if handle is None:
                unrouted += 1
                continue
            names = [name.upper() for name in record.names]
            if handle.deferred or self._wants_file(handle, record):
                self._defer(handle, record, names, now)
                for name in names:
                    seen[handle.entry.identity.watcher, name] += 1
                continue
            try:
                rendered = self._event_lines(handle, record, names, now)
            except IndexError:
                self._writer.op("bad_subject", "error", engine=engine, **_who(handle.entry))
                continue
            watcher = handle.entry.identity.watcher
            if handle.volume is None:
                plain_lines[watcher] += len(rendered)
            else:
                touched[handle.incarnation] = handle
            for name in names:
                seen[watcher, name] += 1
            per_watcher[watcher] += len(rendered)
            out += rendered
        self._count_batch(seen, plain_lines, touched)
        if unrouted:
            self._metrics.dropped.labels("", "unrouted").inc(unrouted)
            self._writer.op("unrouted_events", "error", engine=engine, count=unrouted)
        if out and not self._writer.put_events(out):
            for watcher, count in per_watcher.items():
                self._metrics.dropped.labels(watcher, "output").inc(count)
        self._drain()

    def _count_batch(
        self, seen: Counter[tuple[str, str]], plain_lines: Counter[str], touched: dict[int, Handle]
    ) -> None:
        """Metrics once per batch (a batch holds many records of few watchers)."""
        for (watcher, name), count in seen.items():
            self._metrics.events.labels(watcher, name).inc(count)
            self._metrics.events_seen.labels(watcher).inc(count)
        for watcher, count in plain_lines.items():
            self._metrics.lines.labels(watcher, "event").inc(count)
        for handle in touched.values():
            self._count_volume(handle)

    def _event_lines(
        self,
        handle: Handle,
        record: wire.EventRecord,
        names: list[str],
        now: float,
        extra: str = "",
    ) -> list[str]:
        """The lines of one event record now (through the watch's Volume, if it has one);
        IndexError for a subject the watch does not have."""
        if handle.volume is None:
            return handle.renderer.render(
                record.time_ns, record.mask, record.subject, record.path, extra
            )
        items = handle.volume.add(
            record.time_ns, record.subject, names, record.path,
            is_dir=record.is_dir, now=now, extra=extra,
        )  # fmt: skip
        return self._render(handle, items) if items else []

    # --- file attributes (I/O thread) --------------------------------------------------

    @staticmethod
    def _wants_file(handle: Handle, record: wire.EventRecord) -> bool:
        """The event's subject asks for attributes and the event is not about a directory."""
        subjects = handle.entry.subjects
        return (
            not record.is_dir
            and record.subject < len(subjects)
            and subjects[record.subject].with_attributes
        )

    def _defer(
        self, handle: Handle, record: wire.EventRecord, names: list[str], now: float
    ) -> None:
        """Queues the event behind the watch's other deferred events; submits its file to
        the hash pool if it needs reading (else its line waits only for those before it)."""
        item = Deferred(record, names, now)
        if self._wants_file(handle, record):
            root = self._root(handle)
            if root is None:
                item.skipped = handle.root_error
            else:
                subject = handle.entry.subjects[record.subject]
                known = self._known.get(handle.key)
                job = Job(
                    root, record.path, bool(subject.hash),
                    known.get(record.path) if known is not None else None,
                    self._lookup(handle, record, known),
                )  # fmt: skip
                if self.hashing.submit(job):
                    item.job = job
                else:
                    item.skipped = "the hash backlog is full"
                    self._hash_backlog_full(handle)
        handle.deferred.append(item)
        self._deferring[handle.incarnation] = handle

    def _lookup(
        self, handle: Handle, record: wire.EventRecord, known: attributes.LastKnown | None
    ) -> Callable[[], FileState | None] | None:
        """The read of the path's stored state, for the hash worker to run: only for a
        path the watch has not reported (and a watch that forgot none), of a baseline
        subject (attributes.first_previous)."""
        subject = handle.entry.subjects[record.subject]
        if self._stored is None or not baseline.has_baseline(subject):
            return None
        if known is not None and (known.evicted or known.knows(record.path)):
            return None
        key = handle.baseline_keys.get(record.subject)
        if key is None:
            key = baseline_key(handle.entry.identity.namespace, handle.key, subject)
            handle.baseline_keys[record.subject] = key
        return functools.partial(self._stored.file_state, key, record.path, record.time_ns)

    def _root(self, handle: Handle) -> int | None:
        """The pinned root of the watch's target process, opened at its first use."""
        if handle.root is None and not handle.root_error:
            try:
                handle.root = PinnedRoot.open(self._proc_root, handle.pid, handle.identity)
            except (TargetGoneError, TargetMismatchError, OSError) as err:
                handle.root_error = f"container root: {err}"[:256]
        return handle.root.root if handle.root is not None else None

    @staticmethod
    def _close_root(handle: Handle) -> None:
        if handle.root is not None:
            handle.root.close()
            handle.root = None

    def _hash_backlog_full(self, handle: Handle) -> None:
        """Counts an event whose file was not read (reported by `_report_hash_overflow`)."""
        self._metrics.hash_skipped.labels(handle.entry.identity.watcher, "backlog").inc()
        self._hash_overflow += 1
        self._report_hash_overflow()

    def _report_hash_overflow(self, *, now: bool = False) -> None:
        """One op line with the events whose file was not read since the last one, at most
        once a second (at once with `now`)."""
        clock = self._clock()
        if self._hash_overflow and (now or clock - self._hash_overflow_at >= 1.0):
            self._writer.op(
                "hash_backlog_full", "warning", count=self._hash_overflow,
                backlog=self.hashing.backlog_limit,
            )  # fmt: skip
            self._hash_overflow, self._hash_overflow_at = 0, clock

    def _drain(self, *, wait: bool = False) -> None:
        """Writes the lines of deferred events whose turn has come (all, with `wait`)."""
        for number, handle in list(self._deferring.items()):
            out = self._drain_handle(handle, wait)
            self._put_events(handle, out)
            if handle.volume is not None:
                self._count_volume(handle)
            else:
                self._metrics.lines.labels(handle.entry.identity.watcher, "event").inc(len(out))
            if not handle.deferred:
                del self._deferring[number]
                if handle.closing:
                    self._flush_volume(handle)

    def _drain_handle(self, handle: Handle, wait: bool) -> list[str]:
        out: list[str] = []
        known = self._known.setdefault(handle.key, attributes.LastKnown())
        while handle.deferred:
            item = handle.deferred[0]
            if item.job is not None and not item.job.done.is_set():
                if not wait:
                    break
                item.job.done.wait()
            handle.deferred.popleft()
            record = item.record
            extra = ""
            if self._wants_file(handle, record):
                extra = self._file_fields(handle, item, known)
            try:
                out += self._event_lines(handle, record, item.names, item.now, extra)
            except IndexError:
                self._writer.op("bad_subject", "error", engine=handle.engine, **_who(handle.entry))
        return out

    @staticmethod
    def _file_fields(handle: Handle, item: Deferred, known: attributes.LastKnown) -> str:
        """The attribute members of a deferred event's line; records its state in `known`."""
        job, path = item.job, item.record.path
        after: attributes.After = attributes.Unread(item.skipped)
        if job is not None and job.result is not None:
            after = job.result
        first = attributes.first_previous(known, path, job.stored if job is not None else None)
        previous = known.update(path, after)
        with_hash = bool(handle.entry.subjects[item.record.subject].hash)
        return attributes.render(
            after, first if previous is None else previous, with_hash=with_hash
        )

    def _on_engine(self, engine: str) -> list[Handle]:
        return [h for h in list(self._handles.values()) if h.engine == engine]

    def _status_record(self, engine: str, record: wire.Record) -> None:
        if isinstance(record, wire.OverflowRecord):
            # One inotify queue for the whole engine: every watch on it may have lost events.
            for held in self._on_engine(engine):
                self._metrics.overflows.labels(held.entry.identity.watcher).inc()
                self._writer.op("inotify_overflow", "warning", engine=engine, **_who(held.entry))
            return
        if isinstance(record, wire.ExitRecord):
            return  # the pool keeps it for the engine's exit line
        if isinstance(record, wire.ErrorRecord) and record.watch == wire.ENGINE:
            self._writer.op(
                "engine_error", "error", engine=engine, code=record.code,
                **path_fields(record.path), detail=record.message,
            )  # fmt: skip
            return
        handle = self._handles.get(record.watch)
        if handle is None:
            return  # about an incarnation already forgotten (e.g. after its engine died)
        who = _who(handle.entry)
        if isinstance(record, wire.DroppedRecord):
            self._metrics.dropped.labels(handle.entry.identity.watcher, "fimnotify").inc(
                record.count
            )
            self._metrics.events_seen.labels(handle.entry.identity.watcher).inc(record.count)
            self._writer.op("events_dropped", "error", count=record.count, **who)
        elif isinstance(record, wire.ErrorRecord):
            self._error_record(handle, record)
        elif isinstance(record, wire.ReadyRecord):
            with self._lock:
                actions = self._core.ready(
                    handle.key, handle.incarnation, record.watches, record.pending,
                    self._clock(), limited=record.limited,
                )  # fmt: skip
                self._execute(actions, when_ns=record.time_ns)
            if record.rescan:
                self._writer.op("rescan_done", watches=record.watches, **who)
            self._compare(handle, "rescan" if record.rescan else handle.activation)
        elif isinstance(record, wire.GoneRecord):
            with self._lock:
                if self._handles.pop(record.watch, None) is None:
                    return
                self._flush_volume(handle)
                detail = f"{record.reason.name}" + (f": {record.message}" if record.message else "")
                kind = _GONE_KINDS[record.reason]
                self._execute(self._exited(handle, kind, detail, record.time_ns))

    def _compare(self, handle: Handle, reason: str) -> None:
        """Asks for a comparison of the watch's baseline subjects with their baselines."""
        subjects = handle.entry.subjects
        if self.scanner is None or not any(baseline.has_baseline(s) for s in subjects):
            return
        request = ScanRequest(
            handle.key, handle.entry.identity, handle.pid, handle.identity, subjects, reason,
            handle.entry.spec.scan_request,
        )  # fmt: skip
        self.scanner.request(request)
        self.scanner.schedule(request, handle.entry.spec.scan_interval_s)

    def baseline_subjects(self, watcher_uid: str) -> Subjects:
        """Pod name and paths of the baseline subjects of the watcher's watches fimd holds,
        by (pod UID, container, subject key): the /baselines endpoint names them."""
        with self._lock:
            entries = [(k, e) for k, e in self._entries.items() if k[0] == watcher_uid]
        return {
            (key[1], key[2], baseline.subject_key(s)): (entry.identity.pod, tuple(s.paths))
            for key, entry in entries
            for s in entry.subjects
            if baseline.has_baseline(s)
        }

    def live_keys(self) -> set[Key]:
        """The keys of the watches fimd holds (baselines of others are orphans)."""
        with self._lock:
            return set(self._core.watches)

    def _error_record(self, handle: Handle, record: wire.ErrorRecord) -> None:
        # The path is a container's choice and may be cut by the engine (path_size is its
        # full length): text for reading, plus pathBytes (base64) when it is not UTF-8.
        path = decode_path(record.path)
        fields: dict[str, object] = {"code": record.code, **path_fields(record.path)}
        fields["detail"] = record.message
        if record.subject is not None:
            fields["subject"] = record.subject
        if record.truncated:
            fields.update(pathTruncated=True, pathSize=record.path_size)
        shown = path + ("..." if record.truncated else "")
        if record.code == "EDIRCAP":
            reason, msg = "WatchLimited", "watch_limited"
            text = f"{shown} and the directories below it are not watched: {record.message}"
        else:
            reason = "WatchLimit" if record.code in ("ENOSPC", "EMFILE") else "PathError"
            msg, text = "watch_error", f"{record.code} {shown}: {record.message}"
        with self._lock:
            self._core.degraded(handle.key, handle.incarnation, reason, text)
        self._writer.op(msg, "error", **fields, **_who(handle.entry))

    # --- lifecycle ---------------------------------------------------------------------

    def remove_stale_queues(self, mqueue_dir: str) -> None:
        removed = queues.remove_stale(mqueue_dir, self._queue_prefix)
        if removed is None:
            self._writer.op(
                "stale_queues_unknown",
                "warning",
                detail=f"cannot list {mqueue_dir}: mount the mqueue filesystem there",
            )
        elif removed:
            self._writer.op("stale_queues_removed", "warning", queues=removed)

    def shutdown(self) -> None:
        """Stops the I/O loop (join `run`'s thread after, then call `stop_engines`)."""
        self._stopping.set()

    def stop_engines(self, timeout: float = engines.STOP_GRACE) -> None:
        """Ends every engine (stdin closed, then SIGTERM, then SIGKILL after `timeout`),
        writes their last events and removes their queues. Call after `run` returned."""
        for happening in self.pool.stop(timeout):
            if isinstance(happening, engines.Records | engines.Lost | engines.BadMessage):
                self._happened(happening)
        self._flush_all_volumes()
        self._report_hash_overflow(now=True)
        self.hashing.stop()
        if self._stored is not None:
            self._stored.close()
        if self.scanner is not None:
            self.scanner.stop()
