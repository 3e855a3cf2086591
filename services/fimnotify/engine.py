"""The imperative shell: one inotify instance, the target, the queue, the signal loop."""

from __future__ import annotations

import errno
import os
import select
import signal
import struct
import sys
import time
from typing import Any

from inotify_simple import INotify

from libs.fimnotify_api.config import WatchConfig
from libs.fimnotify_api.masks import IN_Q_OVERFLOW
from services.fimnotify.procfs import RootFs, Target, TargetGoneError
from services.fimnotify.sink import Sink, open_queue
from services.fimnotify.tree import Core
from libs.fimnotify_api.wire import (
    ErrorRecord,
    ExitReason,
    ExitRecord,
    ExitStatus,
    OverflowRecord,
    ReadyRecord,
    encode_record,
)

_EVENT = struct.Struct("iIII")
_READ_SIZE = 1 << 20
#: How long to retry inotify_init1 when fs.inotify.max_user_instances is exhausted.
INSTANCE_RETRY_S = 2.0
#: Without a pidfd (foreign procfs), how often to check that the target still exists.
ALIVE_CHECK_S = 1.0
EXIT_DRAIN_S = 2.0


def _log(config: WatchConfig, message: str) -> None:
    print(f"fimnotify[{config.watch_id}]: {message}", file=sys.stderr, flush=True)


class Engine:
    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.stopping = False
        self.sink: Sink | None = None
        self.target: Target | None = None
        self.inotify: INotify | None = None
        self.core: Core | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._in_drain = False
        self.overflow_pending = False

    # --- entry ---------------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.sink = Sink(open_queue(self.config.queue_name), self.config.buffer_records)
        try:
            self.target = Target.open(self.config.proc_root, self.config.pid)
        except (TargetGoneError, PermissionError) as exc:
            return self._exit(ExitReason.TARGET_GONE, ExitStatus.TARGET_GONE, str(exc))
        try:
            return self._serve()
        except Exception as exc:
            _log(self.config, f"fatal: {exc!r}")
            return self._exit(ExitReason.FATAL, ExitStatus.FATAL, repr(exc))

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def _exit(self, reason: ExitReason, status: ExitStatus, message: str) -> int:
        if self.core is not None:
            self._collect()
            self.core.stop()
        assert self.sink is not None
        self.sink.put_control(encode_record(ExitRecord(time.time_ns(), reason, status, message)))
        if not self.sink.drain(time.monotonic() + EXIT_DRAIN_S):
            _log(self.config, "queue stayed full at exit; exit record not delivered")
        self.sink.close()
        if self.inotify is not None:
            self.inotify.close()
        if self.target is not None:
            self.target.close()
        _log(self.config, f"exit {status.name}: {message}")
        return int(status)

    # --- loop ----------------------------------------------------------------------------

    def _serve(self) -> int:
        assert self.target is not None
        assert self.sink is not None
        while self.inotify is None:
            self.inotify = self._init_inotify()
            if self.inotify is None and self._idle_wait(INSTANCE_RETRY_S):
                return self._exit(ExitReason.STOPPED, ExitStatus.OK, "stopped")
            if not self.target.alive():
                return self._gone()
        port = RootFs(self.target.root, self.inotify)
        self.core = Core(self.config.subjects, port, time.time_ns)
        self.core.drain = self._drain_inotify
        self.core.start()
        self._publish(ReadyRecord(time.time_ns(), self.core.watch_count, self.core.pending_count))
        return self._loop()

    def _init_inotify(self) -> INotify | None:
        try:
            return INotify(nonblocking=True)
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            assert self.sink is not None
            message = "inotify instance limit reached (fs.inotify.max_user_instances); retrying"
            record = ErrorRecord(time.time_ns(), "EMFILE", None, b"", message)
            self.sink.put_control(encode_record(record))
            self.sink.flush()
            return None

    def _idle_wait(self, seconds: float) -> bool:
        """Waits for a signal or the timeout; True if asked to stop."""
        select.select([self._wake_r], [], [], seconds)
        self._drain_wake()
        return self.stopping

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _publish(self, record: ReadyRecord | OverflowRecord) -> None:
        self._collect()
        assert self.sink is not None
        self.sink.put_control(encode_record(record))
        self.sink.flush()

    def _collect(self) -> None:
        """Moves the core's output into the sink: errors are never dropped, events may be."""
        assert self.sink is not None
        assert self.core is not None
        if self.core.out:
            self.sink.put_events(self.core.out)
            self.core.out = []
        if self.core.control:
            for record in self.core.control:
                self.sink.put_control(record)
            self.core.control = []

    def _gone(self) -> int:
        message = f"target process {self.config.pid} is gone"
        return self._exit(ExitReason.TARGET_GONE, ExitStatus.TARGET_GONE, message)

    def _loop(self) -> int:
        assert self.target
        assert self.sink
        assert self.inotify
        assert self.core
        ifd = self.inotify.fileno()
        qfd = int(self.sink.queue.mqd)
        poller = select.poll()
        poller.register(ifd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        pidfd = self.target.pidfd
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        waiting_out = False
        next_alive = time.monotonic() + ALIVE_CHECK_S
        while not self.stopping:
            if not waiting_out and not self.sink.idle:
                poller.register(qfd, select.POLLOUT)  # wake when fimd made room
                waiting_out = True
            elif waiting_out and self.sink.idle:
                poller.unregister(qfd)
                waiting_out = False
            timeout = None if pidfd is not None else ALIVE_CHECK_S * 1000
            ready = dict(poller.poll(timeout))
            if pidfd is not None and pidfd in ready:
                return self._gone()
            if pidfd is None and time.monotonic() >= next_alive:
                next_alive = time.monotonic() + ALIVE_CHECK_S
                if not self.target.alive():
                    return self._gone()
            if self._wake_r in ready:
                self._drain_wake()
            if ifd in ready or self.overflow_pending:
                self._read(ifd)
            if not self.sink.idle:
                self.sink.flush()
        return self._exit(ExitReason.STOPPED, ExitStatus.OK, "stopped by signal")

    def _drain_inotify(self) -> None:
        """Reads events while a long walk runs, so its own queue never overflows."""
        assert self.inotify is not None
        assert self.core is not None
        if self._in_drain:
            return
        self._in_drain = True
        try:
            self.overflow_pending |= self._handle(os.read(self.inotify.fileno(), _READ_SIZE))
        except BlockingIOError:
            pass
        finally:
            self._in_drain = False

    def _read(self, ifd: int) -> None:
        assert self.core is not None
        assert self.sink is not None
        try:
            data = os.read(ifd, _READ_SIZE)
        except BlockingIOError:
            data = b""
        overflow = self._handle(data) or self.overflow_pending
        self.overflow_pending = False
        if overflow:
            now = time.time_ns()
            self._publish(OverflowRecord(now))
            self.core.rescan()
            ready = ReadyRecord(
                time.time_ns(), self.core.watch_count, self.core.pending_count, True
            )
            self._publish(ready)
            return
        self._collect()

    def _handle(self, data: bytes) -> bool:
        """Feeds raw inotify events to the core; True if the kernel queue overflowed."""
        assert self.core is not None
        now = time.time_ns()
        handle = self.core.handle
        unpack = _EVENT.unpack_from
        overflow = False
        i, n = 0, len(data)
        while i < n:
            wd, mask, cookie, size = unpack(data, i)
            i += 16
            name = data[i : i + size].rstrip(b"\0") if size else b""
            i += size
            if mask & IN_Q_OVERFLOW:
                overflow = True
                continue
            handle(wd, mask, cookie, name, now)
        self.core.end_batch()
        return overflow
