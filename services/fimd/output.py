"""The stdout writer: bounded line buffers drained by one thread in large writes.

Producers (the I/O thread that serves every watch, the supervisor, gRPC handlers) never
write to the fd themselves and never wait: a slow or stalled consumer of stdout (a log shipper
that stops reading) only fills the buffers, and a line that does not fit is dropped at once
and counted. Waiting would stall every other watch behind the one that is busy.

- Event lines and operational lines have separate buffers, bounded in bytes (UTF-8 data plus
  CHUNK_OVERHEAD per queued batch): `max_event_bytes` (default 32 MiB) and `max_op_bytes`
  (default 1 MiB), so drop reports and errors are never crowded out by events. A batch of
  event lines is kept or dropped whole (`put_events` returns which).
- Writes are retried until every byte is out (partial writes continue where they stopped;
  EINTR and EAGAIN are retried). A write that fails (EPIPE, EIO, ENOSPC, ...) loses the lines
  of its batch that were not completely written: they are counted like dropped lines. If a
  failed write ended inside a line, the next write starts with a newline, so the fragment
  stays a line of its own and never corrupts the next one.
- Every lost line is counted: `on_drop(kind, stage, count)` is called at once (kind "event"
  or "op"; stage "buffer" = dropped because its buffer was full or the writer closed,
  "write" = lost in a failed write), from the thread that saw it; and the writer reports
  the counts in one `output_dropped` operational line as soon as it writes again:

      {"kind":"op",...,"level":"error","msg":"output_dropped","count":N,"events":E,"ops":O,
       "writeFailed":W,"error":"EPIPE"}

  `count` = `events` + `ops` lines lost since the previous report; `writeFailed` of them in
  failed writes (then `error` names the last errno). The counts are taken back only once the
  report itself was written; after a failed write the report is retried with the next lines,
  or alone after `retry_interval`. This line is written ahead of the buffers, so it always
  has room.
- With an `audit` stream (services/fimd/audit.py) every line is sealed here, as it is
  written (seq, boot, kid, mac; libs/auditstream), and a heartbeat line is written every
  `audit.interval` seconds with the counts since the previous one. A failed write takes the
  chain back to the last line completely written, so lost lines never leave a seq gap.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from libs.auditstream.seal import ChainState
from services.fimd import lines
from services.fimd.audit import AuditStream

#: Called with (kind, stage, count) for every line lost; see the module docstring.
DropHook = Callable[[str, str, int], None]
#: os.write's signature (a parameter so tests can make writes fail or stop half-way).
WriteFn = Callable[[int, memoryview], int]

EVENT = "event"
OP = "op"
BUFFER = "buffer"
WRITE = "write"
_KEYS = ((EVENT, BUFFER), (EVENT, WRITE), (OP, BUFFER), (OP, WRITE))


class LineWriter:
    """Buffers lines (each ending in one newline) and writes them to `fd` from a thread."""

    #: Bytes charged per queued batch on top of its data (deque slot and bytes object).
    CHUNK_OVERHEAD = 128

    def __init__(
        self,
        fd: int,
        node: str,
        *,
        max_event_bytes: int = 32 << 20,
        max_op_bytes: int = 1 << 20,
        batch_bytes: int = 256 << 10,
        retry_interval: float = 1.0,
        on_drop: DropHook | None = None,
        write: WriteFn = os.write,
        audit: AuditStream | None = None,
    ) -> None:
        self._fd = fd
        self._node = node
        self._max_event_bytes = max_event_bytes
        self._max_op_bytes = max_op_bytes
        self._batch_bytes = batch_bytes
        self._retry_interval = retry_interval
        self._on_drop = on_drop
        self._write = write
        self._audit = audit
        self._events: deque[tuple[bytes, int]] = deque()  # (data, lines)
        self._ops: deque[bytes] = deque()
        self._event_bytes = 0  # charged, see CHUNK_OVERHEAD
        self._op_bytes = 0
        self._lost = dict.fromkeys(_KEYS, 0)  # lines lost and not yet reported
        self._error = ""  # errno name of the last failed write
        self._failing = False  # the last write failed
        self._retry_at = 0.0
        self._partial = False  # the last failed write ended inside a line
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # lines to write / closing
        if audit is not None:
            audit.attach(lambda msg, level, fields: self.op(msg, level, **fields))
        self._thread = threading.Thread(target=self._run, name="fimd-writer", daemon=True)
        self._thread.start()

    def put_events(self, batch: list[str]) -> bool:
        """Queues event lines, all or none; False (counted, reported) if they were dropped.
        Never waits."""
        if not batch:
            return True
        data = "".join(batch).encode("utf-8", "replace")
        cost = len(data) + self.CHUNK_OVERHEAD
        with self._lock:
            accepted = not self._closed and self._event_bytes + cost <= self._max_event_bytes
            if accepted:
                self._events.append((data, len(batch)))
                self._event_bytes += cost
            else:
                self._lost[EVENT, BUFFER] += len(batch)
            self._ready.notify()
        if not accepted:
            self._dropped(EVENT, BUFFER, len(batch))
        return accepted

    def put_op(self, line: str) -> bool:
        """Queues one operational line; False (counted, reported) if it was dropped. Never
        waits."""
        data = line.encode("utf-8", "replace")
        cost = len(data) + self.CHUNK_OVERHEAD
        with self._lock:
            accepted = not self._closed and self._op_bytes + cost <= self._max_op_bytes
            if accepted:
                self._ops.append(data)
                self._op_bytes += cost
            else:
                self._lost[OP, BUFFER] += 1
            self._ready.notify()
        if not accepted:
            self._dropped(OP, BUFFER, 1)
        return accepted

    def op(self, msg: str, level: str = "info", /, **fields: object) -> None:
        self.put_op(lines.op_line(self._node, msg, level, **fields))

    def buffered(self) -> tuple[int, int]:
        """Bytes charged in the (event, operational) buffers now."""
        with self._lock:
            return self._event_bytes, self._op_bytes

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is buffered (up to `timeout`) and stops the thread; lines put after
        this are dropped (and counted)."""
        with self._lock:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout)

    def _dropped(self, kind: str, stage: str, count: int) -> None:
        if self._audit is not None and count:
            with self._lock:
                self._audit.dropped(count)
        if self._on_drop is not None and count:
            self._on_drop(kind, stage, count)

    def _retry_due(self) -> bool:
        return self._failing and time.monotonic() >= self._retry_at

    def _has_work(self) -> bool:
        report = any(self._lost.values()) and (not self._failing or self._retry_due())
        beat = self._audit is not None and self._audit.due()
        return self._closed or bool(self._events) or bool(self._ops) or report or beat

    def _wait(self) -> None:
        """Waits (holding the lock) until there is something to do."""
        while not self._has_work():
            timeout = None
            if self._failing and any(self._lost.values()):
                timeout = max(0.0, self._retry_at - time.monotonic())
            if self._audit is not None:
                beat = self._audit.until_due()
                timeout = beat if timeout is None else min(timeout, beat)
            self._ready.wait(timeout)

    def _take(self) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """All operational lines, then event batches up to `batch_bytes` (lock held)."""
        ops = list(self._ops)
        self._ops.clear()
        self._op_bytes = 0
        events: list[tuple[bytes, int]] = []
        size = 0
        while self._events and size < self._batch_bytes:
            data, count = self._events.popleft()
            self._event_bytes -= len(data) + self.CHUNK_OVERHEAD
            events.append((data, count))
            size += len(data)
        return ops, events

    def _report(self, lost: dict[tuple[str, str], int], error: str) -> bytes:
        if not any(lost.values()):
            return b""
        events = lost[EVENT, BUFFER] + lost[EVENT, WRITE]
        ops = lost[OP, BUFFER] + lost[OP, WRITE]
        failed = lost[EVENT, WRITE] + lost[OP, WRITE]
        fields: dict[str, object] = {
            "count": events + ops,
            "events": events,
            "ops": ops,
            "writeFailed": failed,
        }
        if failed:
            fields["error"] = error
        return lines.op_line(self._node, "output_dropped", "error", **fields).encode()

    def _run(self) -> None:
        final_report_tried = False
        while True:
            with self._lock:
                self._wait()
                beat = self._audit is not None and self._audit.due()
                if not self._events and not self._ops and not beat:
                    # Closed and drained, or only a report to write (alone; when closing,
                    # one last try even if stdout failed).
                    if not any(self._lost.values()) or final_report_tried:
                        return
                    final_report_tried = self._closed
                ops, events = self._take()
                lost = dict(self._lost)
                error = self._error
            if ops or events or any(lost.values()):
                self._write_batch(self._report(lost, error), ops, events, lost)
            if beat:
                self._heartbeat()

    def _heartbeat(self) -> None:
        """Writes the heartbeat line alone, after every line it counts."""
        audit = self._audit
        assert audit is not None
        audit.refresh()  # so that `sealed` in the line says what the seal shows
        with self._lock:
            line, counts = audit.heartbeat()
        if self._write_batch(b"", [line], [], dict.fromkeys(_KEYS, 0), heartbeat=True):
            with self._lock:
                audit.sent(counts)
        else:
            audit.postpone()

    def _write_batch(
        self,
        report: bytes,
        ops: list[bytes],
        events: list[tuple[bytes, int]],
        reported: dict[tuple[str, str], int],
        *,
        heartbeat: bool = False,
    ) -> bool:
        """Writes the lines (sealed with an audit stream); True if all were written."""
        lead = b"\n" if self._partial else b""
        op_data = b"".join(ops)
        event_data = b"".join(chunk for chunk, _ in events)
        report_count, op_count = report.count(b"\n"), op_data.count(b"\n")
        body = report + op_data + event_data
        marks: list[tuple[int, ChainState]] = []
        before = ChainState(0, b"")
        if self._audit is not None:
            self._audit.refresh()
            before = self._audit.sealer.state
            body, marks = self._audit.seal(body)
        data = lead + body
        written, error = self._write_all(data)
        # Lines completely written (each ends in its newline), not counting the lead.
        done = data.count(b"\n", 0, written) - (1 if lead and written else 0)
        ops_lost = op_count - min(op_count, max(0, done - report_count))
        events_lost = event_data.count(b"\n") - max(0, done - report_count - op_count)
        if self._audit is not None:
            if error is not None and marks:
                self._audit.rollback(marks[done - 1][1] if done else before)
            if not heartbeat:
                with self._lock:
                    self._audit.written(done, max(0, done - report_count - op_count))
        with self._lock:
            if error is None:
                self._partial = self._failing = False
                for key, count in reported.items():
                    self._lost[key] -= count
            else:
                self._failing = True
                self._retry_at = time.monotonic() + self._retry_interval
                if written:
                    self._partial = data[written - 1 : written] != b"\n"
                self._error = error
                self._lost[OP, WRITE] += ops_lost
                self._lost[EVENT, WRITE] += events_lost
        if error is not None:
            self._dropped(OP, WRITE, ops_lost)
            self._dropped(EVENT, WRITE, events_lost)
        return error is None

    def _write_all(self, data: bytes) -> tuple[int, str | None]:
        """Writes `data`, continuing partial writes; (bytes written, errno name or None)."""
        view = memoryview(data)
        written = 0
        while written < len(data):
            try:
                written += self._write(self._fd, view[written:])
            except InterruptedError:
                continue
            except BlockingIOError:  # a non-blocking stdout (set by whoever shares it)
                poller = select.poll()
                poller.register(self._fd, select.POLLOUT)
                poller.poll(self._retry_interval * 1000)
            except OSError as err:
                return written, errno.errorcode.get(err.errno or 0, str(err))
        return written, None
