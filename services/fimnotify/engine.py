"""The imperative shell of an engine: one inotify instance and one queue for many watches.

fimd writes control messages to stdin (`libs.fimnotify_api.control`); each ADD becomes a
`tree.Core` (the pure watch tree of one watch) over the root of its container's process.
Cores of one engine share the inotify instance: a kernel watch (one per inode) may be held by
several cores (`KernelWatches`), every event is fanned out to each core holding its
descriptor, and the descriptor is removed from the kernel only when no core holds it.

Isolation: an exception inside one watch's core removes that watch (GONE FAILED) and nothing
else; a container process that exits ends its watches (GONE TARGET_GONE) and nothing else.
An inotify queue overflow costs every watch of the engine a rescan, at most one per
`RESCAN_INTERVAL` seconds (a container causing overflows again and again cannot keep the
engine rescanning).
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from inotify_simple import INotify

from libs.fimnotify_api import control
from libs.fimnotify_api.control import AddWatch, ControlError, EngineConfig, RemoveWatch
from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.masks import IN_IGNORED, IN_Q_OVERFLOW
from libs.fimnotify_api.wire import (
    ENGINE,
    ErrorRecord,
    ExitReason,
    ExitRecord,
    ExitStatus,
    GoneReason,
    GoneRecord,
    OverflowRecord,
    ReadyRecord,
    Record,
    encode_record,
)
from libs.rootfs.target import Target, TargetGoneError, TargetMismatchError
from services.fimnotify.procfs import RootFs
from services.fimnotify.sink import Sink, open_queue
from services.fimnotify.tree import Core, Lookup

_EVENT = struct.Struct("iIII")
_READ_SIZE = 1 << 20
#: How long to wait before retrying inotify_init1 when max_user_instances is exhausted.
INSTANCE_RETRY_S = 2.0
#: Without pidfds (a foreign procfs), how often to check that targets still exist.
ALIVE_CHECK_S = 1.0
EXIT_DRAIN_S = 2.0
#: At most one overflow rescan of all watches per this many seconds.
RESCAN_INTERVAL = 1.0
_CONTROL_READ = 1 << 16
#: Added latency per wake-up that batches events (see `_loop`).
COALESCE_S = 0.001


def _log(name: str, message: str) -> None:
    print(f"fimnotify[{name}]: {message}", file=sys.stderr, flush=True)


class KernelWatches:
    """Which cores hold each inotify watch descriptor of the shared instance.

    Almost every descriptor has one holder, so it maps to that core itself; only a shared
    one maps to a tuple (a dict per descriptor would cost ~200 bytes on 100,000 of them).
    """

    def __init__(self, inotify: INotify) -> None:
        self.inotify = inotify
        self.holders: dict[int, Core | tuple[Core, ...]] = {}

    def hold(self, wd: int, core: Core) -> None:
        held = self.holders.get(wd)
        if held is None:
            self.holders[wd] = core
        elif isinstance(held, tuple):
            if core not in held:
                self.holders[wd] = (*held, core)
        elif held is not core:
            self.holders[wd] = (held, core)

    def held_by(self, wd: int) -> tuple[Core, ...]:
        held = self.holders.get(wd)
        if held is None:
            return ()
        return held if isinstance(held, tuple) else (held,)

    def release(self, wd: int, core: Core) -> None:
        rest = tuple(c for c in self.held_by(wd) if c is not core)
        if len(rest) == len(self.held_by(wd)):
            return
        if rest:
            self.holders[wd] = rest if len(rest) > 1 else rest[0]
            return
        del self.holders[wd]
        try:
            self.inotify.rm_watch(wd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # already gone (IN_IGNORED in flight)
                raise


class SharedRoot:
    """The `tree.Port` of one core: its container's root, the engine's shared instance."""

    def __init__(self, root: RootFs, kernel: KernelWatches) -> None:
        self.root = root
        self.kernel = kernel
        self.core: Core | None = None

    def lookup(self, path: bytes) -> Lookup:
        return self.root.lookup(path)

    def watch_dir(
        self, path: bytes, mask: int, listing: bool
    ) -> tuple[int, list[tuple[bytes, bool]]]:
        wd, entries = self.root.watch_dir(path, mask, listing)
        assert self.core is not None
        self.kernel.hold(wd, self.core)
        return wd, entries

    def unwatch(self, wd: int) -> None:
        assert self.core is not None
        self.kernel.release(wd, self.core)


class Pinned:
    """A container process pinned once for every watch of it (descriptors are shared)."""

    def __init__(self, target: Target, root: RootFs, identity: ProcessIdentity) -> None:
        self.target = target
        self.root = root
        self.identity = identity
        self.watches: set[int] = set()


class Watch:
    def __init__(self, number: int, label: str, pid: int, core: Core) -> None:
        self.number = number
        self.label = label
        self.pid = pid
        self.core = core


class Engine:
    def __init__(self, config: EngineConfig, control_fd: int = 0) -> None:
        self.config = config
        self.control_fd = control_fd
        self.stopping = False
        self.sink: Sink | None = None
        self.inotify: INotify | None = None
        self.kernel: KernelWatches | None = None
        self.watches: dict[int, Watch] = {}
        self.pinned: dict[int, Pinned] = {}
        self.by_pidfd: dict[int, Pinned] = {}
        #: Records of every core go straight into these two lists (shared, not copied).
        self.events: list[bytes] = []
        self.errors: list[bytes] = []
        self._control_buf = bytearray()
        self._control_skip = False
        self._control_eof = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._in_drain = False
        self.overflow_pending = False
        self._next_rescan = 0.0
        self._touched: dict[int, Core] = {}
        self.poller = select.poll()

    # --- entry ---------------------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        _raise_nofile()
        self.sink = Sink(open_queue(self.config.queue_name), self.config.buffer_bytes)
        os.set_blocking(self.control_fd, False)
        try:
            return self._serve()
        except Exception as exc:
            _log(self.config.name, f"fatal: {exc!r}")
            return self._exit(ExitReason.FATAL, ExitStatus.FATAL, repr(exc))

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def _exit(self, reason: ExitReason, status: ExitStatus, message: str) -> int:
        for number in list(self.watches):
            self._drop_watch(number)
        self._collect()
        assert self.sink is not None
        self.sink.put_control(encode_record(ExitRecord(time.time_ns(), reason, status, message)))
        if not self.sink.drain(time.monotonic() + EXIT_DRAIN_S):
            _log(self.config.name, "queue stayed full at exit; exit record not delivered")
        self.sink.close()
        if self.inotify is not None:
            self.inotify.close()
        _log(self.config.name, f"exit {status.name}: {message}")
        return int(status)

    # --- set-up --------------------------------------------------------------------------

    def _serve(self) -> int:
        while self.inotify is None:
            self.inotify = self._init_inotify()
            if self.inotify is None and self._idle_wait(INSTANCE_RETRY_S):
                why = "control channel closed" if self._control_eof else "stopped by signal"
                return self._exit(ExitReason.STOPPED, ExitStatus.OK, why)
        self.kernel = KernelWatches(self.inotify)
        return self._loop()

    def _init_inotify(self) -> INotify | None:
        try:
            return INotify(nonblocking=True)
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            message = "inotify instance limit reached (fs.inotify.max_user_instances); retrying"
            self._publish(ErrorRecord(time.time_ns(), ENGINE, "EMFILE", None, b"", message))
            return None

    def _idle_wait(self, seconds: float) -> bool:
        """Waits for a signal, the end of stdin or the timeout; True if asked to stop.
        Control lines stay unread in the pipe: only a hang-up (fimd closed it) ends the wait."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self.control_fd, 0)  # POLLHUP/POLLERR are reported regardless
        ready = dict(poller.poll(int(seconds * 1000)))
        self._drain_wake()
        if ready.get(self.control_fd, 0) & (select.POLLHUP | select.POLLERR):
            self._control_eof = True
        return self.stopping or self._control_eof

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _publish(self, record: Record) -> None:
        self._collect()
        assert self.sink is not None
        self.sink.put_control(encode_record(record))
        self.sink.flush()

    def _collect(self) -> None:
        """Moves what the cores produced into the sink."""
        assert self.sink is not None
        if self.events:
            self.sink.put_events(self.events)
            self.events.clear()
        if self.errors:
            for record in self.errors:
                self.sink.put_control(record)
            self.errors.clear()

    # --- control messages ----------------------------------------------------------------

    def _read_control(self) -> None:
        try:
            data = os.read(self.control_fd, _CONTROL_READ)
        except BlockingIOError:
            return
        if not data:
            self._control_eof = True
            return
        buf = self._control_buf
        buf += data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            if self._control_skip:
                self._control_skip = False  # the rest of an oversized line
                continue
            self._apply_line(line)
        if len(buf) > control.MAX_CONTROL_BYTES:
            buf.clear()
            self._control_skip = True
            self._bad_control(f"control line longer than {control.MAX_CONTROL_BYTES} bytes")

    def _apply_line(self, line: bytes) -> None:
        try:
            message = control.decode(line)
        except ControlError as err:
            self._bad_control(str(err))
            return
        if isinstance(message, RemoveWatch):
            if self._drop_watch(message.watch):
                self._gone(message.watch, GoneReason.REMOVED, "removed")
            else:
                self._gone(message.watch, GoneReason.REMOVED, "not held")
            return
        self._add(message)

    def _bad_control(self, why: str) -> None:
        self._publish(ErrorRecord(time.time_ns(), ENGINE, "EBADCTL", None, b"", why))

    def _gone(self, number: int, reason: GoneReason, message: str) -> None:
        self._publish(GoneRecord(time.time_ns(), number, reason, message))

    def _add(self, message: AddWatch) -> None:
        assert self.kernel is not None
        if message.watch in self.watches:
            self._drop_watch(message.watch)
        try:
            pinned = self._pin(message.pid, message.identity)
        except TargetMismatchError as exc:
            self._gone(message.watch, GoneReason.TARGET_MISMATCH, str(exc))
            return
        except (TargetGoneError, PermissionError, OSError) as exc:
            self._gone(message.watch, GoneReason.TARGET_GONE, str(exc))
            return
        port = SharedRoot(pinned.root, self.kernel)
        core = Core(
            message.subjects,
            port,
            time.time_ns,
            watch=message.watch,
            max_dirs=self.config.max_dirs,
        )
        port.core = core
        core.out, core.control = self.events, self.errors
        core.drain = self._drain_inotify
        watch = Watch(message.watch, message.label, message.pid, core)
        self.watches[message.watch] = watch
        pinned.watches.add(message.watch)
        if self._guarded(watch, core.start):
            self._ready(watch, rescan=False)

    def _ready(self, watch: Watch, rescan: bool) -> None:
        core = watch.core
        record = ReadyRecord(
            time.time_ns(),
            watch.number,
            core.watch_count,
            core.pending_count,
            core.limited,
            rescan,
        )
        self._publish(record)

    def _guarded(self, watch: Watch, step: Callable[[], None]) -> bool:
        """Runs one core step; a failure costs that watch only (GONE FAILED)."""
        try:
            step()
        except Exception as exc:
            _log(self.config.name, f"watch {watch.number} ({watch.label}) failed: {exc!r}")
            self._drop_watch(watch.number, stop=False)
            self._gone(watch.number, GoneReason.FAILED, f"engine error: {exc!r}")
            return False
        return True

    def _pin(self, pid: int, identity: ProcessIdentity) -> Pinned:
        """The pinned process `pid`, opened once for all its watches; a pinned process that
        is not `identity` (reused PID) raises TargetMismatchError."""
        pinned = self.pinned.get(pid)
        if pinned is not None and pinned.target.alive():
            was, now = pinned.identity.start_time, identity.start_time
            if was and now and was != now:
                raise TargetMismatchError(f"process {pid}: start time {was} pinned, {now} resolved")
            return pinned
        if pinned is not None:
            self._target_gone(pinned)
        assert self.inotify is not None
        target = Target.open(self.config.proc_root, pid, identity)
        pinned = Pinned(target, RootFs(target.root, self.inotify), identity)
        self.pinned[pid] = pinned
        if target.pidfd is not None:
            self.by_pidfd[target.pidfd] = pinned
            self.poller.register(target.pidfd, select.POLLIN)
        return pinned

    def _unpin(self, pinned: Pinned) -> None:
        pidfd = pinned.target.pidfd
        if pidfd is not None:
            self.by_pidfd.pop(pidfd, None)
            self.poller.unregister(pidfd)
        self.pinned.pop(pinned.target.pid, None)
        pinned.target.close()

    def _drop_watch(self, number: int, stop: bool = True) -> bool:
        """Forgets a watch and releases its kernel watches; False if it was not held."""
        watch = self.watches.pop(number, None)
        if watch is None:
            return False
        self._touched.pop(id(watch.core), None)
        if stop:
            try:
                watch.core.stop()
            except Exception as exc:  # its kernel watches are released below regardless
                _log(self.config.name, f"watch {number} stop failed: {exc!r}")
        self._release_all(watch.core)
        pinned = self.pinned.get(watch.pid)
        if pinned is not None:
            pinned.watches.discard(number)
            if not pinned.watches:
                self._unpin(pinned)
        return True

    def _release_all(self, core: Core) -> None:
        assert self.kernel is not None
        kernel = self.kernel
        for wd in [wd for wd in kernel.holders if core in kernel.held_by(wd)]:
            kernel.release(wd, core)

    def _target_gone(self, pinned: Pinned) -> None:
        message = f"target process {pinned.target.pid} is gone"
        for number in sorted(pinned.watches):
            self._drop_watch(number)
            self._gone(number, GoneReason.TARGET_GONE, message)
        if pinned.target.pid in self.pinned:
            self._unpin(pinned)

    # --- loop ----------------------------------------------------------------------------

    def _loop(self) -> int:
        assert self.sink is not None
        assert self.inotify is not None
        ifd = self.inotify.fileno()
        qfd = int(self.sink.queue.mqd)
        poller = self.poller
        poller.register(ifd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self.control_fd, select.POLLIN)
        waiting_out = False
        next_alive = time.monotonic() + ALIVE_CHECK_S
        while not self.stopping and not self._control_eof:
            if not waiting_out and not self.sink.idle:
                poller.register(qfd, select.POLLOUT)  # wake when fimd made room
                waiting_out = True
            elif waiting_out and self.sink.idle:
                poller.unregister(qfd)
                waiting_out = False
            timeout = self._timeout()
            ready = dict(poller.poll(timeout))
            for fd in [fd for fd in ready if fd in self.by_pidfd]:
                self._target_gone(self.by_pidfd[fd])
            if time.monotonic() >= next_alive:
                next_alive = time.monotonic() + ALIVE_CHECK_S
                self._check_alive()
            if self._wake_r in ready:
                self._drain_wake()
            if ifd in ready or self.overflow_pending:
                if ifd in ready:
                    # Let events gather for a moment: one read, one dispatch and one queue
                    # message per millisecond instead of per event costs a tenth of the CPU
                    # when many containers write a little each (far below the kernel queue).
                    time.sleep(COALESCE_S)
                self._read(ifd)
            if self.control_fd in ready:
                self._read_control()
            if not self.sink.idle:
                self.sink.flush()
        why = "control channel closed" if self._control_eof else "stopped by signal"
        return self._exit(ExitReason.STOPPED, ExitStatus.OK, why)

    def _timeout(self) -> int:
        if self.overflow_pending:
            return max(0, int((self._next_rescan - time.monotonic()) * 1000))
        return int(ALIVE_CHECK_S * 1000)

    def _check_alive(self) -> None:
        """For targets without a pidfd (foreign procfs): poll their /proc entry."""
        for pinned in list(self.pinned.values()):
            if pinned.target.pidfd is None and not pinned.target.alive():
                self._target_gone(pinned)

    def _drain_inotify(self) -> None:
        """Reads events while a long walk runs, so the kernel queue never overflows."""
        assert self.inotify is not None
        if self._in_drain:
            return
        self._in_drain = True
        try:
            self._handle(os.read(self.inotify.fileno(), _READ_SIZE))
        except BlockingIOError:
            pass
        finally:
            self._in_drain = False

    def _read(self, ifd: int) -> None:
        try:
            data = os.read(ifd, _READ_SIZE)
        except BlockingIOError:
            data = b""
        self._handle(data)
        if self.overflow_pending and time.monotonic() >= self._next_rescan:
            self.overflow_pending = False
            self._next_rescan = time.monotonic() + RESCAN_INTERVAL
            self._rescan_all()
            return
        self._collect()

    def _rescan_all(self) -> None:
        for watch in list(self.watches.values()):
            if self._guarded(watch, watch.core.rescan):
                self._ready(watch, rescan=True)

    def _handle(self, data: bytes) -> bool:
        """Fans raw inotify events out to the cores; True if the kernel queue overflowed
        (reported at once; the rescans follow from the loop, rate-limited)."""
        assert self.kernel is not None
        holders = self.kernel.holders
        touched = self._touched
        now = time.time_ns()
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
                if not self.overflow_pending:
                    self.overflow_pending = True
                    self._publish(OverflowRecord(now))
                continue
            held = holders.get(wd)
            if held is None:
                continue
            for core in held if isinstance(held, tuple) else (held,):
                touched[id(core)] = core
                try:
                    core.handle(wd, mask, cookie, name, now)
                except Exception as exc:
                    self._core_failed(core, exc)
            if mask & IN_IGNORED:
                holders.pop(wd, None)
        self._end_batch()
        return overflow

    def _end_batch(self) -> None:
        touched, self._touched = self._touched, {}
        for core in touched.values():
            try:
                core.end_batch()
            except Exception as exc:
                self._core_failed(core, exc)

    def _core_failed(self, core: Core, exc: Exception) -> None:
        watch = self.watches.get(core.watch)
        if watch is None or watch.core is not core:
            return
        _log(self.config.name, f"watch {watch.number} ({watch.label}) failed: {exc!r}")
        self._drop_watch(watch.number, stop=False)
        self._gone(watch.number, GoneReason.FAILED, f"engine error: {exc!r}")


def _raise_nofile() -> None:
    """Every watched container costs three descriptors: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
