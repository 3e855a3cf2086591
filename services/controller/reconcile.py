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
from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from fim.v1 import fim_pb2
from services.controller.desired import Desired, Key, desired_watches
from services.controller.objects import FINALIZER, Pod, Watcher
from services.controller.state import NodeState, NodeView


@attrs.frozen(kw_only=True)
class NodePlan:
    """The calls that bring one node's fimd to the desired state; destroys go first."""

    destroy: tuple[Key, ...] = ()
    create: tuple[Desired, ...] = ()


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

    A node blocks removal only if it held, or was asked to hold, the watcher's watches (or
    was never read), and has not been failing for longer than the grace period: a node that
    is down must not hang every deletion. A node without a fimd (node gone, fimd removed)
    holds nothing. A node that comes back after the grace period still reports the watches:
    its next sync destroys them, as they are desired by no watcher.
    """
    has_finalizer = FINALIZER in watcher.meta.finalizers
    if not watcher.deleting:
        return FinalizerAction.NONE if has_finalizer else FinalizerAction.ADD
    if not has_finalizer:
        return FinalizerAction.NONE
    if any(view.may_hold(watcher.meta.uid) for view in nodes.values()):
        return FinalizerAction.NONE
    return FinalizerAction.REMOVE
