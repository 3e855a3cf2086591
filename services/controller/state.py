"""What the controller knows of each node's fimd: its watches, and creates it rejected.

Built from GetWatchState and kept current with the results of the controller's own calls,
so between sweeps the controller needs no call to know a node's state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import attrs

from fim.v1 import fim_pb2
from services.controller.bounds import MAX_STORED, clip
from services.controller.desired import Desired, Key

#: The gRPC code of fimd's admission control: the create would exceed one of the node's
#: budgets (inotify watches, memory). It refuses that one create; capacity may free up later.
OVER_CAPACITY = "RESOURCE_EXHAUSTED"
#: fimd's bound on a scan_request (fim.proto); ScanSummary.request echoes one.
MAX_REQUEST = 64


@attrs.frozen(kw_only=True)
class LastScan:
    """A watch's last comparison with its baselines, as fimd reports it."""

    time: datetime
    scanned: int
    added: int
    removed: int
    changed: int
    #: The scan_request (a digest of the FimWatcher's scan-request annotation) it answered.
    request: str = ""


@attrs.frozen(kw_only=True)
class Observed:
    """One watch as fimd reports it."""

    key: Key
    config_hash: str
    phase: fim_pb2.WatchPhase.ValueType
    reason: str = ""
    message: str = ""
    last_scan: LastScan | None = None

    @classmethod
    def from_proto(cls, status: fim_pb2.WatchStatus) -> Observed:
        """fimd's report, its reason and message bounded (they may name a pod's files)."""
        return cls(
            key=Key.from_proto(status.key),
            config_hash=status.config_hash,
            phase=status.phase,
            reason=clip(status.reason, MAX_STORED),
            message=clip(status.message, MAX_STORED),
            last_scan=_last_scan(status),
        )


def _last_scan(status: fim_pb2.WatchStatus) -> LastScan | None:
    if not status.HasField("last_scan"):
        return None
    scan = status.last_scan
    return LastScan(
        time=scan.time.ToDatetime(tzinfo=UTC), scanned=scan.scanned, added=scan.added,
        removed=scan.removed, changed=scan.changed, request=clip(scan.request, MAX_REQUEST),
    )  # fmt: skip


@attrs.frozen(kw_only=True)
class Rejection:
    """A CreateWatch fimd refused; not retried with the same spec before `retry_at`."""

    config_hash: str
    code: str
    message: str
    retry_at: datetime
    attempts: int = 1

    @property
    def over_capacity(self) -> bool:
        """The node had no room for the watch, rather than refusing the watch itself."""
        return self.code == OVER_CAPACITY


# Read-only copies: states are shared between worker threads and plans.
def _watches(value: Mapping[Key, Observed]) -> Mapping[Key, Observed]:
    return MappingProxyType(dict(value))


def _rejections(value: Mapping[Key, Rejection]) -> Mapping[Key, Rejection]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class NodeState:
    """What one node's fimd holds, as far as the controller knows."""

    node: str
    instance_id: str
    watches: Mapping[Key, Observed] = attrs.field(factory=dict, converter=_watches)
    rejected: Mapping[Key, Rejection] = attrs.field(factory=dict, converter=_rejections)

    def applied(
        self,
        *,
        observed: Iterable[Observed] = (),
        destroyed: Iterable[Key] = (),
        rejected: Mapping[Key, Rejection] | None = None,
    ) -> NodeState:
        """This state after a batch of our own calls: watches fimd destroyed, created (a
        created watch is no longer rejected) and creates it rejected. One copy per batch."""
        watches, rejections = dict(self.watches), dict(self.rejected)
        for key in destroyed:
            watches.pop(key, None)
        for watch in observed:
            watches[watch.key] = watch
            rejections.pop(watch.key, None)
        rejections.update(rejected or {})
        return attrs.evolve(self, watches=watches, rejected=rejections)

    def pruned(self, desired: Mapping[Key, Desired]) -> NodeState:
        """Forgets rejections of watches no longer desired."""
        rejected = {k: v for k, v in self.rejected.items() if k in desired}
        return (
            self if len(rejected) == len(self.rejected) else attrs.evolve(self, rejected=rejected)
        )

    def holds(self, watcher_uid: str) -> bool:
        return any(key.watcher_uid == watcher_uid for key in self.watches)

    def awaits_scan(self, desired: Mapping[Key, Desired]) -> bool:
        """An ACTIVE watch of the desired spec with baseline subjects whose last comparison
        has not answered its scan_request yet (`kubectl fim scan` waits for the status)."""
        for key, want in desired.items():
            observed = self.watches.get(key)
            request = want.spec.scan_request
            if (
                request
                and observed is not None
                and observed.config_hash == want.config_hash
                and observed.phase == fim_pb2.WATCH_PHASE_ACTIVE
                and any(s.attributes or s.hash for s in want.spec.subjects)
                and (observed.last_scan is None or observed.last_scan.request != request)
            ):
                return True
        return False


#: Why a node's state is not current before the controller first reached its fimd.
NOT_CONTACTED = "not contacted yet"


@attrs.frozen
class NodeView:
    """A node with a fimd as the status and the finalizer see it.

    `state`: what its fimd last reported (kept current by our calls), None if never read;
    kept when the node fails, so a deletion knows which watchers it may still hold.
    `error`: why that state is not current ("" when it is): its fimd is unreachable, or
    `sync_failed` (the node's sync raised an unexpected exception; `error` then names only
    the exception type, as its message may quote other tenants' data), or NOT_CONTACTED.
    `maybe_holds`: watcher UIDs whose creates were sent without a known outcome.
    `expired`: the node has failed for longer than the grace period: it no longer blocks a
    deletion (its sweep destroys the orphaned watches once it is back).
    `desired`: the desired watches its last sync computed (the status reuses their hashes).
    """

    state: NodeState | None
    error: str = ""
    sync_failed: bool = False
    maybe_holds: frozenset[str] = frozenset()
    expired: bool = False
    desired: Mapping[Key, Desired] = attrs.field(factory=dict)

    @property
    def current(self) -> NodeState | None:
        """The state, if it is current (the node is reachable and in sync)."""
        return None if self.error else self.state

    @property
    def first_contact_pending(self) -> bool:
        return self.state is None and self.error == NOT_CONTACTED

    def may_hold(self, watcher_uid: str) -> bool:
        """Whether the node may hold `watcher_uid`'s watches and so blocks its deletion."""
        if self.expired:
            return False
        if self.state is None:
            return True  # never read: it may hold anything
        return self.state.holds(watcher_uid) or watcher_uid in self.maybe_holds


@attrs.frozen(kw_only=True)
class NodeRecord:
    """Everything the controller keeps about one node (the NodeBook's entries)."""

    state: NodeState | None = None
    #: Re-read the state with GetWatchState before the next plan (fimd replaced, failed, ...).
    stale: bool = True
    #: The next sync follows a sweep: FAILED watches are recreated.
    sweeping: bool = False
    #: fimd unreachable: the error, and since when (for the deletion grace period).
    error: str = ""
    failing_since: datetime | None = None
    #: The node's sync raised unexpectedly: the exception type.
    sync_failure: str = ""
    #: Consecutive syncs that left PENDING watches (the recheck backs off with it).
    pending_rechecks: int = 0
    maybe_holds: frozenset[str] = frozenset()
    desired: Mapping[Key, Desired] = attrs.field(factory=dict)

    def view(self, now: datetime, grace: timedelta) -> NodeView:
        expired = self.failing_since is not None and now - self.failing_since > grace
        if self.error:
            error, failed = self.error, False
        elif self.sync_failure:
            error, failed = self.sync_failure, True
        elif self.state is None:
            error, failed = NOT_CONTACTED, False
        else:
            error, failed = "", False
        return NodeView(
            self.state,
            error,
            sync_failed=failed,
            maybe_holds=self.maybe_holds,
            expired=expired,
            desired=self.desired,
        )

    def read(self, state: NodeState) -> NodeRecord:
        """GetWatchState answered: the state is current and authoritative again."""
        return attrs.evolve(
            self, state=state, stale=False, error="", failing_since=None, maybe_holds=frozenset()
        )

    def synced(self, state: NodeState) -> NodeRecord:
        """A sync completed: every call succeeded or was refused on its own."""
        return attrs.evolve(
            self,
            state=state,
            sweeping=False,
            error="",
            sync_failure="",
            failing_since=None,
            maybe_holds=frozenset(),
        )

    def unreachable(self, error: str, now: datetime, maybe: Iterable[str] = ()) -> NodeRecord:
        """fimd did not answer: keep the last known state, re-read it on the next contact."""
        return attrs.evolve(
            self,
            stale=True,
            error=error,
            sync_failure="",
            failing_since=self.failing_since or now,
            maybe_holds=self.maybe_holds | frozenset(maybe),
        )

    def failed(self, error_type: str, now: datetime) -> NodeRecord:
        """The sync raised unexpectedly (the latest failure is what a view shows)."""
        return attrs.evolve(
            self, error="", sync_failure=error_type, failing_since=self.failing_since or now
        )


class NodeBook:
    """Every node's NodeRecord, shared by the worker threads; each update is atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, NodeRecord] = {}

    def get(self, node: str) -> NodeRecord:
        with self._lock:
            return self._records.get(node) or NodeRecord()

    def update(self, node: str, change: Callable[[NodeRecord], NodeRecord]) -> NodeRecord:
        """Applies `change` to the node's record (a new one if unknown); returns the result."""
        with self._lock:
            record = change(self._records.get(node) or NodeRecord())
            self._records[node] = record
            return record

    def forget(self, node: str) -> NodeRecord | None:
        with self._lock:
            return self._records.pop(node, None)

    def nodes(self) -> list[str]:
        with self._lock:
            return list(self._records)

    def holding(self, watcher_uids: set[str]) -> set[str]:
        """Nodes whose last known state holds (or may hold) any of these watchers' watches."""
        with self._lock:
            return {
                node
                for node, record in self._records.items()
                if record.maybe_holds & watcher_uids
                or (record.state and any(record.state.holds(uid) for uid in watcher_uids))
            }

    def views(self, nodes: Iterable[str], now: datetime, grace: timedelta) -> dict[str, NodeView]:
        with self._lock:
            return {
                node: (self._records.get(node) or NodeRecord()).view(now, grace) for node in nodes
            }
