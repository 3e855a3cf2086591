"""Fake adapters and helpers for fimd tests: resolver, engines, stdout capture, daemon."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import posix_ipc

from fim.v1 import fim_pb2
from libs.fimnotify_api import control, wire
from libs.k8s.container_id import ContainerId
from services.fimd.budget import Budgets
from services.fimd.capacity import MemoryReading
from services.fimd.daemon import Daemon, accept
from services.fimd.hashing import HashPool
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.resolver import ContainerNotFoundError, Target
from services.fimd.scanner import Scanner

_pids = itertools.count(4_000_000)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class FakeResolver:
    """Resolves each container ID of `pids` to its PID (start time 77)."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids: dict[str, int] = dict(pids or {})
        self.calls = 0

    def resolve(self, container_id: ContainerId) -> Target:
        self.calls += 1
        try:
            return Target(self.pids[str(container_id)], 77)
        except KeyError:
            raise ContainerNotFoundError(f"no process of container {container_id}") from None

    def resolve_many(self, container_ids: Iterable[ContainerId]) -> dict[ContainerId, Target]:
        self.calls += 1
        return {
            cid: Target(self.pids[str(cid)], 77) for cid in container_ids if str(cid) in self.pids
        }


class FakeEngine:
    """An engine 'process': reads real control lines from a real pipe in a thread and writes
    real wire v2 records to its real queue. By default it answers an add with READY (7
    inotify watches) and a remove with GONE REMOVED, like the engine; `auto=False` leaves
    answering to the test."""

    def __init__(self, config: control.EngineConfig, *, auto: bool = True) -> None:
        self.config = config
        self.auto = auto
        self.pid = next(_pids)
        self.status: int | None = None
        self.received: list[control.Control] = []
        self.adds: dict[int, control.AddWatch] = {}
        #: Records sent when stdin closes, just before the EXIT record and the exit.
        self.last_words: list[wire.Record] = []
        self._queue = posix_ipc.MessageQueue(config.queue_name, write=True, read=False)
        self._packer = wire.Packer(self._queue.max_message_size)
        self._send_lock = threading.Lock()
        self._read_fd, self.control_fd = os.pipe()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._read_fd, 1 << 16):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if self.status is None:  # a dead process reads nothing
                    self._apply(control.decode(line))
        os.close(self._read_fd)
        # fimd closed our stdin: remove everything, exit 0.
        self.terminate()

    def _apply(self, message: control.Control) -> None:
        self.received.append(message)
        if isinstance(message, control.AddWatch):
            self.adds[message.watch] = message
            if self.auto:
                self.send(wire.ReadyRecord(time.time_ns(), message.watch, 7, 0))
        elif self.auto:
            self.adds.pop(message.watch, None)
            self.send(wire.GoneRecord(time.time_ns(), message.watch, wire.GoneReason.REMOVED))

    def send(self, *records: wire.Record) -> None:
        with self._send_lock:
            if self.status is not None:
                return
            for message in self._packer.pack(records):
                self._queue.send(message)

    def exit(self, status: int, *records: wire.Record) -> None:
        """The process ends with `status` after sending `records` (status -9: SIGKILL)."""
        self.send(*records)
        with self._send_lock:
            self.status = status
            self._queue.close()

    def poll(self) -> int | None:
        return self.status

    def terminate(self) -> None:
        if self.status is None:
            self.exit(0, *self.last_words, wire.ExitRecord(1, wire.ExitReason.STOPPED, 0))

    def kill(self) -> None:
        if self.status is None:
            self.exit(-9)

    def wait(self, timeout: float | None = None) -> int:
        assert self.status is not None
        return self.status


class FakeLauncher:
    """Launches FakeEngines; `fail` makes the next launches raise OSError."""

    def __init__(self, *, auto: bool = True) -> None:
        self.engines: list[FakeEngine] = []
        self.auto = auto
        self.fail = 0

    def launch(self, config: control.EngineConfig) -> tuple[FakeEngine, int]:
        if self.fail:
            self.fail -= 1
            raise OSError("cannot start engine (test)")
        engine = FakeEngine(config, auto=self.auto)
        self.engines.append(engine)
        return engine, engine.control_fd

    def running(self) -> list[FakeEngine]:
        return [e for e in self.engines if e.status is None]

    def holding(self, watch: int) -> FakeEngine:
        """The running engine that holds watch number `watch` (once it read the add)."""
        engine: FakeEngine = wait_for(
            lambda: next((e for e in self.running() if watch in e.adds), None),
            what=f"an engine holding watch {watch}",
        )
        return engine


class Capture:
    """Reads a pipe in a thread: the stdout of a LineWriter, as parsed lines."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while chunk := os.read(self.read_fd, 1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode() for line in complete)
        os.close(self.read_fd)

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.json() if line.get("kind") == "event"]

    def ops(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.json() if line.get("msg") == msg]

    def close(self) -> None:
        os.close(self.write_fd)
        self._thread.join(5)


def create_watch(daemon: Daemon, watch: fim_pb2.WatchSpec) -> tuple[bool, fim_pb2.WatchStatus]:
    """CreateWatch as the servicer calls it: (changed, status)."""
    return daemon.create(accept(fim_pb2.CreateWatchRequest(spec=watch), daemon.node))


@contextmanager
def daemon_parts(
    resolver: FakeResolver,
    launcher: FakeLauncher,
    *,
    engines: int = 2,
    budgets: Budgets | None = None,
    memory: Callable[[], MemoryReading | None] = lambda: None,
    proc_root: str = "/proc",
    hashing: HashPool | None = None,
    scanner: Callable[[LineWriter, Metrics], Scanner] | None = None,
    **writer_args: Any,
) -> Iterator[tuple[Daemon, LineWriter, Capture, Metrics]]:
    """A running Daemon with its writer (for a servicer), captured stdout and metrics."""
    capture = Capture()
    metrics = Metrics()
    # Wired as fimd's cli wires it: every line the writer loses is counted.
    writer = LineWriter(capture.write_fd, "node-1", on_drop=metrics.output_drop, **writer_args)
    prefix = f"/fimk8s-test.{os.getpid()}."
    daemon = Daemon(
        "node-1", resolver, launcher, writer, metrics, engine_count=engines,
        budgets=budgets, memory=memory, queue_prefix=prefix, proc_root=proc_root,
        hashing=hashing, scanner=scanner(writer, metrics) if scanner else None,
    )  # fmt: skip
    daemon.start()
    loop = threading.Thread(target=daemon.run)
    loop.start()
    try:
        yield daemon, writer, capture, metrics
    finally:
        daemon.shutdown()
        loop.join()
        daemon.stop_engines()
        writer.close()
        capture.close()


@contextmanager
def running_daemon(
    resolver: FakeResolver, launcher: FakeLauncher, **args: Any
) -> Iterator[tuple[Daemon, Capture, Metrics]]:
    with daemon_parts(resolver, launcher, **args) as (daemon, _, capture, metrics):
        yield daemon, capture, metrics


def fake_container(
    top: Path, pid: int, container_hex: str, start_time: int = 77
) -> tuple[str, Path]:
    """(proc root, container root) under `top`: `<proc>/<pid>/root` leads to the container
    root, and the process's stat and cgroup match a FakeResolver's target (start time 77,
    in the container's cgroup), so fimd pins that root as it pins a real one."""
    rootfs = top / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    piddir = top / "proc" / str(pid)
    piddir.mkdir(parents=True)
    (piddir / "root").symlink_to(rootfs)
    fields = ["S"] + ["0"] * 18 + [str(start_time)]  # field 22 is the start time
    (piddir / "stat").write_text(f"{pid} (app) " + " ".join(fields) + "\n")
    (piddir / "cgroup").write_text(f"0::/kubepods/pod1/{container_hex}\n")
    return str(top / "proc"), rootfs
