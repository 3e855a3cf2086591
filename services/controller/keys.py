"""The work queue's typed keys and what syncing one returns (controller-runtime's Result).

A node key syncs that node's fimd; a watcher key writes that FimWatcher's finalizer and
status. Two types, not string prefixes: a key can only be one or the other.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class NodeKey:
    """Drive node `name`'s fimd to the desired watches."""

    name: str
    kind = "node"

    def __str__(self) -> str:
        return f"node:{self.name}"


@attrs.frozen
class WatcherKey:
    """Write FimWatcher `name` (namespace/name)'s finalizer and status."""

    name: str
    kind = "watcher"

    def __str__(self) -> str:
        return f"watcher:{self.name}"


QueueKey = NodeKey | WatcherKey


@attrs.frozen
class Result:
    """A successful sync's outcome; a failed sync raises instead (retried with backoff).

    `requeue_after`: sync the key again after this many seconds (None: only on a change),
    e.g. when a rejected create's backoff ends or PENDING watches are to be re-read.
    """

    requeue_after: float | None = None

    def sooner(self, seconds: float | None) -> Result:
        """This result, requeued no later than `seconds` (None: unchanged)."""
        if seconds is None or (self.requeue_after is not None and self.requeue_after <= seconds):
            return self
        return Result(requeue_after=max(0.0, seconds))
