"""The imperative shell around the supervisor: executes its actions and feeds it what happens.

Threads: gRPC handlers call `create`/`destroy`/`state` (under `_lock`); one I/O loop thread
(`run`) reads every child's message queue through one epoll, renders event lines, reaps
exited children (draining their queue first, so their last events and EXIT record are
seen) and runs the supervisor's timers. Queues are only read and removed by that thread.
"""

from __future__ import annotations

import select
import threading
import time
import uuid
from collections.abc import Callable

import attrs
import posix_ipc
from google.protobuf.timestamp_pb2 import Timestamp

from fim.v1 import fim_pb2
from fim.v1.config_hash import config_hash
from libs.k8s.container_id import ContainerId, ContainerIdError, parse_container_id
from libs.fimnotify_api.events import EventName
from services.fimd import queues
from services.fimd.lines import EventRenderer, Identity, decode_path
from services.fimd.logformat import Template
from services.fimd.metrics import Metrics, Snapshot
from services.fimd.output import LineWriter
from services.fimd.resolver import ContainerNotFoundError, Resolver
from services.fimd.spawner import Child, Spawner
from services.fimd.supervisor import (
    Action,
    ExitKind,
    Key,
    Notice,
    Phase,
    Process,
    Resolve,
    Spawn,
    Stop,
    Supervisor,
    Watch,
)
from services.fimd.validation import ValidationError, validate_spec
from libs.fimnotify_api import wire
from libs.fimnotify_api.config import ConfigError, SubjectConfig, WatchConfig

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
LOOP_INTERVAL = 0.05

_PHASES = {
    Phase.PENDING: fim_pb2.WATCH_PHASE_PENDING,
    Phase.ACTIVE: fim_pb2.WATCH_PHASE_ACTIVE,
    Phase.FAILED: fim_pb2.WATCH_PHASE_FAILED,
}


class PreconditionError(Exception):
    """The request is valid but cannot be honoured now (container not on this node)."""


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
class Handle:
    """One running fimnotify process and its queue."""

    key: Key
    incarnation: int
    entry: Entry
    queue: posix_ipc.MessageQueue
    child: Child
    renderer: EventRenderer
    next_seq: int = 0
    exit_record: wire.ExitRecord | None = None
    stop_deadline: float | None = None


def key_of(key: fim_pb2.WatchKey) -> Key:
    return (key.watcher_uid, key.pod_uid, key.container_name)


def _subject(subject: fim_pb2.Subject) -> SubjectConfig:
    return SubjectConfig(
        paths=tuple(subject.paths),
        events=tuple(EventName(e) for e in subject.events),
        ignore=tuple(subject.ignore),
        only_dir=subject.only_dir,
        recursive=subject.recursive,
        max_depth=subject.max_depth,
        follow_move=subject.follow_move,
        tags=dict(subject.tags),
    )


def accept(request: fim_pb2.CreateWatchRequest, node: str) -> Entry:
    """Validates a CreateWatch request into an Entry; raises ValidationError."""
    spec = request.spec
    template = validate_spec(spec)
    digest = config_hash(spec)
    if request.config_hash and request.config_hash != digest:
        raise ValidationError(
            "config_hash", f"{request.config_hash!r} does not match the spec (fimd: {digest!r})"
        )
    try:
        container_id = parse_container_id(spec.container_id)
        subjects = tuple(_subject(s) for s in spec.subjects)
    except ContainerIdError as err:
        raise ValidationError("spec.container_id", str(err)) from None
    except ConfigError as err:
        raise ValidationError("spec.subjects", str(err)) from None
    ident = spec.identity
    identity = Identity(
        node=node,
        namespace=ident.pod_namespace,
        pod=ident.pod_name,
        container=spec.key.container_name,
        watcher=f"{ident.watcher_namespace}/{ident.watcher_name}",
    )
    return Entry(spec, digest, container_id, identity, template, subjects)


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


class Daemon:
    """All watches of one node; see the module docstring."""

    def __init__(
        self,
        node: str,
        resolver: Resolver,
        spawner: Spawner,
        writer: LineWriter,
        metrics: Metrics,
        *,
        proc_root: str = "/proc",
        queue_prefix: str = queues.DEFAULT_PREFIX,
        queue_geometry: queues.Geometry = queues.DEFAULT_GEOMETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.instance_id = uuid.uuid4().hex
        self._resolver = resolver
        self._spawner = spawner
        self._writer = writer
        self._metrics = metrics
        self._proc_root = proc_root
        self._queue_prefix = queue_prefix
        self._geometry = queue_geometry
        self._clock = clock
        self._lock = threading.RLock()
        self._core = Supervisor()
        self._entries: dict[Key, Entry] = {}
        self._handles: dict[int, Handle] = {}  # by incarnation
        self._by_fd: dict[int, Handle] = {}
        self._epoll = select.epoll()
        self._stopping = threading.Event()
        metrics.watch_state(self.snapshot)

    # --- requests (gRPC threads) -------------------------------------------------------

    def create(self, entry: Entry) -> tuple[bool, fim_pb2.WatchStatus]:
        """Upserts the watch; raises PreconditionError if its container is not here."""
        key = key_of(entry.spec.key)
        with self._lock:
            watch = self._core.watches.get(key)
            if watch and watch.config_hash == entry.config_hash and watch.phase is not Phase.FAILED:
                return False, self._status(watch)
        # Scanning /proc takes milliseconds: not under the lock.
        try:
            pid = self._resolver.resolve(entry.container_id)
        except ContainerNotFoundError as err:
            raise PreconditionError(str(err)) from None
        with self._lock:
            changed, actions = self._core.upsert(
                key, entry.config_hash, str(entry.container_id), pid, self._clock()
            )
            self._entries[key] = entry
            self._execute(actions)
            return changed, self._status(self._core.watches[key])

    def destroy(self, key: Key) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            existed, actions = self._core.destroy(key)
            self._execute(actions, entry)
            self._entries.pop(key, None)
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
            procs = [p for w in self._core.watches.values() for p in self._processes(w)]
            return Snapshot(
                watches_by_phase=phases,
                inotify_watches_in_use=sum(p.watches for p in procs),
                max_user_watches=_read_int(f"{self._proc_root}/sys/fs/inotify/max_user_watches"),
                inotify_instances_in_use=sum(1 for p in procs if p.pid),
                max_user_instances=_read_int(
                    f"{self._proc_root}/sys/fs/inotify/max_user_instances"
                ),
            )

    @staticmethod
    def _processes(watch: Watch) -> list[Process]:
        current = [watch.current] if watch.current is not None else []
        return [*current, *watch.retiring.values()]

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
        )

    # --- actions -----------------------------------------------------------------------

    def _execute(self, actions: list[Action], entry: Entry | None = None) -> None:
        """Runs actions (under the lock); `entry` identifies a watch already forgotten."""
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Stop):
                self._stop(action.incarnation)
            elif isinstance(action, Resolve):
                self._resolve(action.key)
            else:
                self._notice(action, entry or self._entries.get(action.key))

    def _spawn(self, action: Spawn) -> None:
        entry = self._entries[action.key]
        watch = self._core.watches[action.key]
        name = f"{self._queue_prefix}{self.instance_id[:8]}.{action.incarnation}"
        config = WatchConfig(
            watch_id=f"{entry.identity.watcher}:{entry.identity.pod}/{entry.identity.container}",
            pid=watch.target_pid,
            queue_name=name,
            subjects=entry.subjects,
            proc_root=self._proc_root,
        )
        try:
            queue = queues.create(name, self._geometry)
        except (posix_ipc.Error, OSError) as err:
            self._failed_start(
                action, f"cannot create queue {name}: {err} (RLIMIT_MSGQUEUE used up?)"
            )
            return
        try:
            child = self._spawner.spawn(config)
        except OSError as err:
            queues.remove(queue)
            self._failed_start(action, f"cannot start fimnotify: {err}")
            return
        renderer = EventRenderer(entry.identity, [s.tags for s in entry.subjects], entry.template)
        handle = Handle(action.key, action.incarnation, entry, queue, child, renderer)
        self._handles[action.incarnation] = handle
        self._by_fd[queue.mqd] = handle
        self._epoll.register(queue.mqd, select.EPOLLIN)
        self._core.started(action.key, action.incarnation, child.pid)

    def _failed_start(self, action: Spawn, detail: str) -> None:
        self._execute(
            self._core.exited(
                action.key, action.incarnation, ExitKind.CRASHED, detail, self._clock()
            )
        )

    def _stop(self, incarnation: int) -> None:
        handle = self._handles.get(incarnation)
        if handle is None or handle.stop_deadline is not None:
            return
        handle.stop_deadline = self._clock() + STOP_GRACE
        handle.child.terminate()

    def _resolve(self, key: Key) -> None:
        entry = self._entries[key]
        try:
            pid, detail = self._resolver.resolve(entry.container_id), ""
        except ContainerNotFoundError as err:
            pid, detail = 0, str(err)
        self._execute(self._core.resolved(key, pid, detail, self._clock()))

    def _notice(self, notice: Notice, entry: Entry | None) -> None:
        fields: dict[str, object] = {}
        if entry is not None:
            fields.update(self._who(entry))
        if notice.detail:
            fields["detail"] = notice.detail
        if notice.msg == "watcher_restarted" and entry is not None:
            self._metrics.restarts.labels(entry.identity.watcher).inc()
        self._writer.op(notice.msg, notice.level, **fields)

    # --- I/O loop ----------------------------------------------------------------------

    def run(self) -> None:
        """The I/O loop; returns after `shutdown`."""
        while not self._stopping.is_set():
            for fd, _ in self._epoll.poll(LOOP_INTERVAL):
                handle = self._by_fd.get(fd)
                if handle is not None:
                    self._drain(handle)
            self._reap()
            with self._lock:
                self._execute(self._core.tick(self._clock()))

    def _drain(self, handle: Handle) -> None:
        for message in queues.receive_all(handle.queue):
            try:
                decoded = wire.decode_message(message)
            except wire.WireError as err:
                self._writer.op("bad_message", "error", detail=str(err), **self._who(handle.entry))
                continue
            if decoded.seq != handle.next_seq:
                self._writer.op(
                    "messages_lost",
                    "error",
                    **self._who(handle.entry),
                    count=(decoded.seq - handle.next_seq) & 0xFFFFFFFF,
                )
            handle.next_seq = (decoded.seq + 1) & 0xFFFFFFFF
            self._records(handle, decoded.records)

    @staticmethod
    def _who(entry: Entry) -> dict[str, str]:
        """The watch's identity for operational lines (which carry the node already)."""
        fields = entry.identity.fields()
        del fields["node"]
        return fields

    def _records(self, handle: Handle, records: list[wire.Record]) -> None:
        out: list[str] = []
        watcher = handle.entry.identity.watcher
        for record in records:
            if isinstance(record, wire.EventRecord):
                try:
                    rendered = handle.renderer.render(
                        record.time_ns, record.mask, record.subject, record.path
                    )
                except IndexError:
                    self._writer.op("bad_subject", "error", **self._who(handle.entry))
                    continue
                for name in record.names:
                    self._metrics.events.labels(watcher, name.upper()).inc()
                out += rendered
            else:
                self._status_record(handle, record)
        if out and not self._writer.put_events(out):
            self._metrics.dropped.labels(watcher, "output").inc(len(out))

    def _status_record(self, handle: Handle, record: wire.Record) -> None:
        who = self._who(handle.entry)
        watcher = handle.entry.identity.watcher
        if isinstance(record, wire.OverflowRecord):
            self._metrics.overflows.labels(watcher).inc()
            self._writer.op("inotify_overflow", "warning", **who)
        elif isinstance(record, wire.DroppedRecord):
            self._metrics.dropped.labels(watcher, "fimnotify").inc(record.count)
            self._writer.op("events_dropped", "error", count=record.count, **who)
        elif isinstance(record, wire.ErrorRecord):
            self._error_record(handle, record)
        elif isinstance(record, wire.ReadyRecord):
            with self._lock:
                self._execute(
                    self._core.ready(
                        handle.key,
                        handle.incarnation,
                        record.watches,
                        record.pending,
                        self._clock(),
                    )
                )
            if record.rescan:
                self._writer.op("rescan_done", watches=record.watches, **who)
        elif isinstance(record, wire.ExitRecord):
            handle.exit_record = record

    def _error_record(self, handle: Handle, record: wire.ErrorRecord) -> None:
        path = decode_path(record.path)
        reason = "WatchLimit" if record.code in ("ENOSPC", "EMFILE") else "PathError"
        with self._lock:
            self._core.degraded(
                handle.key, handle.incarnation, reason, f"{record.code} {path}: {record.message}"
            )
        self._writer.op(
            "watch_error",
            "error",
            code=record.code,
            path=path,
            detail=record.message,
            **self._who(handle.entry),
        )

    def _reap(self) -> None:
        now = self._clock()
        exited = []
        with self._lock:
            for handle in self._handles.values():
                status = handle.child.poll()
                if status is not None:
                    exited.append((handle, status))
                elif handle.stop_deadline is not None and now > handle.stop_deadline:
                    handle.child.kill()
        for handle, status in exited:
            self._drain(handle)  # its last events and EXIT record; not under the lock
            kind, detail = self._exit_kind(handle, status)
            with self._lock:
                self._close(handle)
                self._execute(
                    self._core.exited(handle.key, handle.incarnation, kind, detail, self._clock())
                )

    def _close(self, handle: Handle) -> None:
        with self._lock:
            self._epoll.unregister(handle.queue.mqd)
            del self._by_fd[handle.queue.mqd]
            del self._handles[handle.incarnation]
            queues.remove(handle.queue)

    @staticmethod
    def _exit_kind(handle: Handle, status: int) -> tuple[ExitKind, str]:
        record = handle.exit_record
        detail = f"exit status {status}" + (
            f": {record.message}" if record and record.message else ""
        )
        if handle.stop_deadline is not None:
            return ExitKind.STOPPED, detail
        if status == wire.ExitStatus.TARGET_GONE or (
            record is not None and record.reason is wire.ExitReason.TARGET_GONE
        ):
            return ExitKind.TARGET_GONE, detail
        if status == wire.ExitStatus.USAGE:
            return ExitKind.CONFIG_REJECTED, detail
        return ExitKind.CRASHED, detail

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
        """Stops the I/O loop (call `run`'s thread join after), then every child."""
        self._stopping.set()

    def stop_children(self, timeout: float = STOP_GRACE) -> None:
        """SIGTERM to every child, SIGKILL after `timeout`; drains and removes queues.
        Call after the I/O loop has returned."""
        with self._lock:
            for handle in self._handles.values():
                handle.child.terminate()
        deadline = time.monotonic() + timeout
        while self._handles and time.monotonic() < deadline:
            for handle in list(self._handles.values()):
                if handle.child.poll() is not None:
                    self._drain(handle)
                    self._close(handle)
            time.sleep(0.02)
        for handle in list(self._handles.values()):
            handle.child.kill()
            handle.child.wait(STOP_GRACE)
            self._drain(handle)
            self._close(handle)
        self._epoll.close()
