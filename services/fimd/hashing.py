"""The bounded pool that reads file attributes and hashes off fimd's I/O thread.

fimd's I/O loop (which reads the engines' queues) never reads a watched file itself: it
submits a `Job` and goes on. At most `backlog` jobs wait or run at a time; `submit` refuses
one more (returns False) instead of blocking, and the daemon writes that event's line with
`hashSkipped` and counts it (metric and an operational line), so nothing is dropped
silently and a container writing faster than fimd can hash cannot stall event delivery.
Workers are threads: hashing and reading release the GIL. A job for a file that already
has a job waiting (not started) joins it: one read serves both events, since both happened
before it (a file rewritten in a burst is read once per turn, not once per write, so a
flood of writes to few files cannot fill the backlog with reads of the same file).

A job may carry a `lookup` of the file's stored state (the daemon sets one for the first
event of a path of a baseline subject: an indexed point read of the node's baseline
database, `baseline_store.Reader`). The worker runs it before reading the file, so the
I/O thread never touches SQLite; its result is the job's `stored`, and also serves as the
known state (an unchanged file is not read again) when the job has none.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import attrs

from libs.rootfs.reader import DEFAULT_MAX_HASH_BYTES, FileState, NotRegular, read_state

DEFAULT_WORKERS = 2
DEFAULT_BACKLOG = 10_000


@attrs.define(eq=False)
class Job:
    """Read the file at `path` inside the root descriptor `root` (kept open by the caller
    until the job is done)."""

    root: int
    path: bytes
    hash_content: bool
    known: FileState | None = None
    #: Reads the file's stored state (run by the worker before the file is read).
    lookup: Callable[[], FileState | None] | None = None
    stored: FileState | None = None
    result: FileState | NotRegular | None = None
    done: threading.Event = attrs.field(factory=threading.Event)
    #: Jobs for the same file submitted while this one waited: they get its result.
    followers: list[Job] = attrs.field(factory=list)


class HashPool:
    """`workers` threads (started at the first job) over a queue of at most `backlog`."""

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        backlog: int = DEFAULT_BACKLOG,
        max_bytes: int = DEFAULT_MAX_HASH_BYTES,
    ) -> None:
        if workers < 1 or backlog < 1 or max_bytes < 0:
            raise ValueError("workers and backlog must be at least 1, max_bytes at least 0")
        self.max_bytes = max_bytes
        self.backlog_limit = backlog
        self._workers = workers
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._in_flight = 0  # queued or running, followers included
        self._waiting: dict[tuple[int, bytes, bool], Job] = {}  # queued, not started

    @property
    def backlog(self) -> int:
        """Jobs waiting or running now."""
        return self._in_flight

    def submit(self, job: Job) -> bool:
        """Queues `job`; False (and nothing queued) when the backlog is full."""
        key = (job.root, job.path, job.hash_content)
        with self._lock:
            if self._in_flight >= self.backlog_limit:
                return False
            self._in_flight += 1
            leader = self._waiting.get(key)
            if leader is not None:
                leader.followers.append(job)
                return True
            self._waiting[key] = job
            if not self._threads:
                self._start()
        self._jobs.put(job)
        return True

    def _start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"fimd-hash-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                del self._waiting[(job.root, job.path, job.hash_content)]
            try:
                for each in (job, *job.followers):  # no follower joins any more
                    each.stored = each.lookup() if each.lookup is not None else None
                job.result = read_state(
                    job.root,
                    job.path,
                    hash_content=job.hash_content,
                    max_bytes=self.max_bytes,
                    known=job.known or job.stored,
                )
            except Exception as err:  # one bad file never kills a worker
                job.result = NotRegular(f"error: {err}"[:256])
            finally:
                with self._lock:  # no follower joins once it is out of _waiting
                    self._in_flight -= 1 + len(job.followers)
                for follower in job.followers:
                    follower.result = job.result
                    follower.done.set()
                job.done.set()

    def stop(self) -> None:
        """Lets the queued jobs finish, then ends the workers."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
