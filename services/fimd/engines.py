"""The pool of fimnotify engines: the process adapter behind the supervisor's Spawn and Stop.

fimd runs a few engine processes (`--engines`, default min(CPUs, 4)). Each holds many watches
in one inotify instance and writes the records of all of them to one POSIX message queue that
fimd created for it (`queues.py`). fimd gives every watch incarnation a number (the wire
`watch`), assigns it to the usable engine with the fewest watches (then the fewest inotify
watches) and drives the engine over its stdin: JSON control lines (AddWatch, RemoveWatch;
`libs.fimnotify_api.control`). An engine runs as
`<fimnotify command> <EngineConfig.argv()>`, its stdout goes to fimd's stderr, and it gets
SIGTERM when fimd dies (PR_SET_PDEATHSIG), so a killed fimd leaks no engines.

No thread ever blocks on an engine: control lines go to a per-engine buffer (adds are refused
beyond `CONTROL_BUFFER_BYTES`) and are written non-blocking; what the pipe does not take is
written from the I/O loop when epoll reports the pipe writable.

`poll` (I/O loop only) reads the queues, checks each engine's message sequence, notices exited
engines and restarts them, and returns what happened, in order, as `Happening`s for the
daemon. An exited engine's queue is drained first (its last events and EXIT record), then
`Exited` lists the watches it held: each of them stopped being watched, and the supervisor
adds them again. The engine itself is started again at once; only an engine that crashes
again within `STABLE_AFTER` seconds waits, with exponential backoff. The queue survives the
restart (drained, its sequence starts again at 0).

Threads: `assign`/`remove` run on gRPC threads and the I/O loop (under the daemon's lock),
`poll`/`start`/`stop` on the I/O loop (or before and after it). The pool's own lock guards
its state; queues are read by the I/O loop only.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import posix_ipc

from libs.backoff import delay as backoff_delay
from libs.fimnotify_api import control, wire
from services.fimd import queues

#: Bytes of control lines buffered per engine before adds are refused (removes always fit).
CONTROL_BUFFER_BYTES = 32 << 20
#: An engine that ran this long before it exited is restarted at once.
STABLE_AFTER = 10.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: An engine that reported EMFILE (no inotify instance) gets no watches for this long.
NO_INSTANCE_PAUSE = 10.0
#: Messages read from one queue per poll: one busy engine cannot starve the others.
DRAIN_BATCH = 256
STOP_GRACE = 5.0

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class EngineProcess(Protocol):
    """A running engine (subprocess.Popen fits)."""

    pid: int

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Launcher(Protocol):
    def launch(self, config: control.EngineConfig) -> tuple[EngineProcess, int]:
        """Starts an engine; returns it and the write end of its control pipe (the pool owns
        and closes that fd). Raises OSError if it cannot be started."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only an async-signal-safe libc call here.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessLauncher:
    """Runs `command` (e.g. `python -m services.fimnotify`) plus the engine's flags."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def launch(self, config: control.EngineConfig) -> tuple[EngineProcess, int]:
        proc = subprocess.Popen(
            [*self.command, *config.argv()],
            stdin=subprocess.PIPE,
            stdout=2,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - nothing but one prctl call
        )
        assert proc.stdin is not None
        fd = os.dup(proc.stdin.fileno())  # non-inheritable: no other engine holds it open
        proc.stdin.close()
        proc.stdin = None
        return proc, fd


def backoff(failures: int) -> float:
    """Restart delay after `failures` consecutive quick crashes: the first restart is
    immediate, then 0.5 s doubling up to BACKOFF_MAX."""
    if failures <= 1:
        return 0.0
    return backoff_delay(failures - 1, base=BACKOFF_BASE, cap=BACKOFF_MAX)


class State(enum.Enum):
    LIVE = "live"
    DOWN = "down"  # not running; restart_at says when it starts again (None: never)


@attrs.define(eq=False)
class Engine:
    """One engine slot: its queue (for the life of fimd) and the current process, if any."""

    index: int
    name: str
    queue_name: str
    queue: posix_ipc.MessageQueue | None = None
    process: EngineProcess | None = None
    control_fd: int = -1
    state: State = State.DOWN
    #: Control lines not yet written: chunks, the offset into the first, their total size.
    out: deque[bytes] = attrs.field(factory=deque)
    out_offset: int = 0
    out_bytes: int = 0
    writing: bool = False  # control_fd registered for EPOLLOUT
    #: Watch numbers the engine holds (added and not yet GONE), with their READY counts.
    watches: set[int] = attrs.field(factory=set)
    inotify: dict[int, int] = attrs.field(factory=dict)
    next_seq: int = 0
    exit_record: wire.ExitRecord | None = None
    starts: int = 0
    started_at: float = 0.0
    #: Wall clock (ns) when the process was last seen running: a crash's gap starts here.
    alive_ns: int = 0
    failures: int = 0
    restart_at: float | None = 0.0
    no_instance_until: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def usable(self, now: float) -> bool:
        return self.state is State.LIVE and now >= self.no_instance_until


# --- what poll reports -------------------------------------------------------------------


@attrs.frozen
class Records:
    """Decoded records of one message of `engine`, in queue order."""

    engine: str
    records: list[wire.Record]


@attrs.frozen
class Lost:
    """`count` messages of `engine` are missing (sequence gap)."""

    engine: str
    count: int


@attrs.frozen
class BadMessage:
    engine: str
    detail: str


@attrs.frozen
class Started:
    engine: str
    pid: int
    restart: bool  # False: the first start of this slot


@attrs.frozen
class StartFailed:
    engine: str
    detail: str
    retry_in: float


@attrs.frozen
class Exited:
    """An engine process ended (its queue is drained). Every watch in `watches` is gone."""

    engine: str
    pid: int
    status: int
    detail: str
    watches: frozenset[int]
    #: Wall clock (ns) when it was last seen running.
    alive_ns: int
    #: Seconds until it is started again (0: already restarted, a Started follows).
    restart_in: float


Happening = Records | Lost | BadMessage | Started | StartFailed | Exited


class NoEngineError(Exception):
    """No engine can take a watch now (none running, none with an inotify instance, or every
    control buffer full)."""


def _status_text(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


class EnginePool:
    """The engines of one fimd; see the module docstring."""

    def __init__(
        self,
        launcher: Launcher,
        count: int,
        *,
        instance: str,
        queue_prefix: str = queues.DEFAULT_PREFIX,
        geometry: queues.Geometry = queues.DEFAULT_GEOMETRY,
        proc_root: str = "/proc",
        max_dirs: int = control.DEFAULT_MAX_DIRS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("at least one engine is needed")
        self._launcher = launcher
        self._geometry = geometry
        self._proc_root = proc_root
        self.max_dirs = max_dirs
        self._clock = clock
        self._lock = threading.RLock()
        self._epoll = select.epoll()
        self._stopping = False
        self.engines = [
            Engine(i, f"e{i}", f"{queue_prefix}{instance[:8]}.e{i}") for i in range(count)
        ]
        self._by_queue_fd: dict[int, Engine] = {}
        self._by_control_fd: dict[int, Engine] = {}
        self._owner: dict[int, Engine] = {}  # watch number -> engine

    # --- queries -----------------------------------------------------------------------

    def engine_of(self, watch: int) -> Engine | None:
        return self._owner.get(watch)

    def usable(self) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for e in self.engines if e.usable(now))

    def live(self) -> int:
        with self._lock:
            return sum(1 for e in self.engines if e.state is State.LIVE)

    def inotify_watches(self) -> int:
        with self._lock:
            return sum(sum(e.inotify.values()) for e in self.engines)

    def pids(self) -> list[int]:
        with self._lock:
            return [e.pid for e in self.engines if e.state is State.LIVE]

    # --- requests ----------------------------------------------------------------------

    def assign(self, add: control.AddWatch) -> Engine:
        """Sends `add` to the usable engine with the fewest watches; raises NoEngineError,
        or ControlError if the message is too large to send at all."""
        line = control.encode(add)
        now = self._clock()
        with self._lock:
            candidates = [
                e
                for e in self.engines
                if e.usable(now)
                and (e.out_bytes == 0 or e.out_bytes + len(line) <= CONTROL_BUFFER_BYTES)
            ]
            if not candidates:
                raise NoEngineError(self._why_none(now))
            engine = min(
                candidates, key=lambda e: (len(e.watches), sum(e.inotify.values()), e.index)
            )
            engine.watches.add(add.watch)
            self._owner[add.watch] = engine
            self._send(engine, line)
            return engine

    def _why_none(self, now: float) -> str:
        live = [e for e in self.engines if e.state is State.LIVE]
        if not live:
            return f"no engine is running (of {len(self.engines)})"
        if not any(e.usable(now) for e in live):
            return "no running engine has an inotify instance (EMFILE)"
        return "every engine's control buffer is full (engines not reading their stdin?)"

    def remove(self, watch: int) -> bool:
        """Asks the engine holding `watch` to drop it (answered by GONE REMOVED); False if
        no running engine holds it."""
        with self._lock:
            engine = self._owner.get(watch)
            if engine is None or engine.state is not State.LIVE:
                return False
            self._send(engine, control.encode(control.RemoveWatch(watch)))
            return True

    def _send(self, engine: Engine, line: bytes) -> None:
        engine.out.append(line)
        engine.out_bytes += len(line)
        self._flush(engine)

    def _flush(self, engine: Engine) -> None:
        """Writes what the pipe takes now; the rest waits for EPOLLOUT."""
        while engine.out:
            head = engine.out[0]
            try:
                written = os.write(engine.control_fd, memoryview(head)[engine.out_offset :])
            except BlockingIOError:
                break
            except OSError:
                # The engine is gone (EPIPE) or its pipe is closed: poll reaps it.
                self._clear_out(engine)
                break
            engine.out_offset += written
            engine.out_bytes -= written
            if engine.out_offset == len(head):
                engine.out.popleft()
                engine.out_offset = 0
        self._want_write(engine, bool(engine.out))

    def _clear_out(self, engine: Engine) -> None:
        engine.out.clear()
        engine.out_offset = engine.out_bytes = 0

    def _want_write(self, engine: Engine, want: bool) -> None:
        if want == engine.writing or engine.control_fd < 0:
            return
        if want:
            self._epoll.register(engine.control_fd, select.EPOLLOUT)
            self._by_control_fd[engine.control_fd] = engine
        else:
            self._epoll.unregister(engine.control_fd)
            del self._by_control_fd[engine.control_fd]
        engine.writing = want

    # --- I/O loop ----------------------------------------------------------------------

    def start(self) -> list[Happening]:
        """Starts every engine (call once, before the I/O loop)."""
        now = self._clock()
        return [self._start(e, now) for e in self.engines]

    def poll(self, timeout: float) -> list[Happening]:
        """Waits up to `timeout` for queue messages or writable control pipes, then reaps and
        restarts engines; returns what happened, in order."""
        out: list[Happening] = []
        for fd, _ in self._epoll.poll(timeout):
            engine = self._by_queue_fd.get(fd)
            if engine is not None:
                out += self._drain(engine, DRAIN_BATCH)
                continue
            with self._lock:
                engine = self._by_control_fd.get(fd)
                if engine is not None:
                    self._flush(engine)
        now = self._clock()
        alive_ns = time.time_ns()
        for engine in self.engines:
            process = engine.process
            if engine.state is not State.LIVE or process is None:
                continue
            status = process.poll()
            if status is None:
                engine.alive_ns = alive_ns
                continue
            out += self._drain(engine, None)
            out.append(self._exited(engine, status, now))
        for engine in self.engines:
            if (
                engine.state is State.DOWN
                and engine.restart_at is not None
                and engine.restart_at <= now
                and not self._stopping
            ):
                out.append(self._start(engine, now))
        return out

    def _start(self, engine: Engine, now: float) -> Happening:
        try:
            if engine.queue is None:
                engine.queue = queues.create(engine.queue_name, self._geometry)
                self._epoll.register(engine.queue.mqd, select.EPOLLIN)
                self._by_queue_fd[engine.queue.mqd] = engine
            config = control.EngineConfig(
                engine.queue_name, self._proc_root, self.max_dirs, name=engine.name
            )
            process, fd = self._launcher.launch(config)
        except (OSError, posix_ipc.Error, control.ControlError) as err:
            engine.failures += 1
            delay = max(backoff(engine.failures), BACKOFF_BASE)
            engine.restart_at = now + delay
            detail = f"{err}" + (" (RLIMIT_MSGQUEUE used up?)" if engine.queue is None else "")
            return StartFailed(engine.name, detail, delay)
        os.set_blocking(fd, False)
        with self._lock:
            engine.process, engine.control_fd = process, fd
            engine.state, engine.started_at = State.LIVE, now
            engine.alive_ns = time.time_ns()
            engine.restart_at = None
            engine.next_seq, engine.exit_record = 0, None
            engine.no_instance_until = 0.0
            engine.starts += 1
        return Started(engine.name, process.pid, engine.starts > 1)

    def _exited(self, engine: Engine, status: int, now: float) -> Exited:
        """Marks the (drained) engine down and schedules its restart."""
        with self._lock:
            watches = frozenset(engine.watches)
            for watch in watches:
                self._owner.pop(watch, None)
            engine.watches.clear()
            engine.inotify.clear()
            self._close_control(engine)
            pid = engine.pid
            engine.process, engine.state = None, State.DOWN
            if now - engine.started_at >= STABLE_AFTER:
                engine.failures = 0
            engine.failures += 1
            delay = backoff(engine.failures)
            engine.restart_at = None if self._stopping else now + delay
            record = engine.exit_record
            detail = _status_text(status) + (
                f": {record.message}" if record is not None and record.message else ""
            )
        return Exited(engine.name, pid, status, detail, watches, engine.alive_ns, delay)

    def _close_control(self, engine: Engine) -> None:
        self._want_write(engine, False)
        self._clear_out(engine)
        if engine.control_fd >= 0:
            os.close(engine.control_fd)
            engine.control_fd = -1

    def _drain(self, engine: Engine, limit: int | None) -> list[Happening]:
        """Reads up to `limit` messages (None: all) of the engine's queue."""
        queue = engine.queue
        if queue is None:
            return []
        out: list[Happening] = []
        for message in queues.receive_all(queue, limit):
            try:
                decoded = wire.decode_message(message)
            except wire.WireError as err:
                out.append(BadMessage(engine.name, str(err)))
                continue
            if decoded.seq != engine.next_seq:
                out.append(Lost(engine.name, (decoded.seq - engine.next_seq) & 0xFFFFFFFF))
            engine.next_seq = (decoded.seq + 1) & 0xFFFFFFFF
            self._book(engine, decoded.records)
            out.append(Records(engine.name, decoded.records))
        return out

    def _book(self, engine: Engine, records: list[wire.Record]) -> None:
        """The pool's own bookkeeping from an engine's records."""
        with self._lock:
            for record in records:
                if isinstance(record, wire.GoneRecord):
                    engine.watches.discard(record.watch)
                    engine.inotify.pop(record.watch, None)
                    if self._owner.get(record.watch) is engine:
                        del self._owner[record.watch]
                elif isinstance(record, wire.ReadyRecord):
                    if record.watch in engine.watches:
                        engine.inotify[record.watch] = record.watches
                    engine.no_instance_until = 0.0
                elif isinstance(record, wire.ErrorRecord):
                    if record.code == "EMFILE" and record.watch == wire.ENGINE:
                        engine.no_instance_until = self._clock() + NO_INSTANCE_PAUSE
                elif isinstance(record, wire.ExitRecord):
                    engine.exit_record = record

    def stop(self, timeout: float = STOP_GRACE) -> list[Happening]:
        """Ends every engine: closes its stdin (the engine removes its watches and exits),
        SIGTERM after half of `timeout`, SIGKILL after it; drains and removes the queues.
        Returns the records read meanwhile. Call after the I/O loop has returned."""
        self._stopping = True
        with self._lock:
            for engine in self.engines:
                engine.restart_at = None
                if engine.state is State.LIVE:
                    self._close_control(engine)
        out: list[Happening] = []
        start = time.monotonic()
        terminated = False
        while True:
            running = [e for e in self.engines if e.state is State.LIVE and e.process]
            for engine in running:
                assert engine.process is not None
                status = engine.process.poll()
                if status is not None:
                    out += self._drain(engine, None)
                    self._exited(engine, status, self._clock())
            running = [e for e in running if e.state is State.LIVE]
            elapsed = time.monotonic() - start
            if not running or elapsed > timeout:
                break
            if elapsed > timeout / 2 and not terminated:
                terminated = True
                for engine in running:
                    assert engine.process is not None
                    engine.process.terminate()
            out += [h for e in running for h in self._drain(e, DRAIN_BATCH)]
            time.sleep(0.02)
        for engine in self.engines:
            if engine.state is State.LIVE and engine.process is not None:
                engine.process.kill()
                status = engine.process.wait(STOP_GRACE)
                out += self._drain(engine, None)
                self._exited(engine, status, self._clock())
            if engine.queue is not None:
                queues.remove(engine.queue)
                engine.queue = None
        self._epoll.close()
        return out
