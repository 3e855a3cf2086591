"""What the controller knows of each node's fimd: its watches, and creates it rejected.

Built from GetWatchState and kept current with the results of the controller's own calls,
so between sweeps the controller needs no call to know a node's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

import attrs

from fim.v1 import fim_pb2
from services.controller.bounds import MAX_STORED, clip
from services.controller.desired import Desired, Key

#: The gRPC code of fimd's admission control: the create would exceed one of the node's
#: budgets (inotify watches, memory). It refuses that one create; capacity may free up later.
OVER_CAPACITY = "RESOURCE_EXHAUSTED"


@attrs.frozen(kw_only=True)
class Observed:
    """One watch as fimd reports it."""

    key: Key
    config_hash: str
    phase: fim_pb2.WatchPhase.ValueType
    reason: str = ""
    message: str = ""

    @classmethod
    def from_proto(cls, status: fim_pb2.WatchStatus) -> Observed:
        """fimd's report, its reason and message bounded (they may name a pod's files)."""
        return cls(
            key=Key.from_proto(status.key),
            config_hash=status.config_hash,
            phase=status.phase,
            reason=clip(status.reason, MAX_STORED),
            message=clip(status.message, MAX_STORED),
        )


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

    def with_observed(self, observed: Observed) -> NodeState:
        rejected = {k: v for k, v in self.rejected.items() if k != observed.key}
        return attrs.evolve(
            self, watches={**self.watches, observed.key: observed}, rejected=rejected
        )

    def without(self, key: Key) -> NodeState:
        watches = {k: v for k, v in self.watches.items() if k != key}
        return attrs.evolve(self, watches=watches)

    def with_rejection(self, key: Key, rejection: Rejection) -> NodeState:
        return attrs.evolve(self, rejected={**self.rejected, key: rejection})

    def pruned(self, desired: Mapping[Key, Desired]) -> NodeState:
        """Forgets rejections of watches no longer desired."""
        rejected = {k: v for k, v in self.rejected.items() if k in desired}
        return (
            self if len(rejected) == len(self.rejected) else attrs.evolve(self, rejected=rejected)
        )

    def holds(self, watcher_uid: str) -> bool:
        return any(key.watcher_uid == watcher_uid for key in self.watches)


@attrs.frozen
class NodeView:
    """A node with a fimd as the status sees it: its state, or None and why it is unknown.

    `sync_failed`: the state is unknown because the node's sync raised an unexpected
    exception (a controller bug or input it cannot handle), not because fimd is unreachable;
    `error` then names only the exception type (its message may quote other tenants' data).
    """

    state: NodeState | None
    error: str = ""
    sync_failed: bool = False
