"""Fake adapters and helpers for fimd tests: resolver, spawner, stdout capture, daemon."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import posix_ipc

from libs.k8s.container_id import ContainerId
from services.fimd.daemon import Daemon
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.resolver import ContainerNotFoundError
from libs.fimnotify_api import wire
from libs.fimnotify_api.config import WatchConfig

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
    def __init__(self) -> None:
        self.pids: dict[str, int] = {}

    def resolve(self, container_id: ContainerId) -> int:
        try:
            return self.pids[str(container_id)]
        except KeyError:
            raise ContainerNotFoundError(f"no process of container {container_id}") from None


class FakeChild:
    """A 'process' that runs until terminated or told to exit; writes to its real queue."""

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.pid = next(_pids)
        self.status: int | None = None
        self.terminated = False
        self._queue = posix_ipc.MessageQueue(config.queue_name, write=True, read=False)
        self._packer = wire.Packer(self._queue.max_message_size)

    def send(self, *records: wire.Record) -> None:
        for message in self._packer.pack(records):
            self._queue.send(message)

    def exit(self, status: int, *records: wire.Record) -> None:
        self.send(*records)
        self._queue.close()
        self.status = status

    def poll(self) -> int | None:
        return self.status

    def terminate(self) -> None:
        self.terminated = True
        if self.status is None:
            self.exit(0)

    def kill(self) -> None:
        self.terminate()

    def wait(self, timeout: float | None = None) -> int:
        assert self.status is not None
        return self.status


class FakeSpawner:
    def __init__(self) -> None:
        self.children: list[FakeChild] = []

    def spawn(self, config: WatchConfig) -> FakeChild:
        child = FakeChild(config)
        self.children.append(child)
        return child


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


@contextmanager
def daemon_parts(
    resolver: FakeResolver, spawner: FakeSpawner, **writer_args: Any
) -> Iterator[tuple[Daemon, LineWriter, Capture, Metrics]]:
    """A running Daemon with its writer (for a servicer), captured stdout and metrics."""
    capture = Capture()
    writer = LineWriter(capture.write_fd, "node-1", **writer_args)
    metrics = Metrics()
    prefix = f"/fimk8s-test.{os.getpid()}."
    daemon = Daemon("node-1", resolver, spawner, writer, metrics, queue_prefix=prefix)
    loop = threading.Thread(target=daemon.run)
    loop.start()
    try:
        yield daemon, writer, capture, metrics
    finally:
        daemon.shutdown()
        loop.join()
        daemon.stop_children()
        writer.close()
        capture.close()


@contextmanager
def running_daemon(
    resolver: FakeResolver, spawner: FakeSpawner, **writer_args: Any
) -> Iterator[tuple[Daemon, Capture, Metrics]]:
    with daemon_parts(resolver, spawner, **writer_args) as (daemon, _, capture, metrics):
        yield daemon, capture, metrics
