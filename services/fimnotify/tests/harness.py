"""Real processes for the integration tests: a namespaced "container", fimd's queue, fimnotify.

* `Container`: a Python agent in its own mount namespace with a private tmpfs as its root
  (``unshare -m`` + ``chroot``); file operations run *inside* it (`Container.run`).
* `QueueReader`: creates the POSIX queue like fimd (O_CREAT|O_EXCL), decodes messages on a
  thread, unlinks the queue on close.
* `EngineProcess`: ``python -m services.fimnotify`` (an engine); watches are added and
  removed with control messages on its stdin.
Every process is stopped by PID in `close()`; nothing is left mounted on the host (the
tmpfs lives only in the container's mount namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import posix_ipc

from libs.fimnotify_api import control
from libs.fimnotify_api.control import AddWatch, Control, EngineConfig, RemoveWatch
from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import EventRecord, Record, WireError, decode_message

# Runs inside the new mount namespace: private tmpfs root, then a command loop on stdin.
_AGENT = r"""
import json, os, shutil, subprocess, sys, time
mnt = sys.argv[1]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "fimk8s-ct", mnt], check=True)
os.chroot(mnt)
os.chdir("/")
out = sys.stdout
out.write("ready\n"); out.flush()
for line in sys.stdin:
    try:
        exec(json.loads(line), {"os": os, "shutil": shutil, "time": time})
        out.write("ok\n")
    except Exception as exc:
        out.write("err " + repr(exc).replace("\n", " ") + "\n")
    out.flush()
"""


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop("PYTHONSAFEPATH", None)
    return env


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Polls `predicate` until true; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Container:
    """A process in its own mount namespace whose root is a private tmpfs."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.mountpoint = tempfile.mkdtemp(prefix="fimk8s-ct-")
        self.proc = subprocess.Popen(
            [
                *prefix,
                *("unshare", "-m", "--propagation", "private"),
                *(sys.executable, "-c", _AGENT, self.mountpoint),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=python_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != "ready\n":
            self.close()
            raise RuntimeError(f"container agent failed to start: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host_root(self) -> str:
        return f"/proc/{self.pid}/root"

    def run(self, code: str) -> None:
        """Executes Python `code` inside the container (its root, its mounts)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(code) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if reply != "ok\n":
            raise RuntimeError(f"in container: {code!r}: {reply!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        os.rmdir(self.mountpoint)  # empty on the host: the tmpfs was never visible here


class QueueReader:
    """fimd's side of the queue: create exclusively, decode on a thread, unlink on close."""

    def __init__(self, max_messages: int = 10, max_message_size: int = 8192) -> None:
        self.name = f"/fimk8s.test.{uuid.uuid4().hex[:12]}"
        self.queue = posix_ipc.MessageQueue(
            self.name,
            posix_ipc.O_CREX,
            mode=0o600,
            max_messages=max_messages,
            max_message_size=max_message_size,
        )
        self.records: list[Record] = []
        self.seqs: list[int] = []
        self.failures: list[WireError] = []
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            try:
                message, _prio = self.queue.receive(0.05)
            except posix_ipc.BusyError:
                continue
            try:
                decoded = decode_message(message)
            except WireError as exc:  # every message must decode: tests assert on this
                with self._lock:
                    self.failures.append(exc)
                continue
            with self._lock:
                self.seqs.append(decoded.seq)
                self.records.extend(decoded.records)

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def events(self) -> list[EventRecord]:
        return [r for r in self.snapshot() if isinstance(r, EventRecord)]

    def paths(self, *names: str) -> set[tuple[bytes, str]]:
        """(path, event name) pairs seen so far, optionally only for the given names."""
        return {
            (e.path, n.value)
            for e in self.events()
            for n in e.names
            if not names or n.value in names
        }

    def of(self, watch: int) -> list[Record]:
        """Records about one watch (those that carry a watch number)."""
        return [r for r in self.snapshot() if getattr(r, "watch", None) == watch]

    def wait_for(self, predicate: Callable[[list[Record]], bool], timeout: float = 30.0) -> None:
        wait_until(lambda: predicate(self.snapshot()), timeout, "queue records")

    def wait_kind(self, kind: type, timeout: float = 30.0) -> Any:
        self.wait_for(lambda rs: any(isinstance(r, kind) for r in rs), timeout)
        return next(r for r in self.snapshot() if isinstance(r, kind))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.queue.close()
        self.queue.unlink()


class EngineProcess:
    """One engine (`python -m services.fimnotify`); watches are added over its stdin."""

    def __init__(
        self,
        config: EngineConfig,
        prefix: Sequence[str] = (),
        command: Sequence[str] = (sys.executable, "-m", "services.fimnotify"),
    ) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [*prefix, *command, *config.argv()],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=python_env(),
        )
        #: The engine's diagnostics, read on a thread so a chatty engine never blocks.
        self.stderr = bytearray()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Control | bytes) -> None:
        assert self.proc.stdin is not None
        line = message if isinstance(message, bytes) else control.encode(message)
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def add(self, watch: int, pid: int, *subjects: SubjectConfig) -> None:
        self.send(AddWatch(watch, pid, f"test-{watch}", tuple(subjects)))

    def remove(self, watch: int) -> None:
        self.send(RemoveWatch(watch))

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr_thread.join(5)
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def watched_inodes(self) -> list[tuple[int, int]]:
        """(inode, device) of every inotify watch the process holds, from fdinfo."""
        return [(ino, dev) for _wd, ino, dev in self.kernel_watches()]

    def kernel_watches(self) -> list[tuple[int, int, int]]:
        """(descriptor, inode, device) of every inotify watch the process holds."""
        out = []
        fd_dir = f"/proc/{self.pid}/fdinfo"
        for fd in os.listdir(fd_dir):
            try:
                with open(f"{fd_dir}/{fd}") as handle:
                    text = handle.read()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                if line.startswith("inotify wd:"):
                    fields = dict(f.split(":", 1) for f in line.split()[1:])
                    dev = int(fields["sdev"], 16)
                    device = os.makedev(dev >> 20, dev & 0xFFFFF)
                    out.append((int(fields["wd"], 16), int(fields["ino"], 16), device))
        return out


def engine_config(queue: QueueReader, **extra: Any) -> EngineConfig:
    return EngineConfig(queue.name, **extra)


def subject(*paths: str, events: tuple[str, ...] = ("all",), **kw: Any) -> SubjectConfig:
    return SubjectConfig(paths=paths, events=tuple(EventName(e) for e in events), **kw)


def inotify_instances(pid: int) -> int:
    """How many inotify instances process `pid` holds (its anon_inode:inotify descriptors)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                count += 1
        except FileNotFoundError:
            continue
    return count
