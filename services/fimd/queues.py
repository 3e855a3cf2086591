"""POSIX message queues between fimd (creator, reader, unlinker) and its fimnotify engines
(writers): one queue per engine, created at start and kept for the life of fimd (an engine
restarted after a crash writes to the same, drained queue).

Names are `<prefix><instance>.e<engine>`, e.g. `/fimk8s.3f2a9c1b.e0`: the prefix marks them
as fimd's, so a new fimd can remove what a killed predecessor left behind. Listing
queues needs the mqueue filesystem (`/dev/mqueue` in a container); without it stale queues
cannot be found, which `remove_stale` reports instead of hiding.
"""

from __future__ import annotations

import contextlib
import os
import resource

import attrs
import posix_ipc

DEFAULT_PREFIX = "/fimk8s."


@attrs.frozen
class Geometry:
    """Size of each queue: by default one message of the fs.mqueue default size (msgsize_max
    8192, about 200 event records). One message, not msg_max's 10: the kernel queue is a
    FIFO that an engine's fair, per-watch buffer cannot reorder, so every message in it is
    backlog a quiet watch waits behind when a noisy one keeps fimd busy (measured: p99
    write-to-line of quiet watches 45 ms with 1 message, 57 ms with 2, 146 ms with 10, with
    no loss in any; docs/performance.md). All queues of a user share RLIMIT_MSGQUEUE
    (default 819,200 bytes); deeper or smaller queues: `--queue-messages`,
    `--queue-message-size` (at least `wire.MIN_MESSAGE_SIZE`)."""

    max_messages: int = 1
    message_size: int = 8192

    def kernel_bytes(self) -> int:
        """Approximate charge against RLIMIT_MSGQUEUE (measured: ~150 bytes per message of
        kernel bookkeeping on top of the payload)."""
        return self.max_messages * (self.message_size + 150)


DEFAULT_GEOMETRY = Geometry()


def raise_limit(wanted: int) -> int:
    """Raises RLIMIT_MSGQUEUE towards `wanted` as far as allowed (beyond the hard limit
    only with CAP_SYS_RESOURCE, e.g. in a privileged pod); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    try:
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (max(wanted, soft), max(wanted, hard)))
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_MSGQUEUE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]


def create(name: str, geometry: Geometry) -> posix_ipc.MessageQueue:
    """Creates the queue exclusively, for non-blocking reads."""
    queue = posix_ipc.MessageQueue(
        name,
        posix_ipc.O_CREX,
        mode=0o600,
        max_messages=geometry.max_messages,
        max_message_size=geometry.message_size,
        read=True,
        write=False,
    )
    queue.block = False
    return queue


def receive_all(queue: posix_ipc.MessageQueue, limit: int | None = None) -> list[bytes]:
    """Every message currently in the queue (at most `limit`)."""
    messages: list[bytes] = []
    while limit is None or len(messages) < limit:
        try:
            message, _priority = queue.receive()
        except posix_ipc.BusyError:
            return messages
        messages.append(message)
    return messages


def remove(queue: posix_ipc.MessageQueue) -> None:
    """Closes and unlinks; a queue already unlinked is fine."""
    with contextlib.suppress(posix_ipc.ExistentialError):
        queue.unlink()
    queue.close()


def remove_stale(mqueue_dir: str, prefix: str) -> list[str] | None:
    """Unlinks queues named `prefix*` found in the mqueue filesystem at `mqueue_dir`;
    returns their names, or None if the directory cannot be listed."""
    try:
        entries = os.listdir(mqueue_dir)
    except OSError:
        return None
    removed = []
    for entry in sorted(entries):
        name = "/" + entry
        if not name.startswith(prefix):
            continue
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            continue  # removed concurrently
        removed.append(name)
    return removed
