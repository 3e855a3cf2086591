"""fimnotify end to end: real inotify on real namespaced processes, real message queues.

Needs root (mount namespaces). Each test starts a container agent (own mount namespace,
private tmpfs root), fimd's queue and a fimnotify process, and stops all of them by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import (
    ENGINE,
    DroppedRecord,
    ErrorRecord,
    EventRecord,
    ExitReason,
    ExitRecord,
    ExitStatus,
    GoneReason,
    GoneRecord,
    OverflowRecord,
    ReadyRecord,
)
from services.fimnotify.tests.harness import (
    Container,
    EngineProcess,
    QueueReader,
    engine_config,
    python_env,
    subject,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mount namespaces")


class Setup:
    """A container, a queue and (after `start`) a fimnotify watching the container."""

    WATCH = 1

    def __init__(self) -> None:
        self.container = Container()
        self.queue = QueueReader()
        self.fim: EngineProcess | None = None

    def start(
        self, *subjects: SubjectConfig, prefix: Sequence[str] = (), **extra: Any
    ) -> ReadyRecord:
        """Starts an engine (`extra`: EngineConfig fields; `prefix`: e.g. nsenter) holding
        one watch of `subjects`."""
        self.fim = EngineProcess(engine_config(self.queue, **extra), prefix=prefix)
        self.fim.add(self.WATCH, self.container.pid, *subjects)
        ready: ReadyRecord = self.queue.wait_kind(ReadyRecord)
        return ready

    def gone(self, watch: int, timeout: float = 30.0) -> GoneRecord:
        """Waits for the GONE record of `watch`."""

        def found(records: list[Any]) -> bool:
            return any(isinstance(r, GoneRecord) and r.watch == watch for r in records)

        self.queue.wait_for(found, timeout)
        return next(
            r for r in self.queue.snapshot() if isinstance(r, GoneRecord) and r.watch == watch
        )

    def run(self, code: str) -> None:
        self.container.run(code)

    def saw(self, path: str, name: str, timeout: float = 30.0) -> None:
        key = (path.encode(), name)
        wait_until(lambda: key in self.queue.paths(), timeout, f"{name} {path}")

    def close(self) -> None:
        try:
            if self.fim is not None:
                self.fim.close()
        finally:
            try:
                self.queue.close()
            finally:
                self.container.close()


@pytest.fixture
def env() -> Iterator[Setup]:
    setup = Setup()
    try:
        yield setup
    finally:
        setup.close()


def barrier(env: Setup, marker: str = "/data/.barrier") -> None:
    """Creates a marker file and waits for it: everything before it has been read."""
    env.run(f"open({marker!r}, 'w').close()")
    env.saw(marker, "create")


# --- event kinds -----------------------------------------------------------------------


def test_every_event_kind_in_a_directory(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data", tags={"team": "t"}))
    env.run(
        "f = open('/data/a', 'w'); f.write('x'); f.close()\n"
        "open('/data/a').read()\n"
        "os.chmod('/data/a', 0o600)\n"
        "os.rename('/data/a', '/data/b')\n"
        "os.unlink('/data/b')\n"
    )
    for path, name in [
        ("/data/a", "create"),
        ("/data/a", "open"),
        ("/data/a", "modify"),
        ("/data/a", "closewrite"),
        ("/data/a", "access"),
        ("/data/a", "closenowrite"),
        ("/data/a", "attrib"),
        ("/data/a", "movedfrom"),
        ("/data/b", "movedto"),
        ("/data/b", "delete"),
    ]:
        env.saw(path, name)
    moved = [e for e in env.queue.events() if e.names == (EventName.MOVEDFROM,)]
    assert moved[0].subject == 0
    assert not any(e.is_dir for e in env.queue.events() if e.path == b"/data/a")


def test_self_events_of_the_configured_directory(env: Setup) -> None:
    env.run("os.makedirs('/data/d'); os.makedirs('/other')")
    env.start(subject("/data/d", events=("deleteself", "moveself")))
    env.run("os.rename('/data/d', '/other/d')")
    env.saw("/data/d", "moveself")
    env.run("os.makedirs('/data/d')")  # the path is armed again
    wait_until(lambda: watching(env, "/data/d"), what="/data/d watched again")
    env.run("os.rmdir('/data/d')")
    env.saw("/data/d", "deleteself")


def watching(env: Setup, path: str) -> bool:
    """Whether fimnotify holds a watch on the inode at `path` inside the container."""
    assert env.fim is not None
    st = os.stat(env.container.host_root + path)
    return (st.st_ino, st.st_dev) in env.fim.watched_inodes()


def test_aggregate_names_close_and_move(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data", events=("close", "move")))
    env.run(
        "open('/data/a', 'w').close(); open('/data/a').close()\n"
        "os.rename('/data/a', '/data/b')\n"
        "os.unlink('/data/b')\n"
    )
    env.saw("/data/b", "movedto")
    names = {n.value for e in env.queue.events() for n in e.names}
    assert names == {"closewrite", "closenowrite", "movedfrom", "movedto"}


# --- recursion -------------------------------------------------------------------------


def test_recursive_catches_fast_nested_creation(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data", events=("create", "modify"), recursive=True))
    env.run(
        "os.makedirs('/data/a/b/c/d/e')\n"
        "for p in ('/data/a/f1', '/data/a/b/c/f2', '/data/a/b/c/d/e/f3'):\n"
        "    open(p, 'w').write('x')\n"
    )
    for path in [
        "/data/a",
        "/data/a/b",
        "/data/a/b/c",
        "/data/a/b/c/d",
        "/data/a/b/c/d/e",
        "/data/a/f1",
        "/data/a/b/c/f2",
        "/data/a/b/c/d/e/f3",
    ]:
        env.saw(path, "create")
    env.run("open('/data/a/b/c/d/e/f3', 'a').write('more')")
    env.saw("/data/a/b/c/d/e/f3", "modify")
    dirs = {e.path for e in env.queue.events() if e.is_dir}
    assert b"/data/a/b/c/d/e" in dirs


def test_max_depth(env: Setup) -> None:
    env.run("os.makedirs('/data/a/b/c')")
    ready = env.start(subject("/data", events=("create",), recursive=True, max_depth=1))
    assert ready.watches == 2  # /data (depth 0) and /data/a (depth 1)
    env.run(
        "open('/data/a/b/c/deep', 'w').close()\n"
        "open('/data/a/b/f2', 'w').close()\n"
        "open('/data/a/f1', 'w').close()\n"
        "os.makedirs('/data/n/m')\n"
        "open('/data/n/m/f3', 'w').close()\n"
    )
    env.saw("/data/a/f1", "create")
    env.saw("/data/n/m", "create")
    barrier(env)
    paths = {e.path for e in env.queue.events()}
    assert b"/data/a/b/f2" not in paths
    assert b"/data/a/b/c/deep" not in paths
    assert b"/data/n/m/f3" not in paths


def test_ignore_costs_no_watch_and_drops_events(env: Setup) -> None:
    env.run("os.makedirs('/data/.git/objects/aa'); os.makedirs('/data/src')")
    ready = env.start(subject("/data", recursive=True, ignore=(".git", "*.swp")))
    assert ready.watches == 2  # /data and /data/src
    env.run(
        "open('/data/.git/objects/aa/x', 'w').close()\n"
        "open('/data/.git/HEAD', 'w').close()\n"
        "open('/data/src/.main.py.swp', 'w').close()\n"
        "open('/data/src/main.py', 'w').close()\n"
    )
    env.saw("/data/src/main.py", "closewrite")
    barrier(env)
    paths = {e.path for e in env.queue.events()}
    assert not [p for p in paths if b".git" in p or p.endswith(b".swp")]


def test_only_dir(env: Setup) -> None:
    env.run("os.makedirs('/data'); open('/file', 'w').close()")
    ready = env.start(subject("/file", only_dir=True), subject("/data", only_dir=True))
    error = env.queue.wait_kind(ErrorRecord)
    assert (error.code, error.path, error.subject) == ("ENOTDIR", b"/file", 0)
    assert ready.watches == 2  # /data, and / waiting for /file to become a directory
    env.run("open('/file', 'a').write('x'); open('/data/x', 'w').close()")
    env.saw("/data/x", "create")
    barrier(env)
    assert not [e for e in env.queue.events() if e.path == b"/file"]


def test_follow_move_keeps_watching_renamed_directories(env: Setup) -> None:
    env.run("os.makedirs('/srv/data/sub')")
    env.start(subject("/srv/data", events=("create",), recursive=True, follow_move=True))
    env.run("os.rename('/srv/data/sub', '/srv/data/sub2')")
    env.run("open('/srv/data/sub2/f', 'w').close()")
    env.saw("/srv/data/sub2/f", "create")
    env.run("os.rename('/srv/data', '/srv/data.old')")
    env.run("open('/srv/data.old/sub2/g', 'w').close()")
    env.saw("/srv/data.old/sub2/g", "create")


def test_without_follow_move_the_path_is_watched_not_the_directory(env: Setup) -> None:
    env.run("os.makedirs('/srv/data')")
    env.start(subject("/srv/data", events=("create",)))
    env.run("os.rename('/srv/data', '/srv/data.old')")
    wait_until(lambda: not watching(env, "/srv/data.old"), what="renamed directory dropped")
    env.run("open('/srv/data.old/f', 'w').close()")
    env.run("os.makedirs('/srv/data')")
    env.saw("/srv/data", "create")
    env.run("open('/srv/data/g', 'w').close()")
    env.saw("/srv/data/g", "create")
    assert not [e for e in env.queue.events() if e.path.endswith(b"/f")]


# --- files, replacement, late paths ----------------------------------------------------


def test_atomic_replace_of_a_watched_file(env: Setup) -> None:
    env.run("os.makedirs('/etc/app'); open('/etc/app/app.conf', 'w').write('v1')")
    env.start(subject("/etc/app/app.conf", events=("modify", "movedto", "closewrite")))
    env.run(
        "open('/etc/app/.app.conf.tmp', 'w').write('v2')\n"
        "os.rename('/etc/app/.app.conf.tmp', '/etc/app/app.conf')\n"
    )
    env.saw("/etc/app/app.conf", "movedto")
    env.run("open('/etc/app/app.conf', 'a').write('v3')")
    env.saw("/etc/app/app.conf", "modify")
    assert not [e for e in env.queue.events() if b"tmp" in e.path]


CONFIGMAP = """
def publish(version, value):
    d = '/cfg/..' + version
    os.makedirs(d)
    open(d + '/key', 'w').write(value)
    os.symlink('..' + version, '/cfg/..data_tmp')
    os.rename('/cfg/..data_tmp', '/cfg/..data')
"""


def test_configmap_data_swap(env: Setup) -> None:
    env.run(
        "os.makedirs('/cfg')\n"
        + CONFIGMAP
        + "publish('2024_1', 'v1')\nos.symlink('..data/key', '/cfg/key')\n"
    )
    env.start(subject("/cfg/key", events=("create", "modify")))
    env.run(CONFIGMAP + "publish('2024_2', 'v2')\nshutil.rmtree('/cfg/..2024_1')\n")
    wait_until(
        lambda: any(e.path == b"/cfg/key" and e.synthetic for e in env.queue.events()),
        what="synthetic CREATE of /cfg/key after the swap",
    )
    env.run("open('/cfg/..2024_2/key', 'a').write('edit')")
    env.saw("/cfg/key", "modify")


def test_path_created_after_start(env: Setup) -> None:
    ready = env.start(subject("/data/later/x", events=("create",), recursive=True))
    assert ready.pending == 1
    env.run("os.makedirs('/data/later/x/y'); open('/data/later/x/y/f', 'w').close()")
    env.saw("/data/later/x", "create")
    env.saw("/data/later/x/y/f", "create")


# --- never a host path -----------------------------------------------------------------


@pytest.fixture
def host_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fimk8s-host-")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_symlink_escapes_stay_inside_the_container(env: Setup, host_dir: str) -> None:
    """Configured paths are normalized (no '..'), so escapes come through symlinks: absolute
    targets, relative targets climbing above the root, '..' inside absolute targets, chains.
    Each resolves inside the container's root; no host inode is ever watched or reported."""
    os.makedirs(f"{host_dir}/etc")
    climb = "../" * 8
    env.run(
        "os.makedirs('/data'); os.makedirs('/etc')\n"
        "os.symlink('/etc', '/data/abs')\n"
        f"os.symlink('{climb}..{host_dir}', '/data/rel')\n"
        f"os.symlink('{climb}..', '/data/dotdot')\n"
        f"os.symlink('/data/../../../..{host_dir}/etc', '/data/mid')\n"
        "os.symlink('rel', '/data/hop')\n"
    )
    ready = env.start(
        subject("/data/abs", tags={"case": "absolute"}),
        subject("/data/rel", tags={"case": "relative"}),
        subject(f"/data/dotdot{host_dir}/etc", tags={"case": "dotdot"}),
        subject("/data/mid", tags={"case": "dotdot inside an absolute target"}),
        subject("/data/hop/etc", tags={"case": "chain"}),
    )
    assert ready.pending == 4  # host_dir exists on the host only: all but /data/abs wait
    assert env.fim is not None
    container_dev = os.stat(f"{env.container.host_root}/data").st_dev
    assert container_dev != os.stat(host_dir).st_dev

    def only_container_inodes() -> None:
        assert env.fim is not None
        watched = env.fim.watched_inodes()
        assert watched
        assert {dev for _ino, dev in watched} == {container_dev}, "a host inode is watched"

    only_container_inodes()
    # Host-side activity must never be reported.
    for name in ("a", "etc/b"):
        with open(f"{host_dir}/{name}", "w") as handle:
            handle.write("host")
    with open(f"{host_dir}/etc/b") as handle:
        handle.read()
    # Container-side activity at the same (in-root) places is reported.
    env.run("open('/etc/c', 'w').close()")
    env.saw("/data/abs/c", "create")
    env.run(f"os.makedirs('{host_dir}/etc')")
    env.saw(f"/data/dotdot{host_dir}/etc", "create")
    env.saw("/data/rel/etc", "create")
    env.run(f"open('{host_dir}/etc/d', 'w').close()")
    env.saw(f"/data/dotdot{host_dir}/etc/d", "create")
    env.saw("/data/mid/d", "create")
    env.saw("/data/hop/etc/d", "create")
    only_container_inodes()
    paths = {e.path for e in env.queue.events()}
    assert [p for p in paths if p.endswith((b"/a", b"/b"))] == []
    prefixes = (b"/data/abs", b"/data/rel", b"/data/dotdot", b"/data/mid", b"/data/hop")
    assert all(p.startswith(prefixes) for p in paths), paths
    assert env.fim.alive()


# --- nothing lost silently -------------------------------------------------------------


def test_overflow_is_reported_then_rescanned(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data", events=("create",)))
    assert env.fim is not None
    with open("/proc/sys/fs/inotify/max_queued_events") as handle:
        limit = int(handle.read())
    os.kill(env.fim.pid, signal.SIGSTOP)
    try:
        env.run(f"for i in range({limit + 1000}): open('/data/f%d' % i, 'w').close()")
    finally:
        os.kill(env.fim.pid, signal.SIGCONT)
    env.queue.wait_kind(OverflowRecord, timeout=30)
    env.queue.wait_for(
        lambda rs: any(isinstance(r, ReadyRecord) and r.rescan for r in rs), timeout=30
    )
    env.run("open('/data/after', 'w').close()")
    env.saw("/data/after", "create")
    creates = [e for e in env.queue.events() if e.path.startswith(b"/data/f")]
    assert len(creates) <= limit


def test_full_queue_drops_are_counted_exactly(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data", events=("create",)), buffer_bytes=65536)
    env.queue.paused.set()
    # ~34-byte records: 10 queue messages (~2400) plus 64 KiB of buffer (~1900) hold far
    # fewer than `total`; the rest is dropped and counted.
    total = 8000
    try:
        env.run(f"for i in range({total}): open('/data/f%d' % i, 'w').close()")
        wait_until(lambda: _fim_idle(env), timeout=20, what="fimnotify read")
    finally:
        env.queue.paused.clear()
    env.queue.wait_kind(DroppedRecord, timeout=10)

    def accounted(records: list[Any]) -> bool:
        seen = sum(1 for r in records if isinstance(r, EventRecord))
        dropped = sum(r.count for r in records if isinstance(r, DroppedRecord))
        return seen + dropped == total

    env.queue.wait_for(accounted, timeout=20)
    drops = [r for r in env.queue.snapshot() if isinstance(r, DroppedRecord)]
    assert {r.watch for r in drops} == {Setup.WATCH}
    dropped = sum(r.count for r in drops)
    assert dropped > 0
    seen = {e.path for e in env.queue.events()}
    assert len(seen) == total - dropped  # each record once: none duplicated, none lost
    assert env.queue.seqs == list(range(len(env.queue.seqs)))
    assert env.queue.failures == []


def _fim_idle(env: Setup) -> bool:
    """fimnotify has nothing left to read: its process is sleeping in poll."""
    assert env.fim is not None
    with open(f"/proc/{env.fim.pid}/stat") as handle:
        state = handle.read().rsplit(")", 1)[1].split()[0]
    with open(f"/proc/{env.fim.pid}/wchan") as handle:
        wchan = handle.read()
    return state == "S" and "poll" in wchan


# --- process lifecycle -----------------------------------------------------------------


def test_sigterm_stops_cleanly(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data"))
    assert env.fim is not None
    assert env.fim.stop() == ExitStatus.OK
    record = env.queue.wait_kind(ExitRecord)
    assert record.reason is ExitReason.STOPPED


def test_container_exit_is_reported_with_distinct_status(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.start(subject("/data"))
    assert env.fim is not None
    env.container.proc.kill()
    env.container.proc.wait(10)
    gone = env.gone(Setup.WATCH, timeout=10)
    assert gone.reason is GoneReason.TARGET_GONE
    assert str(env.container.pid) in gone.message
    assert env.fim.alive()  # the engine keeps serving fimd's other watches
    assert env.fim.watched_inodes() == []  # the container's kernel watches are released
    assert not [r for r in env.queue.snapshot() if isinstance(r, ExitRecord)]


def test_missing_target_pid(env: Setup) -> None:
    dead = Container()
    pid = dead.pid
    dead.close()
    env.run("os.makedirs('/data')")
    env.fim = EngineProcess(engine_config(env.queue))
    env.fim.add(5, pid, subject("/data"))
    gone = env.gone(5, timeout=10)
    assert gone.reason is GoneReason.TARGET_GONE
    assert str(pid) in gone.message
    assert not [r for r in env.queue.snapshot() if isinstance(r, ReadyRecord)]
    assert env.fim.alive()
    env.fim.add(Setup.WATCH, env.container.pid, subject("/data", events=("create",)))
    env.queue.wait_kind(ReadyRecord)
    env.run("open('/data/f', 'w').close()")
    env.saw("/data/f", "create")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--queue", "no-slash"],
        ["--queue", "/q", "--max-dirs", "0"],
        ["--queue", "/q", "--buffer-bytes", "65535"],
        ["--queue", "/q", "--buffer-bytes", "lots"],
        ["--queue", "/q", "--proc-root", "proc"],
        ["--queue", "/q", "--bogus"],
    ],
)
def test_bad_config_exits_with_usage_status(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.fimnotify", *argv],
        input=b"",
        capture_output=True,
        env=python_env(),
        timeout=30,
        check=False,
    )
    assert proc.returncode == ExitStatus.USAGE
    assert proc.stderr.startswith((b"usage: fimnotify", b"fimnotify: "))
    assert b"Traceback" not in proc.stderr


# Control lines an engine must refuse (EBADCTL) and survive. The last two used to kill it:
# json raised RecursionError, and a lone surrogate passed validation but has no bytes.
BAD_CONTROL = [
    b"not json",
    b"[]",
    b'{"op":"add","watch":1}',
    b'{"op":"remove","watch":-1}',
    b'{"op":"stop","watch":1}',
    b'{"op":"add","watch":1,"pid":1,"subjects":[{"paths":["/a/../b"],"events":["all"]}]}',
    b'{"op":"add","watch":1,"pid":1,"subjects":[{"paths":["/a"],"events":["nope"]}]}',
    b"\xff\xfe",
    b"[" * 100_000,
    b'{"op":"add","watch":1,"pid":1,"subjects":[{"paths":["/\\ud800"],"events":["all"]}]}',
    b'{"op":"add","watch":1,"pid":1,"subjects":[{"paths":["/a"],"ignore":["\\udbff"],'
    b'"events":["all"]}]}',
]


def test_bad_control_lines_are_reported_and_skipped(env: Setup) -> None:
    env.run("os.makedirs('/data')")
    env.fim = EngineProcess(engine_config(env.queue))
    for line in BAD_CONTROL:
        env.fim.send(line + b"\n")

    def all_refused(records: list[Any]) -> bool:
        return sum(isinstance(r, ErrorRecord) for r in records) >= len(BAD_CONTROL)

    env.queue.wait_for(all_refused, timeout=20)
    errors = [r for r in env.queue.snapshot() if isinstance(r, ErrorRecord)]
    assert [(e.watch, e.code, e.subject, e.path) for e in errors] == [
        (ENGINE, "EBADCTL", None, b"")
    ] * len(BAD_CONTROL)
    assert "op: unknown operation 'stop'" in errors[4].message
    assert "paths[0]" in errors[9].message
    assert env.fim.alive(), env.fim.stderr.decode(errors="replace")
    # ... and keeps serving.
    env.fim.add(Setup.WATCH, env.container.pid, subject("/data", events=("create",)))
    env.queue.wait_kind(ReadyRecord)
    env.run("open('/data/f', 'w').close()")
    env.saw("/data/f", "create")
    assert not [r for r in env.queue.snapshot() if isinstance(r, GoneRecord)]


def test_unusable_queue_exits_with_queue_status() -> None:
    small = QueueReader(max_message_size=1024)  # below MIN_MESSAGE_SIZE: unusable
    try:
        for name in ("/fimk8s.test.missing", small.name):
            proc = subprocess.run(
                [sys.executable, "-m", "services.fimnotify", "--queue", name],
                input=b"",
                capture_output=True,
                env=python_env(),
                timeout=30,
                check=False,
            )
            assert proc.returncode == ExitStatus.QUEUE, proc.stderr
            assert b"Traceback" not in proc.stderr
        assert small.snapshot() == []
    finally:
        small.close()


# --- kernel limits, inside a user namespace of the test's own ---------------------------
#
# /proc/sys/user/max_inotify_{watches,instances} are per user namespace and charged
# hierarchically: lowering them in a namespace the test creates limits only the processes
# in it, and the host's fs.inotify.* settings are never touched.


class UserNs:
    """A user namespace (root mapped to root) held open by a sleeping process."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-U", "-r", "sleep", "3600"], stdin=subprocess.DEVNULL
        )
        wait_until(
            lambda: (
                os.readlink(f"/proc/{self.holder.pid}/ns/user") != os.readlink("/proc/self/ns/user")
            ),
            what="user namespace",
        )

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-U", "--"]

    def set_limit(self, name: str, value: int) -> None:
        subprocess.run(
            [*self.prefix, "sh", "-c", f"echo {value} > /proc/sys/user/{name}"], check=True
        )

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


@pytest.fixture
def userns_env() -> Iterator[tuple[UserNs, Setup]]:
    userns = UserNs()
    setup = None
    try:
        setup = Setup.__new__(Setup)
        setup.container = Container(prefix=userns.prefix)
        setup.queue = QueueReader()
        setup.fim = None
        yield userns, setup
    finally:
        try:
            if setup is not None:
                setup.close()
        finally:
            userns.close()


def test_watch_limit_is_reported_and_the_rest_keeps_working(
    userns_env: tuple[UserNs, Setup],
) -> None:
    userns, env = userns_env
    env.run("os.makedirs('/small'); [os.makedirs('/big/d%d/e' % i) for i in range(20)]")
    userns.set_limit("max_inotify_watches", 6)
    ready = env.start(
        subject("/small", events=("create",)),
        subject("/big", events=("create",), recursive=True),
        prefix=userns.prefix,
    )
    error: ErrorRecord = env.queue.wait_kind(ErrorRecord)
    assert (error.code, error.watch, error.subject) == ("ENOSPC", Setup.WATCH, 1)
    assert error.path.startswith(b"/big")
    assert "max_user_watches" in error.message
    assert [r for r in env.queue.snapshot() if isinstance(r, ErrorRecord)] == [error]
    assert ready.watches == 6
    env.run("open('/small/f', 'w').close()")
    env.saw("/small/f", "create")


def test_instance_limit_is_reported_and_retried(userns_env: tuple[UserNs, Setup]) -> None:
    userns, env = userns_env
    env.run("os.makedirs('/data')")
    userns.set_limit("max_inotify_instances", 0)
    env.fim = EngineProcess(engine_config(env.queue), prefix=userns.prefix)
    env.fim.add(Setup.WATCH, env.container.pid, subject("/data", events=("create",)))
    error: ErrorRecord = env.queue.wait_kind(ErrorRecord)
    assert (error.code, error.watch, error.subject) == ("EMFILE", ENGINE, None)
    assert "max_user_instances" in error.message
    assert env.fim.alive()  # keeps serving: retries
    userns.set_limit("max_inotify_instances", 8)
    ready = env.queue.wait_kind(ReadyRecord, timeout=15)
    assert ready.watch == Setup.WATCH  # the ADD sent meanwhile was applied
    env.run("open('/data/f', 'w').close()")
    env.saw("/data/f", "create")


def test_end_of_stdin_while_waiting_for_an_instance_stops_the_engine(
    userns_env: tuple[UserNs, Setup],
) -> None:
    """fimd gone while the instance limit is reached: the engine must not linger, retrying."""
    userns, env = userns_env
    userns.set_limit("max_inotify_instances", 0)
    env.fim = EngineProcess(engine_config(env.queue), prefix=userns.prefix)
    env.fim.add(Setup.WATCH, env.container.pid, subject("/", events=("create",)))
    assert env.queue.wait_kind(ErrorRecord).code == "EMFILE"
    env.fim.close_stdin()
    assert env.fim.proc.wait(10) == ExitStatus.OK
    record = env.queue.wait_kind(ExitRecord, timeout=10)
    assert (record.reason, record.status) == (ExitReason.STOPPED, ExitStatus.OK)
    assert "control channel closed" in record.message
