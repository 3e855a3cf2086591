"""POSIX message queues between fimd (creator, reader, unlinker) and fimnotify (writer).

Names are `<prefix><instance>.<incarnation>`, e.g. `/fimk8s.3f2a9c1b.17`: the prefix marks
them as fimd's, so a new fimd can remove what a killed predecessor left behind. Listing
queues needs the mqueue filesystem (`/dev/mqueue` in a container); without it stale queues
cannot be found, which `remove_stale` reports instead of hiding.
"""

from __future__ import annotations

import contextlib
import os

import posix_ipc

DEFAULT_PREFIX = "/fimk8s."
#: fs.mqueue defaults (msg_max, msgsize_max): creating larger queues needs
#: CAP_SYS_RESOURCE, which pods usually lack; the wire format batches records instead.
MAX_MESSAGES = 10
MESSAGE_SIZE = 8192


def create(name: str) -> posix_ipc.MessageQueue:
    """Creates the queue exclusively, for non-blocking reads."""
    queue = posix_ipc.MessageQueue(
        name,
        posix_ipc.O_CREX,
        mode=0o600,
        max_messages=MAX_MESSAGES,
        max_message_size=MESSAGE_SIZE,
        read=True,
        write=False,
    )
    queue.block = False
    return queue


def receive_all(queue: posix_ipc.MessageQueue) -> list[bytes]:
    """Every message currently in the queue."""
    messages: list[bytes] = []
    while True:
        try:
            message, _priority = queue.receive()
        except posix_ipc.BusyError:
            return messages
        messages.append(message)


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
