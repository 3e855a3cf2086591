"""The pure reconcile core: (FimWatchers, pods, fimd node states) -> actions. No I/O.

Level-triggered: nothing here depends on which event led to the call. For each node the
desired watches (watcher x matching running pod x running container) are compared with what
that node's fimd last reported (GetWatchState, kept current by the results of our own
calls), so a node's calls are exactly its differences: destroy what is extra, create what
is missing or outdated. A create fimd rejected is not repeated until its backoff expires or
its spec changes, so a watch fimd cannot honour costs no calls in steady state.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from fim.v1 import fim_pb2
from libs.k8s.model import FimWatcherStatus
from services.controller.desired import Desired, Key, desired_watches
from services.controller.objects import FINALIZER, Pod, Watcher
from services.controller.state import NodeState, NodeView
from services.controller.status import watcher_status


@attrs.frozen(kw_only=True)
class NodePlan:
    """The calls that bring one node's fimd to the desired state; destroys go first."""

    destroy: tuple[Key, ...] = ()
    create: tuple[Desired, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.destroy or self.create)


class FinalizerAction(enum.Enum):
    NONE = "none"
    ADD = "add"
    REMOVE = "remove"


def desired_for_node(
    node: str, watchers: Iterable[Watcher], pods: Iterable[Pod]
) -> dict[Key, Desired]:
    """The watches `node`'s fimd should hold, given its pods and the watchers."""
    on_node = [pod for pod in pods if pod.node_name == node]
    desired: dict[Key, Desired] = {}
    for watcher in watchers:
        desired.update(desired_watches(watcher, on_node))
    return desired


def plan_node(
    desired: Mapping[Key, Desired], state: NodeState, *, now: datetime, retry_failed: bool
) -> NodePlan:
    """Destroy extra watches, create missing/outdated ones; recreate FAILED ones on sweeps."""
    destroy = sorted(key for key in state.watches if key not in desired)
    create = []
    for key in sorted(desired):
        want, have, rejection = desired[key], state.watches.get(key), state.rejected.get(key)
        if rejection and rejection.config_hash == want.config_hash and now < rejection.retry_at:
            continue
        if have is None or have.config_hash != want.config_hash:
            create.append(want)
        elif have.phase == fim_pb2.WATCH_PHASE_FAILED and retry_failed:
            # CreateWatch with an unchanged spec is a no-op: restart the watch explicitly.
            destroy.append(key)
            create.append(want)
    return NodePlan(destroy=tuple(destroy), create=tuple(create))


def finalizer_action(watcher: Watcher, nodes: Mapping[str, NodeView]) -> FinalizerAction:
    """ADD to a live watcher without it; REMOVE once no node with a fimd may hold its watches.

    A node whose fimd is unreachable may still hold watches, so it blocks removal; a node
    without a fimd (node gone, fimd removed) holds nothing and does not.
    """
    has_finalizer = FINALIZER in watcher.meta.finalizers
    if not watcher.deleting:
        return FinalizerAction.NONE if has_finalizer else FinalizerAction.ADD
    if not has_finalizer:
        return FinalizerAction.NONE
    for view in nodes.values():
        if view.state is None or view.state.holds(watcher.meta.uid):
            return FinalizerAction.NONE
    return FinalizerAction.REMOVE


@attrs.frozen(kw_only=True)
class Plan:
    """Everything one full reconcile wants done."""

    nodes: Mapping[str, NodePlan]
    statuses: Mapping[str, FimWatcherStatus]
    finalizers: Mapping[str, FinalizerAction]


def reconcile(
    watchers: Iterable[Watcher],
    pods: Iterable[Pod],
    nodes: Mapping[str, NodeView],
    *,
    now: datetime,
    retry_failed: bool = False,
) -> Plan:
    """The full plan: node calls, changed statuses and finalizer changes (watcher key ->)."""
    watchers, pods = list(watchers), list(pods)
    pods_by_node: dict[str, list[Pod]] = defaultdict(list)
    for pod in pods:
        pods_by_node[pod.node_name].append(pod)
    node_plans = {}
    for node, view in nodes.items():
        if view.state is not None:
            desired = desired_for_node(node, watchers, pods_by_node[node])
            node_plan = plan_node(desired, view.state, now=now, retry_failed=retry_failed)
            if node_plan:
                node_plans[node] = node_plan
    statuses, finalizers = {}, {}
    for watcher in watchers:
        status = watcher_status(watcher, pods, nodes, now=now)
        if status != watcher.status:
            statuses[watcher.key] = status
        action = finalizer_action(watcher, nodes)
        if action is not FinalizerAction.NONE:
            finalizers[watcher.key] = action
    return Plan(nodes=node_plans, statuses=statuses, finalizers=finalizers)
