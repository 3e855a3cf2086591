"""The FimWatcher status the controller reports: pure, from pods and fimd node states.

`watchedPods` counts only pods whose every running container has a watch that its node's
fimd reports ACTIVE with the current config hash: confirmed, never assumed from a call we
made. `lastScan` is the latest comparison with the baselines of the watcher's containers
(fimd's WatchStatus.last_scan): its time and the sums of each container's last counts, and
`request`: the scan-request annotation once the last comparison of every container of the
observable pods answered it (fimd echoes the scan_request it ran under; `answered` counts
those that did, of `containers`), which is what `kubectl fim scan` waits for.
Conditions (metav1.Condition):

- Ready: True when every observable pod is watched.
- Degraded: True when something needs a human: an invalid spec, a node without a reachable
  fimd, a node the controller fails to sync (an unexpected error, retried with backoff), a
  node whose fimd has no capacity left for a watch, a watch fimd rejected or reports FAILED,
  or an ACTIVE watch with a warning. Its message lists the first problems and is bounded
  whatever fimd says (MAX_CONDITION_MESSAGE_LENGTH); a clipped problem ends with a marker
  giving its original length.

A condition keeps its lastTransitionTime while its status is unchanged, so an unchanged
world computes an identical status and costs no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from fim.v1 import fim_pb2
from libs.k8s.model import (
    MAX_CONDITION_MESSAGE_LENGTH,
    MAX_SCAN_COUNT,
    MAX_SCAN_REQUEST_LENGTH,
    Condition,
    ConditionStatus,
    FimWatcherStatus,
    ScanStatus,
)
from services.controller.bounds import clip
from services.controller.desired import Key, desired_watch, scan_request, selected_pods
from services.controller.objects import Container, Pod, Watcher
from services.controller.state import LastScan, NodeView, Rejection

READY = "Ready"
DEGRADED = "Degraded"
#: fimd's admission control refused a watch: a node budget is used up (also an Event reason).
NODE_CAPACITY = "NodeCapacity"
#: The controller's sync of a node raised an unexpected exception: that node's watches are
#: not reconciled until a retry succeeds.
NODE_SYNC_FAILED = "NodeSyncFailed"
MAX_LISTED_PROBLEMS = 5
#: One listed problem's share of the message: the listed ones, their separators and the
#: "; and N more" tail always fit, however long fimd's messages are (they are not ours).
MAX_PROBLEM_LENGTH = MAX_CONDITION_MESSAGE_LENGTH // (MAX_LISTED_PROBLEMS + 1)

# Degraded's reason is the most severe problem's: a broken spec or node explains the rest
# (a full node is a node problem: its fix, a budget or the pods' placement, is not the spec).
_SEVERITY = (
    "InvalidSpec",
    "FimdUnreachable",
    NODE_SYNC_FAILED,
    "NoFimd",
    NODE_CAPACITY,
    "WatchRejected",
    "WatchFailed",
    "WatchDegraded",
)


@attrs.frozen
class Problem:
    reason: str
    message: str


def _container_problem(
    pod: Pod, container: Container, key: Key, view: NodeView, config_hash: str
) -> tuple[bool, Problem | None]:
    """(watched?, problem) for one container of a pod on a node with a fimd."""
    where = f"pod {pod.name} container {container.name}"
    state = view.current
    if state is None:
        if view.sync_failed:
            message = (
                f"watches on node {pod.node_name} not reconciled: the controller's sync of the"
                f" node fails ({view.error}); retrying with backoff, details in its log"
            )
            return False, Problem(NODE_SYNC_FAILED, message)
        message = f"fimd on node {pod.node_name} unreachable: {view.error}"
        return False, Problem("FimdUnreachable", message)
    rejection = state.rejected.get(key)
    if rejection is not None and rejection.config_hash == config_hash:
        return False, _rejection_problem(where, pod.node_name, rejection)
    observed = state.watches.get(key)
    if observed is None or observed.config_hash != config_hash:
        return False, None  # not created or not updated yet: pending, not a problem
    detail = f"{where}: {observed.reason}: {observed.message}"
    if observed.phase == fim_pb2.WATCH_PHASE_FAILED:
        return False, Problem("WatchFailed", detail)
    active = observed.phase == fim_pb2.WATCH_PHASE_ACTIVE
    # An ACTIVE watch with a reason is degraded (e.g. a path hit the inotify watch limit).
    return active, Problem("WatchDegraded", detail) if active and observed.reason else None


def _config_hash(watcher: Watcher, pod: Pod, container: Container, view: NodeView) -> str:
    """The container's desired config hash: the node sync's, unless it is stale."""
    assert watcher.spec is not None  # only valid watchers select pods
    known = view.desired.get(Key(watcher.meta.uid, pod.uid, container.name))
    if (
        known is not None
        and known.generation == watcher.meta.generation
        and known.spec.container_id == container.container_id
    ):
        return known.config_hash
    return desired_watch(watcher, watcher.spec, pod, container).config_hash


def _rejection_problem(where: str, node: str, rejection: Rejection) -> Problem:
    if rejection.over_capacity:
        # fimd's message names the budget; the node says where to raise it or make room.
        return Problem(NODE_CAPACITY, f"{where}: no capacity on node {node}: {rejection.message}")
    return Problem("WatchRejected", f"{where}: {rejection.code}: {rejection.message}")


def _pod_problems(
    watcher: Watcher, pod: Pod, nodes: Mapping[str, NodeView]
) -> tuple[bool, list[Problem]]:
    """(watched?, problems) for one selected running pod."""
    view = nodes.get(pod.node_name)
    if view is None:
        return False, [Problem("NoFimd", f"no fimd on node {pod.node_name} (pod {pod.name})")]
    watched, problems = True, []
    for container in pod.containers:
        key = Key(watcher.meta.uid, pod.uid, container.name)
        config_hash = _config_hash(watcher, pod, container, view)
        ok, problem = _container_problem(pod, container, key, view, config_hash)
        watched = watched and ok
        if problem is not None:
            problems.append(problem)
    return watched, problems


def _summary(problems: list[Problem]) -> Problem:
    """The most severe reason and a bounded message listing the first problems."""
    ordered = sorted(problems, key=lambda p: (_SEVERITY.index(p.reason), p.message))
    unique = list(dict.fromkeys(p.message for p in ordered))
    message = "; ".join(clip(m, MAX_PROBLEM_LENGTH) for m in unique[:MAX_LISTED_PROBLEMS])
    if len(unique) > MAX_LISTED_PROBLEMS:
        message += f"; and {len(unique) - MAX_LISTED_PROBLEMS} more"
    return Problem(ordered[0].reason, message)


def _condition(
    watcher: Watcher, type_: str, status: bool, *, reason: str, message: str, now: datetime
) -> Condition:
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    previous = {c.type: c for c in watcher.status.conditions}.get(type_)
    since = previous.last_transition_time if previous and previous.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=watcher.meta.generation,
    )


def _ready(watcher: Watcher, observable: int, watched: int, now: datetime) -> Condition:
    if watcher.spec is None:
        return _condition(
            watcher, READY, False, reason="InvalidSpec", message="the spec is invalid", now=now
        )
    message = f"{watched} of {observable} pods watched"
    if watched == observable:
        return _condition(watcher, READY, True, reason="AllPodsWatched", message=message, now=now)
    return _condition(watcher, READY, False, reason="WatchesPending", message=message, now=now)


def _degraded(watcher: Watcher, problems: list[Problem], now: datetime) -> Condition:
    if watcher.spec is None:
        message = clip(watcher.error, MAX_CONDITION_MESSAGE_LENGTH)
        return _condition(watcher, DEGRADED, True, reason="InvalidSpec", message=message, now=now)
    if not problems:
        return _condition(watcher, DEGRADED, False, reason="AsExpected", message="", now=now)
    summary = _summary(problems)
    return _condition(
        watcher, DEGRADED, True, reason=summary.reason, message=summary.message, now=now
    )


def _last_scan(
    watcher: Watcher, pods: Iterable[Pod], nodes: Mapping[str, NodeView]
) -> ScanStatus | None:
    """The time of the latest comparison of the watcher's containers and the sums of each
    one's last comparison (None before the first); the scan request all of them answered."""
    scans: list[LastScan] = []
    containers = 0
    for pod in pods:
        containers += len(pod.containers)
        view = nodes.get(pod.node_name)
        state = view.current if view is not None else None
        if state is None:
            continue
        for container in pod.containers:
            observed = state.watches.get(Key(watcher.meta.uid, pod.uid, container.name))
            if observed is not None and observed.last_scan is not None:
                scans.append(observed.last_scan)
    if not scans:
        return None
    asked = scan_request(watcher.scan_requested)
    answered = sum(1 for s in scans if asked and s.request == asked)
    request = watcher.scan_requested[:MAX_SCAN_REQUEST_LENGTH] if answered == containers else ""
    return ScanStatus(
        time=max(s.time for s in scans).replace(microsecond=0),
        scanned=min(MAX_SCAN_COUNT, sum(s.scanned for s in scans)),
        added=min(MAX_SCAN_COUNT, sum(s.added for s in scans)),
        removed=min(MAX_SCAN_COUNT, sum(s.removed for s in scans)),
        changed=min(MAX_SCAN_COUNT, sum(s.changed for s in scans)),
        request=request,
        answered=answered,
        containers=containers,
    )


def watcher_status(
    watcher: Watcher, pods: Iterable[Pod], nodes: Mapping[str, NodeView], *, now: datetime
) -> FimWatcherStatus:
    """The status `watcher` should have; a deleting watcher keeps its last status."""
    if watcher.deleting:
        return watcher.status
    selected = selected_pods(watcher, pods)
    watched, problems = 0, []
    for pod in selected:
        ok, pod_problems = _pod_problems(watcher, pod, nodes)
        watched += ok
        problems.extend(pod_problems)
    return FimWatcherStatus(
        observed_generation=watcher.meta.generation,
        observable_pods=len(selected),
        watched_pods=watched,
        conditions=(
            _ready(watcher, len(selected), watched, now),
            _degraded(watcher, problems, now),
        ),
        last_scan=_last_scan(watcher, selected, nodes),
    )
