"""An engine holds many watches: one inotify instance and one queue for many containers.

Real inotify on real namespaced processes and real message queues, like test_integration
(needs root). Each test stops every process it starts by PID; nothing stays mounted.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from libs.fimnotify_api.control import AddWatch
from libs.fimnotify_api.identity import ProcessIdentity, start_time
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import (
    MAX_ERROR_MESSAGE,
    MAX_ERROR_PATH,
    MAX_EVENT_PATH,
    ErrorRecord,
    EventRecord,
    ExitReason,
    ExitRecord,
    ExitStatus,
    GoneReason,
    GoneRecord,
    OverflowRecord,
    Packer,
    ReadyRecord,
    Record,
)
from services.fimnotify.engine import EXIT_DRAIN_S
from services.fimnotify.tests.harness import (
    Container,
    EngineProcess,
    QueueReader,
    engine_config,
    inotify_instances,
    subject,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mount namespaces")


class Rig:
    """Containers, fimd's queue and one engine; `close` stops them all by PID."""

    def __init__(self) -> None:
        self.containers: list[Container] = []
        self.queue = QueueReader()
        self.engine: EngineProcess | None = None

    def container(self, setup: str = "") -> Container:
        ct = Container()
        self.containers.append(ct)
        if setup:
            ct.run(setup)
        return ct

    def start(self, **extra: Any) -> EngineProcess:
        self.engine = EngineProcess(engine_config(self.queue, **extra))
        return self.engine

    @property
    def fim(self) -> EngineProcess:
        assert self.engine is not None
        return self.engine

    def readies(self, watch: int, rescan: bool = False) -> list[ReadyRecord]:
        return [
            r
            for r in self.queue.snapshot()
            if isinstance(r, ReadyRecord) and r.watch == watch and r.rescan is rescan
        ]

    def add(self, watch: int, ct: Container, *subjects: SubjectConfig) -> ReadyRecord:
        """Adds a watch and waits for its (next) READY."""
        before = len(self.readies(watch))
        self.fim.add(watch, ct.pid, *subjects)
        wait_until(lambda: len(self.readies(watch)) > before, 30, f"READY of watch {watch}")
        return self.readies(watch)[before]

    def gone(self, watch: int) -> GoneRecord:
        def find() -> GoneRecord | None:
            return next(
                (
                    r
                    for r in self.queue.snapshot()
                    if isinstance(r, GoneRecord) and r.watch == watch
                ),
                None,
            )

        wait_until(lambda: find() is not None, 30, f"GONE of watch {watch}")
        found = find()
        assert found is not None
        return found

    def events(self, watch: int) -> list[EventRecord]:
        return [e for e in self.queue.events() if e.watch == watch]

    def errors(self, watch: int) -> list[ErrorRecord]:
        return [r for r in self.queue.of(watch) if isinstance(r, ErrorRecord)]

    def saw(self, watch: int, path: bytes | str, name: str = "create") -> None:
        raw = path.encode() if isinstance(path, str) else path
        wait_until(
            lambda: any(e.path == raw and name in e.names for e in self.events(watch)),
            30,
            f"{name} {raw!r} for watch {watch}",
        )

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            try:
                self.queue.close()
            finally:
                for ct in self.containers:
                    ct.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    setup = Rig()
    try:
        yield setup
    finally:
        setup.close()


def inode(ct: Container, path: str) -> tuple[int, int]:
    st = os.stat(ct.host_root + path)
    return st.st_ino, st.st_dev


def after(records: list[Record], record: Record) -> list[Record]:
    """The records that arrived after `record`."""
    return records[records.index(record) + 1 :]


def creates(rig: Rig, watch: int) -> collections.Counter[tuple[bytes, int]]:
    return collections.Counter(
        (e.path, e.subject) for e in rig.events(watch) if "create" in e.names
    )


# --- many watches -------------------------------------------------------------------------


def test_many_watches_in_one_engine_route_every_event_to_its_watches(rig: Rig) -> None:
    cts = [rig.container("os.makedirs('/a/s'); os.makedirs('/b')") for _ in range(3)]
    rig.start()
    for i, ct in enumerate(cts):
        rig.add(10 * i + 1, ct, subject("/a", events=("create",)))
        rig.add(
            10 * i + 2,
            ct,
            subject("/b", events=("create",)),
            subject("/a/s", events=("create",)),
        )
    assert inotify_instances(rig.fim.pid) == 1
    watched = rig.fim.watched_inodes()
    assert len(watched) == len(set(watched)) == 9  # /a, /a/s, /b in each container
    for i, ct in enumerate(cts):
        ct.run(f"for p in ('/a/f{i}', '/b/g{i}', '/a/s/h{i}'): open(p, 'w').close()")
    for ct in cts:  # in the one inotify queue, these come after everything above
        ct.run("open('/a/end', 'w').close(); open('/b/end', 'w').close()")
    for i in range(3):
        rig.saw(10 * i + 1, "/a/end")
        rig.saw(10 * i + 2, "/b/end")
    for i in range(3):
        assert creates(rig, 10 * i + 1) == {(b"/a/f%d" % i, 0): 1, (b"/a/end", 0): 1}
        assert creates(rig, 10 * i + 2) == {
            (b"/b/g%d" % i, 0): 1,
            (b"/a/s/h%d" % i, 1): 1,
            (b"/b/end", 0): 1,
        }
    assert {e.watch for e in rig.queue.events()} == {1, 2, 11, 12, 21, 22}
    assert inotify_instances(rig.fim.pid) == 1
    assert rig.queue.failures == []


def test_two_watches_on_one_path_share_one_kernel_watch(rig: Rig) -> None:
    ct = rig.container("os.makedirs('/data')")
    rig.start()
    rig.add(1, ct, subject("/data", events=("create",)))
    rig.add(2, ct, subject("/data", events=("create", "modify")))
    data = inode(ct, "/data")
    (kernel_watch,) = rig.fim.kernel_watches()
    assert kernel_watch[1:] == data
    ct.run("for i in range(20): open('/data/f%d' % i, 'w').write('x')")
    ct.run("open('/data/end', 'w').close()")
    rig.saw(1, "/data/end")
    rig.saw(2, "/data/end")
    names = [b"/data/f%d" % i for i in range(20)] + [b"/data/end"]
    for watch in (1, 2):
        assert creates(rig, watch) == dict.fromkeys(((n, 0) for n in names), 1)
    modified = collections.Counter(e.path for e in rig.events(2) if "modify" in e.names)
    assert modified == dict.fromkeys(names[:-1], 1)
    assert not [e for e in rig.events(1) if "modify" in e.names]  # not asked by watch 1

    rig.fim.remove(1)
    assert rig.gone(1).reason is GoneReason.REMOVED
    ct.run("open('/data/later', 'w').close()")
    rig.saw(2, "/data/later")
    assert not [e for e in rig.events(1) if e.path == b"/data/later"]
    # Watch 2 still holds the very same kernel watch: it was never removed and added again.
    assert rig.fim.kernel_watches() == [kernel_watch]

    rig.fim.remove(2)
    assert rig.gone(2).reason is GoneReason.REMOVED
    assert rig.fim.watched_inodes() == []


CHURN = """
import threading
def churn():
    end = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < end:
        with open('/data/c%d' % (i % 50), 'w') as f:
            f.write('x')
        i += 1
    open('/other/churned', 'w').close()
threading.Thread(target=churn).start()
"""


def test_remove_answers_gone_and_no_record_of_the_watch_follows(rig: Rig) -> None:
    ct = rig.container("os.makedirs('/data'); os.makedirs('/other')")
    rig.start()
    rig.add(1, ct, subject("/data", recursive=True))
    rig.add(2, ct, subject("/other", events=("create",)))
    ct.run(CHURN)
    wait_until(lambda: len(rig.events(1)) > 100, 10, "churn events")
    rig.fim.remove(1)  # while events of watch 1 are in flight
    gone = rig.gone(1)
    assert (gone.reason, gone.message) == (GoneReason.REMOVED, "removed")
    rig.saw(2, "/other/churned")
    ct.run("open('/data/x', 'w').close(); open('/other/end', 'w').close()")
    rig.saw(2, "/other/end")
    records = rig.queue.snapshot()
    assert [r for r in after(records, gone) if getattr(r, "watch", None) == 1] == []
    assert inode(ct, "/data") not in rig.fim.watched_inodes()
    rig.fim.remove(99)  # a watch the engine does not hold is answered too
    assert rig.gone(99).reason is GoneReason.REMOVED
    assert rig.fim.alive()


def test_adding_a_watch_number_again_replaces_the_watch(rig: Rig) -> None:
    ct = rig.container("os.makedirs('/a'); os.makedirs('/b')")
    other = rig.container("os.makedirs('/c')")
    rig.start()
    first = rig.add(1, ct, subject("/a", events=("create",)))
    second = rig.add(1, ct, subject("/b", events=("create",)))
    assert (first.watches, second.watches) == (1, 1)
    assert rig.fim.watched_inodes() == [inode(ct, "/b")]
    ct.run("open('/a/f', 'w').close(); open('/b/g', 'w').close(); open('/b/end', 'w').close()")
    rig.saw(1, "/b/end")
    assert creates(rig, 1) == {(b"/b/g", 0): 1, (b"/b/end", 0): 1}
    # ... also with another container's process.
    rig.add(1, other, subject("/c", events=("create",)))
    assert rig.fim.watched_inodes() == [inode(other, "/c")]
    ct.run("open('/b/h', 'w').close()")
    other.run("open('/c/i', 'w').close()")
    rig.saw(1, "/c/i")
    assert b"/b/h" not in {e.path for e in rig.events(1)}
    assert not [r for r in rig.queue.snapshot() if isinstance(r, GoneRecord)]


# --- per-watch bounds ---------------------------------------------------------------------

CHAIN = "/t/d1/d2/d3/d4"


def test_directory_cap_limits_one_watch_and_not_the_others(rig: Rig) -> None:
    ct = rig.container(
        f"os.makedirs('{CHAIN}')\n"
        f"for c in range(4): os.makedirs('{CHAIN}/c%d/x' % c)\n"
        "os.makedirs('/o/1/2/3/4')\n"
    )
    rig.start(max_dirs=5)
    capped = rig.add(1, ct, subject("/t", events=("create",), recursive=True))
    other = rig.add(2, ct, subject("/o", events=("create",), recursive=True))
    assert (capped.watches, capped.pending, capped.limited) == (5, 0, 4)
    assert (other.watches, other.pending, other.limited) == (5, 0, 0)  # exactly at the cap
    (error,) = rig.errors(1)
    left_out = {f"{CHAIN}/c{c}".encode() for c in range(4)}
    assert (error.code, error.subject) == ("EDIRCAP", 0)
    assert error.path in left_out
    assert "directory cap of 5" in error.message
    assert rig.errors(2) == []
    watched = set(rig.fim.watched_inodes())
    chain = ["/t", "/t/d1", "/t/d1/d2", "/t/d1/d2/d3", CHAIN]
    assert {inode(ct, p) for p in chain} <= watched
    for path in left_out:
        assert inode(ct, path.decode()) not in watched
        assert inode(ct, path.decode() + "/x") not in watched
    assert len(watched) == 10  # 5 + 5: nothing beyond the cap
    ct.run(
        f"open('{CHAIN}/f', 'w').close(); open('{CHAIN}/c0/g', 'w').close()\n"
        "open('/o/1/2/3/4/f', 'w').close()\n"
        "open('/t/end', 'w').close()\n"
    )
    rig.saw(1, "/t/end")
    rig.saw(2, "/o/1/2/3/4/f")
    assert creates(rig, 1) == {(f"{CHAIN}/f".encode(), 0): 1, (b"/t/end", 0): 1}


LEVELS = 20  # 5 + 20 x 256 bytes: the deepest directory's path is 5125 bytes > PATH_MAX


def _dir_name(level: int) -> bytes:
    return bytes([0x80 + level]) + b"\xff" * 254  # 255 bytes, not UTF-8


def _file_name(level: int) -> bytes:
    return b"\xfe" * 199 + bytes([0x80 + level])  # 200 bytes: a file is not a directory


def _hostile_paths(top: bytes) -> set[bytes]:
    """Every directory and file path the hostile tree has (under a top-level name)."""
    out, here = set(), b"/deep"
    for level in range(LEVELS):
        here += b"/" + (top if level == 0 else _dir_name(level))
        out |= {here, here + b"/" + _file_name(level)}
    return out


HOSTILE = f"""
os.chdir('/deep')
for level in range({LEVELS}):
    d = bytes([0x80 + level]) + b'\\xff' * 254
    os.mkdir(d)
    os.chdir(d)
    open(b'\\xfe' * 199 + bytes([0x80 + level]), 'wb').close()
os.chdir('/')
"""


def test_hostile_names_beyond_path_max_cost_bounded_errors_only(rig: Rig) -> None:
    ct = rig.container("os.makedirs('/deep'); os.makedirs('/ok')")
    rig.start()
    rig.add(1, ct, subject("/deep", recursive=True))
    rig.add(2, ct, subject("/ok", events=("create",)))
    ct.run(HOSTILE)
    ct.run("open('/ok/built', 'w').close()")
    rig.saw(2, "/ok/built")  # one inotify queue: the tree's events were handled before
    assert [e for e in rig.errors(1) if e.truncated]
    renamed = b"\x81" + b"\xfd" * 254  # the tree is walked again under a new name, then
    ct.run(  # deleted
        f"os.rename(b'/deep/' + {_dir_name(0)!r}, b'/deep/' + {renamed!r})\n"
        f"shutil.rmtree(b'/deep/' + {renamed!r})\n"
    )
    ct.run("open('/ok/after', 'w').close(); open('/deep/alive', 'w').close()")
    rig.saw(2, "/ok/after")
    rig.saw(1, "/deep/alive")
    assert rig.fim.alive(), rig.fim.stderr.decode(errors="replace")
    assert rig.queue.failures == []  # every message, and so every ERROR record, decoded
    assert not [r for r in rig.queue.snapshot() if isinstance(r, GoneRecord)]

    paths = _hostile_paths(_dir_name(0)) | _hostile_paths(renamed)
    errors = rig.errors(1)
    assert errors
    assert {e.code for e in errors} == {"ENAMETOOLONG"}
    truncated = [e for e in errors if e.truncated]
    assert truncated
    for error in errors:
        assert len(error.path) <= MAX_ERROR_PATH
        assert len(error.message.encode()) <= MAX_ERROR_MESSAGE
        # The first MAX_ERROR_PATH bytes of a real path, with that path's length.
        assert any(p[:MAX_ERROR_PATH] == error.path and len(p) == error.path_size for p in paths), (
            error.path[:40],
            error.path_size,
        )
    assert {e.path_size for e in truncated} <= {len(p) for p in paths if len(p) > MAX_EVENT_PATH}
    assert rig.errors(2) == []
    events = rig.events(1)
    assert all(len(e.path) <= MAX_EVENT_PATH for e in events)
    assert b"/deep/" + _dir_name(0) in {e.path for e in events if "create" in e.names}
    assert max(len(e.path) for e in events) > 3800  # reported as deep as PATH_MAX allows


# --- containers and the kernel ----------------------------------------------------------


def test_a_container_exit_ends_only_its_watches(rig: Rig) -> None:
    dying = rig.container("os.makedirs('/data')")
    staying = rig.container("os.makedirs('/data')")
    rig.start()
    rig.add(1, dying, subject("/data"))
    rig.add(2, dying, subject("/data", events=("create",)))
    rig.add(3, staying, subject("/data", events=("create",)))
    dying.proc.kill()
    dying.proc.wait(10)
    for watch in (1, 2):
        gone = rig.gone(watch)
        assert gone.reason is GoneReason.TARGET_GONE
        assert str(dying.pid) in gone.message
    staying.run("open('/data/f', 'w').close()")
    rig.saw(3, "/data/f")
    assert rig.fim.alive()
    assert not [r for r in rig.queue.snapshot() if isinstance(r, GoneRecord) and r.watch == 3]
    assert rig.fim.watched_inodes() == [inode(staying, "/data")]


def test_overflow_is_reported_once_then_every_watch_rescans(rig: Rig) -> None:
    a = rig.container("os.makedirs('/data')")
    b = rig.container("os.makedirs('/data')")
    rig.start()
    rig.add(1, a, subject("/data", events=("create",)))
    rig.add(2, a, subject("/data"))
    rig.add(3, b, subject("/data", events=("create",)))
    with open("/proc/sys/fs/inotify/max_queued_events") as handle:
        limit = int(handle.read())
    os.kill(rig.fim.pid, signal.SIGSTOP)
    try:  # each file is CREATE, OPEN, CLOSE_WRITE: well over the kernel queue
        a.run(f"for i in range({limit // 2}): open('/data/f%d' % i, 'w').close()")
    finally:
        os.kill(rig.fim.pid, signal.SIGCONT)
    wait_until(
        lambda: all(rig.readies(w, rescan=True) for w in (1, 2, 3)), 30, "every watch rescanned"
    )
    a.run("open('/data/after', 'w').close()")
    b.run("open('/data/after', 'w').close()")
    for watch in (1, 2, 3):
        rig.saw(watch, "/data/after")
    records = rig.queue.snapshot()
    overflows = [r for r in records if isinstance(r, OverflowRecord)]
    assert len(overflows) == 1
    for watch in (1, 2, 3):
        (rescan,) = rig.readies(watch, rescan=True)
        assert rescan in after(records, overflows[0])
        assert (rescan.watches, rescan.pending) == (1, 0)
    assert rig.queue.failures == []


def test_end_of_stdin_stops_the_engine_cleanly(rig: Rig) -> None:
    ct = rig.container("os.makedirs('/data')")
    rig.start()
    rig.add(1, ct, subject("/data"))
    rig.fim.close_stdin()
    assert rig.fim.proc.wait(10) == ExitStatus.OK
    exit_record = rig.queue.wait_kind(ExitRecord, timeout=10)
    assert (exit_record.reason, exit_record.status) == (ExitReason.STOPPED, ExitStatus.OK)
    assert "control channel closed" in exit_record.message
    assert rig.queue.snapshot()[-1] == exit_record


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return start_time(handle.read())


def _cgroup_leaves(pid: int) -> tuple[str, ...]:
    """The last component of each of the process's cgroup paths (stands in for a container's
    cgroup leaf names)."""
    with open(f"/proc/{pid}/cgroup") as handle:
        return tuple({line.rsplit("/", 1)[-1] for line in handle.read().splitlines()} - {""})


def test_a_reused_pid_is_never_watched(rig: Rig) -> None:
    """fimd sends the resolved process's start time and cgroup leaves with the PID; a process
    that is not that one (a reused PID, or one that left the container's cgroup) is refused
    with GONE TARGET_MISMATCH, the right one is watched."""
    ct = rig.container("os.makedirs('/data')")
    rig.start()
    real = ProcessIdentity(_start_time(ct.pid), _cgroup_leaves(ct.pid))
    rig.fim.send(
        AddWatch(
            1,
            ct.pid,
            "stale",
            (subject("/data"),),
            attrs.evolve(real, start_time=real.start_time + 1),
        )
    )
    gone = rig.gone(1)
    assert gone.reason is GoneReason.TARGET_MISMATCH
    assert "start time" in gone.message
    rig.fim.send(
        AddWatch(
            2,
            ct.pid,
            "moved",
            (subject("/data"),),
            attrs.evolve(real, cgroup_leaves=("no-such-container",)),
        )
    )
    gone = rig.gone(2)
    assert gone.reason is GoneReason.TARGET_MISMATCH
    assert "cgroup" in gone.message
    assert rig.fim.watched_inodes() == []
    rig.fim.send(AddWatch(3, ct.pid, "right", (subject("/data", events=("create",)),), real))
    wait_until(lambda: bool(rig.readies(3)), 30, "READY of the right process")
    ct.run("open('/data/f', 'w').close()")
    rig.saw(3, "/data/f")
    assert rig.fim.alive()


def test_overflow_during_the_initial_walk_is_reported_and_rescanned(rig: Rig) -> None:
    """The kernel queue overflows while the engine still walks a new recursive watch: the
    overflow is reported once and the watch is walked again, so nothing stays unwatched."""
    ct = rig.container("for i in range(3000): os.makedirs('/data/d%d/e' % i)")
    rig.start()
    with open("/proc/sys/fs/inotify/max_queued_events") as handle:
        limit = int(handle.read())
    rig.fim.add(1, ct.pid, subject("/data", events=("create",), recursive=True))
    # The walk has started (some directories are watched, far from all 6,001): freeze it.
    wait_until(lambda: len(rig.fim.kernel_watches()) >= 2, 30, "the walk under way")
    os.kill(rig.fim.pid, signal.SIGSTOP)
    try:
        walked = len(rig.fim.kernel_watches())
        # More CREATEs (the only event asked for) than the kernel queue holds.
        ct.run(f"for i in range({limit + 1000}): open('/data/f%d' % i, 'w').close()")
    finally:
        os.kill(rig.fim.pid, signal.SIGCONT)
    assert walked < 6001
    wait_until(lambda: bool(rig.readies(1, rescan=True)), 60, "the rescan after the overflow")
    records = rig.queue.snapshot()
    overflows = [r for r in records if isinstance(r, OverflowRecord)]
    assert len(overflows) == 1
    (rescan,) = rig.readies(1, rescan=True)
    assert rescan in after(records, overflows[0])
    assert rescan.watches == 6001  # /data, every d and e
    ct.run("open('/data/d2999/e/late', 'w').close()")
    rig.saw(1, "/data/d2999/e/late")
    assert rig.queue.failures == []


def test_exit_record_that_cannot_be_delivered_is_reported_on_stderr() -> None:
    queue = QueueReader(max_messages=1)
    queue.paused.set()  # fimd stopped reading; its queue is full
    time.sleep(0.2)  # a receive under way when it paused has ended
    (filler,) = Packer(queue.queue.max_message_size).pack([OverflowRecord(1)])
    queue.queue.send(filler)
    assert queue.queue.current_messages == 1
    engine = EngineProcess(engine_config(queue))
    try:
        engine.close_stdin()
        started = time.monotonic()
        assert engine.proc.wait(30) == ExitStatus.OK
        took = time.monotonic() - started
    finally:
        engine.close()
        queue.paused.clear()
    try:
        assert b"exit record not delivered" in engine.stderr, engine.stderr
        assert took >= EXIT_DRAIN_S  # it waited for room that long, not forever
        queue.wait_for(lambda records: len(records) == 1)
        time.sleep(0.2)
        assert queue.snapshot() == [OverflowRecord(1)]  # no EXIT record
    finally:
        queue.close()


# The real engine with one method replaced by a fault: the first control line raises.
_FAULTY_ENGINE = """
import sys
from services.fimnotify import __main__, engine

def fault(self):
    raise RuntimeError("injected fault")

engine.Engine._read_control = fault
sys.exit(__main__.main(sys.argv[1:]))
"""


def test_an_unexpected_error_is_a_fatal_exit_with_its_record() -> None:
    queue = QueueReader()
    engine = EngineProcess(engine_config(queue), command=(sys.executable, "-c", _FAULTY_ENGINE))
    try:
        engine.send(b"{}\n")
        assert engine.proc.wait(30) == ExitStatus.FATAL
        record = queue.wait_kind(ExitRecord, timeout=10)
        assert (record.reason, record.status) == (ExitReason.FATAL, ExitStatus.FATAL)
        assert "RuntimeError('injected fault')" in record.message
        assert queue.snapshot()[-1] == record
    finally:
        engine.close()
        queue.close()
    assert b"fatal: RuntimeError('injected fault')" in engine.stderr
    assert b"Traceback" not in engine.stderr
