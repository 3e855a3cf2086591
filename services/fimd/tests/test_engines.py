"""The engine pool with fake engines (real pipes, real queues, real wire v2 records):
assignment, non-blocking control writes, sequence checks, crash, restart and backoff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import posix_ipc
import pytest

from libs.fimnotify_api import control, wire
from libs.fimnotify_api.subject import SubjectConfig
from services.fimd import engines, queues
from services.fimd.engines import (
    BadMessage,
    EnginePool,
    Exited,
    Happening,
    Lost,
    NoEngineError,
    Records,
    Started,
    StartFailed,
)
from services.fimd.tests.harness import FakeEngine, FakeLauncher, wait_for

SUBJECTS = (SubjectConfig(paths=("/data",), events=("modify",)),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _pool(launcher: engines.Launcher, count: int, clock: Callable[[], float]) -> EnginePool:
    # Deeper queues than fimd's default of one message: the fake engines send several
    # messages before the test drains them.
    return EnginePool(
        launcher, count, instance=f"{os.getpid():08x}", clock=clock,
        queue_prefix=f"/fimk8s-pool.{os.getpid()}.", geometry=queues.Geometry(10, 8192),
    )  # fmt: skip


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher(auto=False)


@pytest.fixture
def pool3(launcher: FakeLauncher, clock: Clock) -> Iterator[EnginePool]:
    pool = _pool(launcher, 3, clock)
    assert [type(h) for h in pool.start()] == [Started] * 3
    yield pool
    pool.stop(timeout=2)


def _add(watch: int, paths: tuple[str, ...] = ("/data",)) -> control.AddWatch:
    return control.AddWatch(watch, 4242, f"w{watch}", (SubjectConfig(paths, ("modify",)),))


def _poll_until(
    pool: EnginePool, done: Callable[[list[Happening]], bool], timeout: float = 5.0
) -> list[Happening]:
    seen: list[Happening] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += pool.poll(0.02)
        if done(seen):
            return seen
    raise AssertionError(f"timed out; seen: {seen}")


def _records(seen: list[Happening]) -> list[wire.Record]:
    return [r for h in seen if isinstance(h, Records) for r in h.records]


def test_watches_go_to_the_engine_with_the_fewest(
    pool3: EnginePool, launcher: FakeLauncher
) -> None:
    names = [pool3.assign(_add(w)).name for w in (1, 2, 3, 4)]
    assert names == ["e0", "e1", "e2", "e0"]
    e0, e1, e2 = launcher.engines
    # Ties on the watch count go to the engine with the fewest inotify watches.
    e1.send(wire.ReadyRecord(1, 2, 500, 0))
    e2.send(wire.ReadyRecord(1, 3, 20, 0))
    _poll_until(pool3, lambda seen: len(_records(seen)) == 2)
    assert pool3.inotify_watches() == 520
    assert pool3.assign(_add(5)).name == "e2"
    # The engines got exactly their control lines, in order.
    wait_for(lambda: len(e0.received) == 2, what="e0 read its control lines")
    assert e0.received == [_add(1), _add(4)]
    # GONE frees the slot; a remove of an unknown watch is a no-op.
    assert pool3.remove(2)
    e1.send(wire.GoneRecord(2, 2, wire.GoneReason.REMOVED))
    _poll_until(pool3, lambda seen: any(isinstance(r, wire.GoneRecord) for r in _records(seen)))
    assert pool3.engine_of(2) is None
    assert pool3.inotify_watches() == 20
    assert not pool3.remove(2)
    assert pool3.assign(_add(6)).name == "e1"


def test_crashed_engine_is_drained_then_restarted_with_backoff_only_when_repeated(
    pool3: EnginePool, launcher: FakeLauncher, clock: Clock
) -> None:
    for watch in (1, 2, 3, 4):
        pool3.assign(_add(watch))
    e0 = launcher.engines[0]
    e0.exit(-9, wire.EventRecord(5, 2, 1, 0, b"/data/last-words"))
    seen = _poll_until(pool3, lambda s: any(isinstance(h, Started) for h in s))
    # Its last records first, then the exit listing every watch it held, then the restart.
    kinds = [type(h) for h in seen]
    assert kinds == [Records, Exited, Started]
    exited = seen[1]
    assert isinstance(exited, Exited)
    assert (exited.engine, exited.watches, exited.restart_in) == ("e0", frozenset({1, 4}), 0)
    assert exited.detail == "killed by SIGKILL"
    assert exited.alive_ns > 0
    started = seen[2]
    assert isinstance(started, Started)
    assert started.restart
    assert started.pid == launcher.engines[3].pid != e0.pid
    # The restarted engine writes to the same (drained) queue, its sequence from 0 again.
    new = launcher.engines[3]
    assert new.config == e0.config
    new.send(wire.ReadyRecord(1, 9, 1, 0))
    seen = _poll_until(pool3, lambda s: bool(_records(s)))
    assert not [h for h in seen if isinstance(h, Lost)]
    # Crashing again within STABLE_AFTER: backoff.
    clock.now += 1
    new.exit(1, wire.ExitRecord(3, wire.ExitReason.FATAL, 1, "boom"))
    seen = _poll_until(pool3, lambda s: any(isinstance(h, Exited) for h in s))
    exited = next(h for h in seen if isinstance(h, Exited))
    assert exited.restart_in == engines.BACKOFF_BASE
    assert exited.detail == "exit status 1: boom"
    assert len(launcher.engines) == 4
    # Meanwhile new watches go to the other engines.
    assert pool3.assign(_add(7)).name in ("e1", "e2")
    clock.now += engines.BACKOFF_BASE
    _poll_until(pool3, lambda s: any(isinstance(h, Started) for h in s))
    # After a stable run, a crash is restarted at once again.
    clock.now += engines.STABLE_AFTER
    launcher.engines[4].exit(-9)
    seen = _poll_until(pool3, lambda s: any(isinstance(h, Started) for h in s))
    assert next(h for h in seen if isinstance(h, Exited)).restart_in == 0


class _StuckProcess:
    """An engine that never reads its stdin (the test reads it when it wants)."""

    def __init__(self) -> None:
        self.pid = 12345
        self.status: int | None = None
        self.read_fd = -1

    def poll(self) -> int | None:
        return self.status

    def terminate(self) -> None:
        self.status = 0

    def kill(self) -> None:
        self.status = -9

    def wait(self, timeout: float | None = None) -> int:
        return self.status or 0


class _StuckLauncher:
    def __init__(self) -> None:
        self.process = _StuckProcess()

    def launch(self, config: control.EngineConfig) -> tuple[_StuckProcess, int]:
        self.process.read_fd, write_fd = os.pipe()
        return self.process, write_fd


def test_control_writes_never_block_and_are_bounded(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = _StuckLauncher()
    pool = _pool(stuck, 1, clock)
    pool.start()
    try:
        big = _add(1, tuple(f"/{i:03d}/" + "x" * 3990 for i in range(64)))  # ~260 KB
        line = control.encode(big)
        assert len(line) > 2 * 65536  # more than a pipe holds (64 KiB)
        started = time.monotonic()
        pool.assign(big)
        assert time.monotonic() - started < 0.5
        (engine,) = pool.engines
        assert engine.writing
        assert engine.out_bytes > 0
        # Bounded: another add would exceed the buffer, a remove always fits.
        monkeypatch.setattr(engines, "CONTROL_BUFFER_BYTES", engine.out_bytes)
        with pytest.raises(NoEngineError, match="control buffer is full"):
            pool.assign(_add(2))
        assert pool.remove(1)
        # The engine reads; the I/O loop writes the rest when the pipe is writable.
        received = bytearray()
        expected = len(line) + len(control.encode(control.RemoveWatch(1)))

        def read() -> None:
            while len(received) < expected:
                received.extend(os.read(stuck.process.read_fd, 1 << 16))

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 5
        while reader.is_alive() and time.monotonic() < deadline:
            pool.poll(0.02)
        reader.join(1)
        first, second, rest = bytes(received).split(b"\n")
        assert (control.decode(first), control.decode(second), rest) == (
            big,
            control.RemoveWatch(1),
            b"",
        )
        assert (engine.out_bytes, engine.writing) == (0, False)
    finally:
        stuck.process.status = 0
        pool.stop(timeout=1)
        os.close(stuck.process.read_fd)


def test_sequence_gaps_and_bad_messages_are_reported(
    pool3: EnginePool, launcher: FakeLauncher
) -> None:
    pool3.assign(_add(1))
    e0 = launcher.engines[0]
    e0.send(wire.ReadyRecord(1, 1, 1, 0))
    e0._packer.seq += 3  # three messages "lost"
    e0.send(wire.EventRecord(2, 2, 1, 0, b"/data/f"))
    e0._queue.send(b"garbage, not a message")
    seen = _poll_until(pool3, lambda s: any(isinstance(h, BadMessage) for h in s))
    assert [h.count for h in seen if isinstance(h, Lost)] == [3]
    assert "bad magic" in next(h.detail for h in seen if isinstance(h, BadMessage))
    assert len(_records(seen)) == 2


def test_engine_without_inotify_instance_gets_no_watches(
    launcher: FakeLauncher, clock: Clock
) -> None:
    pool = _pool(launcher, 2, clock)
    pool.start()
    try:
        for engine in launcher.engines:
            engine.send(wire.ErrorRecord(1, wire.ENGINE, "EMFILE", None, b"", "no instance"))
            _poll_until(pool, lambda s: bool(_records(s)))
            if engine is launcher.engines[0]:
                assert pool.usable() == 1
                assert pool.assign(_add(1)).name == "e1"
        assert pool.usable() == 0
        with pytest.raises(NoEngineError, match="no running engine has an inotify instance"):
            pool.assign(_add(2))
        clock.now += engines.NO_INSTANCE_PAUSE
        assert pool.usable() == 2  # tried again after a pause
    finally:
        pool.stop(timeout=2)


def test_engine_that_cannot_start_is_retried(launcher: FakeLauncher, clock: Clock) -> None:
    launcher.fail = 1
    pool = _pool(launcher, 1, clock)
    try:
        (failed,) = pool.start()
        assert isinstance(failed, StartFailed)
        assert failed.retry_in == engines.BACKOFF_BASE
        with pytest.raises(NoEngineError, match="no engine is running"):
            pool.assign(_add(1))
        clock.now += engines.BACKOFF_BASE
        seen = _poll_until(pool, lambda s: any(isinstance(h, Started) for h in s))
        assert [type(h) for h in seen] == [Started]
        assert pool.assign(_add(1)).name == "e0"
    finally:
        pool.stop(timeout=2)


def test_stop_closes_stdin_and_removes_the_queues(launcher: FakeLauncher, clock: Clock) -> None:
    pool = _pool(launcher, 2, clock)
    pool.start()
    pool.assign(_add(1))
    names = [e.queue_name for e in pool.engines]
    pool.stop(timeout=2)
    assert [e.status for e in launcher.engines] == [0, 0]  # EOF on stdin: clean exit
    for name in names:
        with pytest.raises(posix_ipc.ExistentialError):
            posix_ipc.MessageQueue(name)
    assert isinstance(launcher.engines[0], FakeEngine)


def test_stop_drains_what_an_engine_sent_before_it_exited(
    launcher: FakeLauncher, clock: Clock
) -> None:
    pool = _pool(launcher, 2, clock)
    pool.start()
    pool.assign(_add(1))
    e0 = launcher.holding(1)
    # The engine writes its last events and exits before stop() looks at it: nothing but
    # stop's final drain of the exited engine's queue can read them.
    e0.exit(0, *[wire.EventRecord(i, 2, 1, 0, b"/data/last-%d" % i) for i in range(3)])
    seen = pool.stop(timeout=2)
    paths = [r.path for r in _records(seen) if isinstance(r, wire.EventRecord)]
    assert paths == [b"/data/last-0", b"/data/last-1", b"/data/last-2"]
    # The other engine exited on EOF with its EXIT record, also read before the queue went.
    assert [r.reason for r in _records(seen) if isinstance(r, wire.ExitRecord)] == [
        wire.ExitReason.STOPPED
    ]


# A real engine that never stops on its own: it ignores EOF on stdin and SIGTERM and keeps
# its queue full. Each message holds one event numbered from 0; after each send it writes the
# number of messages sent so far to COUNT.
_STUCK_ENGINE = """
import os, signal, sys
import posix_ipc
from libs.fimnotify_api import wire

count_path, queue_name = sys.argv[1], sys.argv[sys.argv.index("--queue") + 1]
signal.signal(signal.SIGTERM, lambda *_: open(count_path + ".term", "w").close())
queue = posix_ipc.MessageQueue(queue_name, write=True, read=False)
packer = wire.Packer(queue.max_message_size)
sent = 0
while True:
    for message in packer.pack([wire.EventRecord(sent, 2, 1, 0, b"/data/%d" % sent)]):
        while True:
            try:
                queue.send(message)
                break
            except posix_ipc.SignalError:  # the SIGTERM handler ran during a blocked send
                pass
    sent += 1
    with open(count_path + ".tmp", "w") as out:
        out.write(str(sent))
    os.replace(count_path + ".tmp", count_path)
"""


def test_an_engine_that_ignores_eof_and_sigterm_is_killed_and_drained(
    tmp_path: Path, clock: Clock
) -> None:
    count = tmp_path / "count"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    launched: list[subprocess.Popen[bytes]] = []

    class Launcher:
        def launch(self, config: control.EngineConfig) -> tuple[engines.EngineProcess, int]:
            command = [sys.executable, "-c", _STUCK_ENGINE, str(count), *config.argv()]
            process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
            assert process.stdin is not None
            fd = os.dup(process.stdin.fileno())
            process.stdin.close()
            process.stdin = None
            launched.append(process)
            return process, fd

    pool = _pool(Launcher(), 1, clock)
    try:
        pool.start()
        (process,) = launched
        wait_for(count.exists, what="the engine sending")
        started = time.monotonic()
        seen = pool.stop(timeout=1.0)
        took = time.monotonic() - started
    finally:
        for p in launched:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert process.returncode == -9  # SIGKILL, after EOF and SIGTERM were ignored
    assert (tmp_path / "count.term").exists()
    assert 1.0 <= took < 1.0 + engines.STOP_GRACE
    numbers = [r.time_ns for r in _records(seen) if isinstance(r, wire.EventRecord)]
    sent = int(count.read_text())
    # Every message up to the kill was read, in order, none twice; at most the one sent
    # after the count was last written is extra.
    assert numbers == list(range(len(numbers)))
    assert sent <= len(numbers) <= sent + 1
    assert not [h for h in seen if isinstance(h, Lost | BadMessage)]
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.MessageQueue(pool.engines[0].queue_name)


# Runs in a child process whose RLIMIT_MSGQUEUE is 0 bytes (this test's host limits are never
# changed): fimd's daemon with fake engines, as far as it gets. Prints what it wrote.
_NO_QUEUE_BYTES = """
import json, resource
from services.fimd.tests.harness import FakeLauncher, FakeResolver, running_daemon

resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
launcher = FakeLauncher()
with running_daemon(FakeResolver(), launcher, engines=2) as (daemon, capture, _):
    usable = daemon.pool.usable()
print(json.dumps({"usable": usable, "launched": len(launcher.engines), "lines": capture.json()}))
"""


def test_queues_beyond_the_per_user_queue_limit_fail_every_engine_start_visibly() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.run(
        [sys.executable, "-c", _NO_QUEUE_BYTES],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    result = json.loads(child.stdout.splitlines()[-1])
    assert (result["usable"], result["launched"]) == (0, 0)  # no engine without its queue
    failed = [line for line in result["lines"] if line.get("msg") == "engine_start_failed"]
    assert [line["engine"] for line in failed] == ["e0", "e1"]
    for line in failed:
        assert line["level"] == "error"
        assert "(RLIMIT_MSGQUEUE used up?)" in line["detail"]
        assert line["retry_in"] == engines.BACKOFF_BASE


def test_a_fimnotify_that_cannot_start_or_exits_at_once_is_retried_with_backoff(
    clock: Clock,
) -> None:
    missing = _pool(engines.ProcessLauncher(["/nonexistent/fimnotify"]), 1, clock)
    try:
        (failed,) = missing.start()
        assert isinstance(failed, StartFailed)
        assert "No such file or directory" in failed.detail
        assert "RLIMIT_MSGQUEUE" not in failed.detail  # the queue was created
    finally:
        missing.stop(timeout=1)
    # An engine that exits at once, as fimnotify does on a command line it refuses (USAGE,
    # exit status 2; services/fimnotify's tests show that one).
    bad = engines.ProcessLauncher([sys.executable, "-c", "raise SystemExit(2)"])
    pool = _pool(bad, 1, clock)
    try:
        (started,) = pool.start()
        assert isinstance(started, Started)
        exits: list[Exited] = []
        for _ in range(3):
            seen = _poll_until(pool, lambda s: any(isinstance(h, Exited) for h in s), 30)
            exits += [h for h in seen if isinstance(h, Exited)]
            clock.now += exits[-1].restart_in  # the next restart is due (0 s of running)
        assert [(e.status, e.detail) for e in exits] == [(2, "exit status 2")] * 3
        # Crashing again at once: the restarts back off.
        assert [e.restart_in for e in exits] == [0.0, 0.5, 1.0]
    finally:
        pool.stop(timeout=1)
