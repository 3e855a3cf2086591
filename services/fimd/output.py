"""The stdout writer: a bounded line buffer drained by one thread in large writes.

Producers (queue reader, supervisor) never write to the fd themselves, so a slow consumer
of stdout (a log shipper that stalls) only fills the buffer. When it is full, event lines
wait up to `block_timeout` (back-pressure: the reader stops draining message queues and
fimnotify buffers, then counts its own drops); after that they are dropped and counted.
Operational lines have their own, separate bound so drop reports are never crowded out by
events. Every drop is reported as an `output_dropped` operational line once there is room,
and counted in metrics: nothing is lost silently.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

from services.fimd import lines

#: Called with the number of event lines dropped (for metrics).
DropHook = Callable[[int], None]


class LineWriter:
    """Buffers lines and writes them to `fd` from a background thread."""

    def __init__(
        self,
        fd: int,
        node: str,
        *,
        max_lines: int = 100_000,
        max_op_lines: int = 10_000,
        block_timeout: float = 1.0,
        batch_bytes: int = 256 * 1024,
        on_drop: DropHook | None = None,
    ) -> None:
        self._fd = fd
        self._node = node
        self._max_lines = max_lines
        self._max_op_lines = max_op_lines
        self._block_timeout = block_timeout
        self._batch_bytes = batch_bytes
        self._on_drop = on_drop
        self._events: deque[str] = deque()
        self._ops: deque[str] = deque()
        self._dropped = 0  # not yet reported
        self._dropped_ops = 0
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # lines to write / closing
        self._space = threading.Condition(self._lock)  # room in the event buffer
        self._thread = threading.Thread(target=self._run, name="fimd-writer", daemon=True)
        self._thread.start()

    def put_events(self, batch: list[str]) -> bool:
        """Queues event lines; False (and counted) if they were dropped."""
        with self._lock:
            if len(self._events) + len(batch) > self._max_lines and not self._closed:
                self._space.wait_for(
                    lambda: self._closed or len(self._events) + len(batch) <= self._max_lines,
                    timeout=self._block_timeout,
                )
            if self._closed or len(self._events) + len(batch) > self._max_lines:
                self._dropped += len(batch)
                drop = True
            else:
                self._events.extend(batch)
                drop = False
            self._ready.notify()
        if drop and self._on_drop is not None:
            self._on_drop(len(batch))
        return not drop

    def put_op(self, line: str) -> None:
        """Queues one operational line (never blocks)."""
        with self._lock:
            if len(self._ops) >= self._max_op_lines:
                self._dropped_ops += 1
            else:
                self._ops.append(line)
            self._ready.notify()

    def op(self, msg: str, level: str = "info", /, **fields: object) -> None:
        self.put_op(lines.op_line(self._node, msg, level, **fields))

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is buffered (up to `timeout`) and stops the thread."""
        with self._lock:
            self._closed = True
            self._ready.notify()
            self._space.notify_all()
        self._thread.join(timeout)

    def _take(self) -> list[str] | None:
        """The next batch: operational lines first, then events up to `batch_bytes`."""
        with self._lock:
            self._ready.wait_for(lambda: self._closed or self._ops or self._events)
            if not (self._ops or self._events or self._dropped or self._dropped_ops):
                return None  # closed and drained
            batch = list(self._ops)
            self._ops.clear()
            self._report_drops(batch)
            size = 0
            while self._events and size < self._batch_bytes:
                line = self._events.popleft()
                size += len(line)
                batch.append(line)
            self._space.notify_all()
            return batch

    def _report_drops(self, batch: list[str]) -> None:
        if self._dropped:
            batch.append(lines.op_line(self._node, "output_dropped", "error", count=self._dropped))
            self._dropped = 0
        if self._dropped_ops:
            batch.append(
                lines.op_line(self._node, "op_lines_dropped", "error", count=self._dropped_ops)
            )
            self._dropped_ops = 0

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._write_all("".join(batch).encode())

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                # stdout is gone (closed pipe): nothing can be reported any more; keep
                # draining so producers are never blocked by a dead consumer.
                return
            view = view[written:]
