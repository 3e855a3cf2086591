"""The controller: informers -> work queue -> level-triggered sync handlers.

Shaped like sample-controller / controller-runtime: typed keys (keys.py), `sync(key)`
returns a Result (requeue after N seconds) or raises, and the worker loop alone decides
about retries (backoff on failure, forget on success, requeue when asked):
- NodeKey drives that node's fimd to the desired watches (reconcile.plan_node) with
  CreateWatch/DestroyWatch, and records the results in the node's record (state.NodeBook);
- WatcherKey writes that FimWatcher's finalizer and status.

The known state of each fimd comes from GetWatchState and is kept current with the results
of our own calls, so a sync calls fimd only for differences: steady state costs nothing,
and a change costs calls proportional to what it changed. GetWatchState is called when a
node's state is unknown (start, fimd replaced or unreachable) and on the periodic sweep,
which re-reads every fimd, recreates FAILED watches and so repairs any drift (a fimd or a
controller that died uncleanly, a watch lost behind our back).

Fencing: every fimd call, status or finalizer patch and Event is preceded by a check that
the leader lease is held for at least that action's deadline (leader.held_for); if not,
the action is not taken (NotLeader) and the key retried.

No key's sync can stop the others: whatever it raises is logged (bounded), counted and the
key retried with the queue's per-key backoff. A worker that dies anyway (an exception
escaping its loop) or a sync that runs longer than `max_sync_seconds` makes `health` report
it, so /healthz fails and the kubelet restarts the pod.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import attrs

from fim.v1 import fim_pb2
from libs import backoff
from libs.k8s.codec import status_to_dict
from libs.k8s.model import API_VERSION, PLURAL, FimWatcherStatus
from services.controller.bounds import MAX_STORED, clip, describe, error_type, frames
from services.controller.desired import Desired, Key
from services.controller.events import NORMAL, WARNING, EventRecorder
from services.controller.fimd_client import (
    Endpoint,
    FimdClient,
    FimdError,
    FimdPool,
    endpoints,
)
from services.controller.informer import Informer
from services.controller.keys import NodeKey, QueueKey, Result, WatcherKey
from services.controller.kube import MERGE_PATCH, NOT_FOUND, ApiError, Kube
from services.controller.leader import NotLeader, Unfenced
from services.controller.metrics import Metrics
from services.controller.objects import (
    FINALIZER,
    Pod,
    Watcher,
    pod_from_dict,
    watcher_from_dict,
)
from services.controller.reconcile import (
    FinalizerAction,
    NodePlan,
    desired_for_node,
    finalizer_action,
    plan_node,
)
from services.controller.state import NodeBook, NodeState, NodeView, Rejection
from services.controller.status import NODE_CAPACITY, watcher_status
from services.controller.workqueue import ShutDown, WorkQueue

MAX_REJECTION_BACKOFF = timedelta(minutes=5)
#: The Event type and reason for each outcome `_execute` counts.
_EVENTS = {
    "added": (NORMAL, "WatchesAdded"),
    "updated": (NORMAL, "WatchesUpdated"),
    "removed": (NORMAL, "WatchesRemoved"),
    "failed": (WARNING, "WatchesFailed"),
    "over capacity": (WARNING, NODE_CAPACITY),
}

_T = TypeVar("_T")

log = logging.getLogger(__name__)


class Fence(Protocol):
    """Whether an action that ends within `seconds` from now ends while we surely lead."""

    def held_for(self, seconds: float) -> bool: ...


@attrs.frozen(kw_only=True)
class Settings:
    namespace: str
    fimd_selector: str = "app.kubernetes.io/name=fimd"
    fimd_port_name: str = "grpc"
    fimd_use_host_ip: bool = False
    resync_seconds: float = 60.0
    pending_recheck_seconds: float = 1.0
    workers: int = 4
    #: A sync running longer than this is a stuck worker: /healthz fails.
    max_sync_seconds: float = 300.0
    #: A node failing for longer no longer blocks FimWatcher deletions.
    node_grace: timedelta = timedelta(minutes=2)
    #: Deadline of each fimd call and each API write: what the fence must still cover.
    action_seconds: float = 5.0


def _now() -> datetime:
    # metav1.Time has second precision: so have our timestamps, or statuses never compare equal.
    return datetime.now(UTC).replace(microsecond=0)


class Controller:
    """Keeps every node's fimd and every FimWatcher's status in line with the caches."""

    def __init__(
        self,
        kube: Kube,
        pool: FimdPool,
        settings: Settings,
        metrics: Metrics,
        events: EventRecorder,
        *,
        clock: Callable[[], datetime] = _now,
        fence: Fence | None = None,
    ) -> None:
        self._kube = kube
        self._pool = pool
        self._settings = settings
        self._metrics = metrics
        self._events = events
        self._clock = clock
        self._fence: Fence = fence or Unfenced()
        self.queue: WorkQueue[QueueKey] = WorkQueue(max_delay=settings.resync_seconds)
        metrics.queue_depth.set_function(lambda: len(self.queue))
        self.watchers: Informer[Watcher] = Informer(
            kube,
            f"/apis/{API_VERSION}/{PLURAL}",
            parse=watcher_from_dict,
            on_change=self._watcher_changed,
            indexers={"namespace": lambda w: w.meta.namespace, "uid": lambda w: w.meta.uid},
        )
        self.pods: Informer[Pod] = Informer(
            kube,
            "/api/v1/pods",
            parse=pod_from_dict,
            on_change=self._pod_changed,
            indexers={"namespace": lambda p: p.namespace, "node": lambda p: p.node_name},
        )
        self.fimds: Informer[Pod] = Informer(
            kube,
            f"/api/v1/namespaces/{settings.namespace}/pods",
            query={"labelSelector": settings.fimd_selector},
            parse=pod_from_dict,
            on_change=self._fimd_changed,
        )
        self.book = NodeBook()
        self._lock = threading.Lock()  # the thread lists and `_running`
        self._threads: list[threading.Thread] = []  # informers and the sweeper
        self._workers: list[threading.Thread] = []
        #: worker name -> (key, monotonic start) of the sync it is running.
        self._running: dict[str, tuple[QueueKey, float]] = {}
        self._stopping = False
        metrics.workers_alive.set_function(
            lambda: sum(worker.is_alive() for worker in list(self._workers))
        )

    # Event handlers: enqueue what a change may affect; never block, never call out.
    def _pod_changed(self, old: Pod | None, new: Pod | None) -> None:
        for pod in (old, new):
            if pod is None:
                continue
            if pod.node_name:
                self.queue.add(NodeKey(pod.node_name))
            for watcher in self.watchers.by_index("namespace", pod.namespace):
                if watcher.spec is not None and watcher.spec.selector.matches(pod.labels):
                    self.queue.add(WatcherKey(watcher.key))

    def _watcher_changed(self, old: Watcher | None, new: Watcher | None) -> None:
        current = new or old
        assert current is not None
        self.queue.add(WatcherKey(current.key))
        if old is not None and new is not None and _intent(old) == _intent(new):
            return  # a status or metadata-only update: no watch changes
        uids = {w.meta.uid for w in (old, new) if w is not None}
        nodes = {p.node_name for p in self.pods.by_index("namespace", current.meta.namespace)}
        nodes |= self.book.holding(uids)
        for node in nodes - {""}:
            self.queue.add(NodeKey(node))

    def _fimd_changed(self, old: Pod | None, new: Pod | None) -> None:
        for pod in (old, new):
            if pod is not None and pod.node_name:
                # Maybe a new fimd: re-read its state.
                self.book.update(pod.node_name, lambda r: attrs.evolve(r, stale=True))
                self.queue.add(NodeKey(pod.node_name))

    # Lifecycle.
    def start_informers(self, stop: threading.Event) -> None:
        for informer in (self.fimds, self.watchers, self.pods):
            self._threads.append(informer.start(stop))

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (self.fimds, self.watchers, self.pods))

    def health(self) -> list[str]:
        """What is wrong with this replica's threads (none: healthy), for /healthz.

        Every informer and the sweeper must run; once workers were started (this replica
        leads), all of them must be alive and none may be stuck in one sync for longer than
        `max_sync_seconds`. A standby runs no workers and is healthy without them.
        """
        problems = [f"thread {t.name} exited" for t in self._threads if not t.is_alive()]
        with self._lock:
            if self._stopping or not self._workers:
                return problems
            alive = sum(worker.is_alive() for worker in self._workers)
            running = dict(self._running)
        if alive < self._settings.workers:
            problems.append(f"{alive} of {self._settings.workers} workers alive")
        now = time.monotonic()
        for name, (key, started) in sorted(running.items()):
            if now - started > self._settings.max_sync_seconds:
                problems.append(
                    f"{name} stuck: sync of {clip(str(key), 512)} running for"
                    f" {now - started:.0f} s (limit {self._settings.max_sync_seconds:g} s)"
                )
        return problems

    def healthy(self) -> bool:
        return not self.health()

    def readiness(self) -> list[str]:
        """What keeps this replica from being ready (none: ready), for /readyz."""
        return [] if self.synced() else ["caches not synced yet"]

    def start_workers(self, stop: threading.Event) -> None:
        """Waits for the caches, then reconciles everything and keeps doing so until `stop`."""
        while not self.synced():
            if stop.wait(0.1):
                return
        self._safe_sweep()
        with self._lock:
            for index in range(self._settings.workers):
                worker = threading.Thread(target=self._work, name=f"worker-{index}", daemon=True)
                self._workers.append(worker)
                worker.start()
        sweeper = threading.Thread(
            target=self._sweep_loop, args=(stop,), name="sweeper", daemon=True
        )
        sweeper.start()
        self._threads.append(sweeper)

    def shut_down(self, timeout: float = 10.0) -> None:
        """Stops taking work and waits (bounded) for the running syncs."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers)
        self.queue.shut_down()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._pool.close()

    def sweep(self) -> None:
        """Re-reads every fimd, retries FAILED watches and recomputes every status."""
        live = self._endpoints()
        self._pool.refresh(live.values())
        for node in live:
            self.book.update(node, lambda r: attrs.evolve(r, stale=True, sweeping=True))
        for node in set(live) | set(self.book.nodes()):
            self.queue.add(NodeKey(node))
        for watcher in self.watchers.items():
            self.queue.add(WatcherKey(watcher.key))

    def _sweep_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self._settings.resync_seconds):
            self._safe_sweep()

    def _safe_sweep(self) -> None:
        """A sweep that fails (e.g. TLS files unreadable mid-rotation) is tried next period."""
        try:
            self.sweep()
        except Exception as err:
            self._unexpected("sweep", "sweep", err, retry_in=self._settings.resync_seconds)

    def _work(self) -> None:
        """Processes keys until the queue shuts down; any exception of a sync is handled there.

        Whatever escapes anyway (a BaseException such as SystemExit from a sync) ends this
        worker: it is logged here and `health` reports the missing worker.
        """
        name = threading.current_thread().name
        try:
            while True:
                try:
                    key = self.queue.get()
                except ShutDown:
                    return
                with self._lock:
                    self._running[name] = (key, time.monotonic())
                try:
                    self.process(key)
                except Exception as err:  # process's own failure handling failed: last resort
                    self._unexpected("worker", str(key), err, retry_in=self.queue.retry(key))
                finally:
                    with self._lock:
                        self._running.pop(name, None)
                    self.queue.done(key)
        except BaseException as err:  # the thread ends: say why (health() reports it)
            log.critical(
                "worker died",
                extra={
                    "worker": name,
                    "error_type": error_type(err),
                    "error": describe(err),
                    "traceback": frames(err),
                },
            )

    def sync(self, key: QueueKey) -> Result:
        """One level-triggered sync of `key`: a Result, or an exception (the failure)."""
        if isinstance(key, NodeKey):
            return self._sync_node(key.name)
        return self._sync_watcher(key.name)

    def process(self, key: QueueKey) -> None:
        """Syncs `key` and acts on the outcome; the only place that requeues a key.

        Success forgets the key's backoff and requeues it if the Result asks. A failure is
        retried with the per-key backoff: NotLeader (the fence refused an action) quietly,
        ApiError and FimdError (an API server or fimd failing) as expected, anything else
        as a controller bug or input it cannot handle: logged with its type and where it
        was raised, counted in fim_controller_sync_errors_total, so it costs only this key.
        """
        kind = key.kind
        started = time.monotonic()
        try:
            result = self.sync(key)
        except NotLeader:
            delay = self.queue.retry(key)
            log.info("not leading: action skipped", extra={"key": str(key), "retry_in": delay})
        except (ApiError, FimdError) as err:
            self._metrics.reconciles.labels(kind, "error").inc()
            self._metrics.errors.labels(kind).inc()
            delay = self.queue.retry(key)
            log.warning(
                "sync failed", extra={"key": str(key), "error": describe(err), "retry_in": delay}
            )
        except Exception as err:
            self._metrics.reconciles.labels(kind, "error").inc()
            self._metrics.errors.labels(kind).inc()
            self._unexpected(kind, str(key), err, retry_in=self.queue.retry(key))
            if isinstance(key, NodeKey):
                self._node_sync_failed(key.name, err)
        else:
            self._metrics.reconciles.labels(kind, "ok").inc()
            self.queue.forget(key)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
        finally:
            self._metrics.reconcile_seconds.labels(kind).observe(time.monotonic() - started)

    def _unexpected(self, kind: str, key: str, err: Exception, *, retry_in: float) -> None:
        """Logs and counts an exception nothing expected; bounded, whatever it says."""
        self._metrics.sync_errors.labels(kind, error_type(err)).inc()
        log.error(
            "sync failed unexpectedly",
            extra={
                "kind": kind,
                "key": clip(key, 512),
                "error_type": error_type(err),
                "error": describe(err),
                "traceback": frames(err),
                "retry_in": retry_in,
            },
        )

    # Fencing.
    def _check_fence(self) -> None:
        """Raises NotLeader unless an action started now surely ends while we lead."""
        if not self._fence.held_for(self._settings.action_seconds):
            raise NotLeader

    def _fenced(self, items: Iterable[_T]) -> Iterator[_T]:
        """`items`, each checked against the fence just before it is sent."""
        for item in items:
            self._check_fence()
            yield item

    # Node sync.
    def _endpoints(self) -> dict[str, Endpoint]:
        return endpoints(
            self.fimds.items(),
            port_name=self._settings.fimd_port_name,
            use_host_ip=self._settings.fimd_use_host_ip,
        )

    def _watchers_for(self, pods: Iterable[Pod]) -> list[Watcher]:
        namespaces = {pod.namespace for pod in pods}
        return [w for ns in sorted(namespaces) for w in self.watchers.by_index("namespace", ns)]

    def _sync_node(self, node: str) -> Result:
        endpoint = self._endpoints().get(node)
        if endpoint is None:
            self._forget_node(node)
            return Result()
        client = self._pool.client(endpoint)
        pods = self.pods.by_index("node", node)
        desired = desired_for_node(node, self._watchers_for(pods), pods)
        record = self.book.update(node, lambda r: attrs.evolve(r, desired=desired))
        before = None if record.stale else record.state
        plan = NodePlan()
        try:
            state = (before or self._read_state(node, client)).pruned(desired)
            plan = plan_node(desired, state, now=self._clock(), retry_failed=record.sweeping)
            state = self._execute(node, client, plan, state)
        except FimdError as err:
            self._unreachable(node, err, maybe={w.key.watcher_uid for w in plan.create})
            raise
        after = self.book.update(node, lambda r: r.synced(state))
        self._metrics.fimd_reachable.labels(node).set(1)
        if before is None or before != after.state:
            self._enqueue_watchers_of(node, after.state, desired.keys())
        return self._requeue_node(node, state)

    def _read_state(self, node: str, client: FimdClient) -> NodeState:
        self._check_fence()
        state = client.get_state()
        self._metrics.actions.labels("get_state", "ok").inc()
        if state.node != node:
            says = clip(state.node, 256)
            raise FimdError("WRONG_NODE", f"fimd for node {node} says it runs on {says!r}")
        previous = self.book.get(node).state
        self.book.update(node, lambda r: r.read(state))
        if previous is not None and previous.instance_id != state.instance_id:
            log.info(
                "fimd restarted", extra={"node": node, "instance": clip(state.instance_id, 256)}
            )
        return state

    def _execute(
        self, node: str, client: FimdClient, plan: NodePlan, state: NodeState
    ) -> NodeState:
        """Carries out `plan`; whatever happens, the state records every call that succeeded.

        Collects the results and applies them to the state once, in `finally` (a copy per
        call would cost O(n^2) for a node's first thousands of watches).
        """
        destroyed: set[Key] = set()
        observed = {}
        rejected: dict[Key, Rejection] = {}
        changes: dict[str, Counter[str]] = {}
        try:
            for key, result in client.destroy_many(self._fenced(plan.destroy)):
                if isinstance(result, FimdError):
                    raise result
                destroyed.add(key)
                self._metrics.actions.labels("destroy", "ok").inc()
                changes.setdefault(key.watcher_uid, Counter())["removed"] += 1
            for want, created in client.create_many(self._fenced(plan.create)):
                if isinstance(created, FimdError):
                    if not created.rejected:
                        raise created
                    # Only this create failed: the node is reachable, its other calls go on.
                    rejection = _rejection(
                        state.rejected.get(want.key), want, created, self._clock()
                    )
                    rejected[want.key] = rejection
                    verb = "over capacity" if rejection.over_capacity else "failed"
                else:
                    had = want.key in state.watches and want.key not in destroyed
                    verb = "updated" if had else "added"
                    observed[want.key] = created
                result_label = "error" if isinstance(created, FimdError) else "ok"
                self._metrics.actions.labels("create", result_label).inc()
                changes.setdefault(want.key.watcher_uid, Counter())[verb] += 1
        finally:
            state = state.applied(
                observed=observed.values(), destroyed=destroyed, rejected=rejected
            )
            self.book.update(node, lambda r: attrs.evolve(r, state=state))
            self._record_events(node, changes)
        return state

    def _requeue_node(self, node: str, state: NodeState) -> Result:
        """When to sync the node again unasked: a rejection's backoff ends, or its PENDING
        watches, or watches with an unanswered scan request, are to be re-read (backing off
        while they stay so)."""
        result = Result()
        now = self._clock()
        for rejection in state.rejected.values():
            result = result.sooner((rejection.retry_at - now).total_seconds())
        pending = any(
            w.phase == fim_pb2.WATCH_PHASE_PENDING for w in state.watches.values()
        ) or state.awaits_scan(self.book.get(node).desired)
        if not pending:
            self.book.update(node, lambda r: attrs.evolve(r, pending_rechecks=0))
            return result
        record = self.book.update(
            node, lambda r: attrs.evolve(r, stale=True, pending_rechecks=r.pending_rechecks + 1)
        )
        base, cap = self._settings.pending_recheck_seconds, self._settings.resync_seconds
        return result.sooner(backoff.delay(record.pending_rechecks, base=base, cap=cap))

    def _record_events(self, node: str, changes: dict[str, Counter[str]]) -> None:
        for uid, counts in changes.items():
            for watcher in self.watchers.by_index("uid", uid):
                for verb, count in sorted(counts.items()):
                    kind, reason = _EVENTS[verb]
                    message = f"{count} watch(es) {verb} on node {node}"
                    if self._fence.held_for(self._settings.action_seconds):
                        self._events.emit(watcher.meta, kind, reason, message)

    def _unreachable(self, node: str, err: FimdError, *, maybe: set[str]) -> None:
        """Keeps the node's last known state (a deletion needs it), re-reads it on the next
        contact, and degrades its watchers."""
        message, now = clip(str(err), MAX_STORED), self._clock()
        previous = self.book.get(node)
        record = self.book.update(node, lambda r: r.unreachable(message, now, maybe))
        self._metrics.fimd_reachable.labels(node).set(0)
        if not previous.error:
            log.warning("fimd unreachable", extra={"node": node, "error": describe(err)})
            self._enqueue_watchers_of(node, record.state, ())

    def _node_sync_failed(self, node: str, err: Exception) -> None:
        """A node's sync raised unexpectedly: its watchers report it (if its state is unknown)
        instead of waiting for a first contact that never comes."""
        now = self._clock()
        previous = self.book.get(node)
        record = self.book.update(node, lambda r: r.failed(error_type(err), now))
        if not previous.sync_failure:
            self._enqueue_watchers_of(node, record.state, ())

    def _forget_node(self, node: str) -> None:
        """No fimd on the node (any more): it holds no watches we could reach."""
        previous = self.book.forget(node)
        if previous is not None:
            self._metrics.fimd_reachable.remove(node)
        self._enqueue_watchers_of(node, previous.state if previous else None, ())

    def _enqueue_watchers_of(
        self, node: str, state: NodeState | None, desired: Iterable[Key]
    ) -> None:
        uids = {key.watcher_uid for key in desired}
        if state is not None:
            uids |= {key.watcher_uid for key in state.watches}
        uids |= {w.meta.uid for w in self._watchers_for(self.pods.by_index("node", node))}
        for uid in uids:
            for watcher in self.watchers.by_index("uid", uid):
                self.queue.add(WatcherKey(watcher.key))

    # Watcher sync.
    def node_views(self) -> dict[str, NodeView]:
        """Every node with a fimd: its known state, or why it is unknown."""
        return self.book.views(self._endpoints(), self._clock(), self._settings.node_grace)

    def _sync_watcher(self, key: str) -> Result:
        watcher = self.watchers.get(key)
        if watcher is None:
            return Result()
        try:
            self._write_watcher(watcher)
        except ApiError as err:
            if err.status != NOT_FOUND:
                raise
            # Deleted since the cache saw it: its DELETED event makes the nodes clean up.
        return Result()

    def _write_watcher(self, watcher: Watcher) -> None:
        nodes = self.node_views()
        action = finalizer_action(watcher, nodes)
        if action is not FinalizerAction.NONE:
            self._patch_finalizers(watcher, action)
            return
        pods = self.pods.by_index("namespace", watcher.meta.namespace)
        status = watcher_status(watcher, pods, nodes, now=self._clock())
        waiting = any(view.first_contact_pending for view in nodes.values())
        if status != watcher.status and not waiting:
            # A node not yet read is not a problem to report: its sync enqueues us again.
            self._patch_status(watcher, status)

    def _patch_finalizers(self, watcher: Watcher, action: FinalizerAction) -> None:
        finalizers = [f for f in watcher.meta.finalizers if f != FINALIZER]
        if action is FinalizerAction.ADD:
            finalizers.append(FINALIZER)
        # resourceVersion makes the patch conditional: never drop someone else's finalizer.
        body = {
            "metadata": {"finalizers": finalizers, "resourceVersion": watcher.meta.resource_version}
        }
        self._write(self._path(watcher), body)
        self._metrics.actions.labels(f"finalizer_{action.value}", "ok").inc()

    def _patch_status(self, watcher: Watcher, status: FimWatcherStatus) -> None:
        self._write(self._path(watcher) + "/status", {"status": status_to_dict(status)})
        self._metrics.actions.labels("status_patch", "ok").inc()

    def _write(self, path: str, body: object) -> None:
        self._check_fence()
        timeout = self._settings.action_seconds
        self._kube.request("PATCH", path, body=body, content_type=MERGE_PATCH, timeout=timeout)

    @staticmethod
    def _path(watcher: Watcher) -> str:
        return (
            f"/apis/{API_VERSION}/namespaces/{watcher.meta.namespace}/{PLURAL}/{watcher.meta.name}"
        )


def _rejection(
    previous: Rejection | None, want: Desired, err: FimdError, now: datetime
) -> Rejection:
    """A rejected create, retried after a backoff growing while its spec stays the same."""
    same = previous is not None and previous.config_hash == want.config_hash
    attempts = previous.attempts + 1 if previous is not None and same else 1
    wait = backoff.delay(attempts, base=2.0, cap=MAX_REJECTION_BACKOFF.total_seconds())
    return Rejection(
        config_hash=want.config_hash,
        code=clip(err.code, 64),
        message=clip(err.message, MAX_STORED),
        retry_at=now + timedelta(seconds=wait),
        attempts=attempts,
    )


def _intent(watcher: Watcher) -> tuple[object, ...]:
    """What decides a watcher's watches; status and bookkeeping metadata do not. The
    scan-request annotation does (it is the watches' scan_request): a new one reaches the
    nodes now, not at the next sweep."""
    return (
        watcher.meta.uid, watcher.spec, watcher.error, watcher.deleting, watcher.scan_requested
    )  # fmt: skip
