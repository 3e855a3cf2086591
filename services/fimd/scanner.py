"""The thread that compares watched trees with their baselines and stores them.

The daemon asks for a comparison (`request`) when a watch with baseline subjects becomes
active (a new watch, a container restart, a fimd or engine restart: `activation`) and after
an overflow rescan (`rescan`); the watches are in place by then, so a change during the
walk is also an event. One thread does the work, one request at a time; requests wait in a
map by watch (a newer one replaces an older one of the same watch, so the backlog is
bounded by the watches of the node). For each baseline subject: walk the tree inside the
container's root (`libs.rootfs.walk`), diff it with the stored baseline
(`services.fimd.baseline`), write the drift lines and one scan line, store the new baseline
(`baseline_store`). Baselines no watch has used for
`orphan_grace` seconds are removed: those of a destroyed watch (`forget`: its pod or
FimWatcher is gone), and those of watches that no longer exist after fimd was down. The
grace keeps a container restart's baseline: the controller destroys the watch while the
container is not running and creates it again. A watch with a scan interval
(`schedule`) is also compared every interval after its last activation (`scheduled`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import attrs

from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.subject import SubjectConfig
from libs.rootfs.target import Target as PinnedRoot
from libs.rootfs.target import TargetGoneError, TargetMismatchError
from libs.rootfs.walk import DEFAULT_MAX_ENTRIES, walk
from services.fimd import baseline
from services.fimd.baseline_store import BaselineKey, Store, StoreError
from services.fimd.lines import Identity, record_line
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.supervisor import Key

#: Drift lines one subject's comparison writes at most; the rest are only counted.
MAX_DRIFT_LINES = 10_000
DEFAULT_ORPHAN_GRACE = 3600.0
_IDLE = 60.0


@attrs.frozen
class ScanRequest:
    key: Key  # (watcher UID, pod UID, container)
    identity: Identity
    pid: int
    process: ProcessIdentity
    subjects: tuple[SubjectConfig, ...]
    reason: str
    #: The watch spec's scan_request when asked: the comparison answers it (ScanSummary).
    scan_request: str = ""


@attrs.frozen
class LastScan:
    """The last comparison of a watch (summed over its subjects), for its status."""

    time_ns: int
    reason: str
    scanned: int
    added: int
    removed: int
    changed: int
    request: str = ""  # the scan_request it answered ("" if none)


class Scanner:
    def __init__(
        self,
        path: str,
        writer: LineWriter,
        metrics: Metrics,
        *,
        proc_root: str = "/proc",
        max_bytes: int,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        orphan_grace: float = DEFAULT_ORPHAN_GRACE,
        live: Callable[[], set[Key]] = set,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._writer = writer
        self._metrics = metrics
        self._proc_root = proc_root
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._orphan_grace = orphan_grace
        #: The keys of the watches fimd holds (the daemon sets it to its own).
        self.live = live
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[Key, ScanRequest] = {}
        self._forget: list[Key] = []
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._started = clock()
        #: Scheduled comparisons: next due time (clock), interval, the request to repeat.
        self._schedule: dict[Key, tuple[float, float, ScanRequest]] = {}
        self.last: dict[Key, LastScan] = {}
        #: When each stored baseline's watch was last held (thread only).
        self._seen: dict[Key, float] = {}

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fimd-baseline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finishes the comparison under way (not the waiting ones) and ends the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def request(self, request: ScanRequest) -> None:
        with self._cond:
            self._pending[request.key] = request
            self._cond.notify_all()

    def schedule(self, request: ScanRequest, interval: float) -> None:
        """Compares the watch again every `interval` seconds from now (0: not any more)."""
        with self._cond:
            if interval > 0:
                due = self._clock() + interval
                self._schedule[request.key] = (
                    due,
                    interval,
                    attrs.evolve(request, reason="scheduled"),
                )
            else:
                self._schedule.pop(request.key, None)
            self._cond.notify_all()

    def poke(self) -> None:
        """Looks at the schedule now (after the clock was moved, in tests)."""
        with self._cond:
            self._cond.notify_all()

    def _due(self) -> float:
        """Seconds until the next scheduled comparison (queued if due now); _IDLE if none."""
        now = self._clock()
        wait = _IDLE
        for key, (due, interval, request) in list(self._schedule.items()):
            next_due = due
            if due <= now:
                self._pending.setdefault(key, request)
                next_due = max(due + interval, now)
                self._schedule[key] = (next_due, interval, request)
            wait = min(wait, next_due - now)
        return max(wait, 0.0)

    def forget(self, key: Key) -> None:
        """The watch was destroyed: its baselines go, a waiting comparison too."""
        with self._cond:
            self._pending.pop(key, None)
            self._schedule.pop(key, None)
            self._forget.append(key)
            self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing waiting and nothing under way (for tests and benchmarks)."""
        with self._cond:
            return not self._pending and not self._forget and not self._busy

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = Store(self._path)
        except StoreError as err:
            self._writer.op("baseline_unavailable", "error", detail=str(err))
            return
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._pending or self._forget):
                        timeout = self._due()  # queues the comparisons that are due
                        if self._pending or not self._cond.wait(timeout):
                            break
                    if self._stopping:
                        return
                    forget, self._forget = self._forget, []
                    request = self._take()
                    self._busy = request is not None
                self._remove(store, forget)
                if request is not None:
                    self._compare(store, request)
                self._collect_orphans(store)
                with self._cond:
                    self._busy = False
        finally:
            store.close()

    def _take(self) -> ScanRequest | None:
        if not self._pending:
            return None
        key = next(iter(self._pending))
        return self._pending.pop(key)

    def _remove(self, store: Store, keys: list[Key]) -> None:
        """Destroyed watches: their grace starts now (a container restart destroys and
        creates its watch again, and must find its baseline)."""
        now = self._clock()
        for key in keys:
            self.last.pop(key, None)
            self._seen[key] = now
        if keys:
            self._collect_orphans(store)

    def _collect_orphans(self, store: Store) -> None:
        """Removes the baselines that no watch has used for `orphan_grace` seconds (since
        fimd started, for those of watches it never held)."""
        now = self._clock()
        live = self.live()
        orphans, kept = [], set()
        for key, _ in store.baselines():
            watch = _watch_of(key)
            if watch in live:
                self._seen[watch] = now
            elif now - self._seen.setdefault(watch, self._started) >= self._orphan_grace:
                orphans.append(key)
                continue
            kept.add(watch)
        self._seen = {k: v for k, v in self._seen.items() if k in kept or k in live}
        if orphans:
            removed = store.remove(orphans)
            self._writer.op("baselines_removed", count=removed, detail="no watch uses them")

    def _compare(self, store: Store, request: ScanRequest) -> None:
        try:
            root = PinnedRoot.open(self._proc_root, request.pid, request.process)
        except (TargetGoneError, TargetMismatchError, OSError) as err:
            self._writer.op(
                "baseline_skipped", "warning", reason=request.reason,
                detail=f"container root: {err}", **_who(request.identity),
            )  # fmt: skip
            return
        total = LastScan(time.time_ns(), request.reason, 0, 0, 0, 0, request.scan_request)
        try:
            for subject in request.subjects:
                if baseline.has_baseline(subject):
                    scan = self._subject(store, request, root.root, subject)
                    total = attrs.evolve(
                        total,
                        scanned=total.scanned + scan.scanned,
                        added=total.added + scan.added,
                        removed=total.removed + scan.removed,
                        changed=total.changed + scan.changed,
                    )
        finally:
            root.close()
        self.last[request.key] = total

    def _subject(
        self, store: Store, request: ScanRequest, root: int, subject: SubjectConfig
    ) -> baseline.Scan:
        key = baseline_key(request.identity.namespace, request.key, subject)
        before = store.open(key)  # read by path and row by row: only the walk is held
        started = time.monotonic()
        walked = walk(
            root,
            [os.fsencode(p) for p in subject.paths],
            baseline.rules(subject, max_bytes=self._max_bytes, max_entries=self._max_entries),
            before.get if before is not None else lambda _: None,
        )
        # The first walk makes the baseline; the others write only what differs.
        found = baseline.compare(before.entries(), walked) if before is not None else None
        changes = found.changes if found is not None else []
        scan = baseline.summarize(
            request.reason, before is not None, walked, changes, time.monotonic() - started
        )
        self._write(request, subject, changes, scan)
        if found is None:
            store.replace(key, walked.entries, time.time_ns(), truncated=walked.truncated)
        else:
            store.update(key, time.time_ns(), found.write, found.gone, truncated=walked.truncated)
        return scan

    def _write(
        self,
        request: ScanRequest,
        subject: SubjectConfig,
        changes: list[baseline.Change],
        scan: baseline.Scan,
    ) -> None:
        who = request.identity
        out = [
            record_line("drift", who, baseline.drift_record(c, request.reason, subject.tags))
            for c in changes[:MAX_DRIFT_LINES]
        ]
        summary = baseline.scan_record(scan)
        summary["driftLinesOmitted"] = max(0, len(changes) - MAX_DRIFT_LINES)
        summary["paths"] = list(subject.paths)
        out.append(record_line("scan", who, summary))
        for change in changes:
            self._metrics.drift.labels(who.watcher, change.change).inc()
        self._metrics.scans.labels(who.watcher, request.reason).inc()
        if not self._writer.put_events(out):
            self._metrics.dropped.labels(who.watcher, "output").inc(len(out))


def baseline_key(namespace: str, key: Key, subject: SubjectConfig) -> BaselineKey:
    """The key of a subject's baseline in the watch `key` (watcher UID, pod UID, container)."""
    watcher_uid, pod_uid, container = key
    return BaselineKey(namespace, pod_uid, container, watcher_uid, baseline.subject_key(subject))


def _watch_of(key: BaselineKey) -> Key:
    return (key.watcher_uid, key.pod_uid, key.container)


def _who(identity: Identity) -> dict[str, str]:
    fields = identity.fields()
    del fields["node"]
    return fields
