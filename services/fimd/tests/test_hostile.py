"""Hostile workloads against the real fimd (issue 11): `python -m services.fimd` with its real
fimnotify engines, "containers" in real kubepods cgroups with a private tmpfs, mTLS.

The hostile code runs the way a container's own process would: in the container's mount
namespace (`nsenter --mount`), on the container's tmpfs, with the names and speeds it chooses.
Cases:

(a) directories of 255-byte names that are not UTF-8, nested by relative mkdir + chdir until
    the path is longer than PATH_MAX (4096), under a recursive watch;
(b) a directory named `x","event":"ACCESS","path":"` and names holding newlines, CR, VT, FF,
    U+001C..U+001E, NEL (U+0085), U+2028, U+2029, other C1 controls, DEL, ESC, bidi
    overrides, quotes and backslashes, under a watch with default JSON lines and one with a
    JSON-shaped logFormat;
(c) a tree wider than the per-watch directory cap (fimd's --max-dirs, 200 here);
(d) an event flood: 30,000 appends as fast as one process makes them (more events than
    inotify's default queue of 16,384 holds should the engine fall behind; 100,000 before,
    whose lines took fimd up to 70 s on the loaded 2-core machine);
(e) the container's init exiting and being replaced, again and again (target gone).

In every case, besides what is particular to it:

- fimd never restarts: the same process (PID) and instance ID, and no engine exited;
- the hostile watch is ACTIVE (for the cap: with reason WatchLimited);
- the bystanders (two watches on another container, one on each engine, so one of them
  shares the hostile watch's engine and inotify instance) keep delivering their events;
- every line of fimd's stdout parses with `json.loads`, and `str.splitlines()` sees as many
  lines as splitting on b"\\n" does (no character any splitter takes for a line break);
- the summed RSS of fimd and its engines stays below RSS_LIMIT (sampled every 0.1 s).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fim.v1 import fim_pb2
from services.fimd.lines import raw_path
from services.fimd.tests.certs import Pki, make_pki
from services.fimd.tests.container import Container
from services.fimd.tests.fimd_process import FimdProcess
from services.fimd.tests.specs import spec

PREFIX = f"/fimk8s-hostile.{os.getpid()}."
MAX_DIRS = 200
ENGINES = 2
MIB = 1 << 20
# fimd (Python, gRPC, Prometheus client) idles at about 48 MiB RSS and each engine at about
# 18 MiB on this machine: 84 MiB for fimd and 2 engines. What hostile input can add is
# bounded by design: fimd's stdout buffers (32 MiB of event lines, 1 MiB of operational
# lines), each engine's record buffer (8 MiB) and error-record bound (1 MiB), the per-watch
# directory cap, the one-message queue per engine: 84 + 33 + 2 x 9 = 135 MiB at the very
# worst, plus allocator slack. 250 MiB of summed RSS (which counts shared pages once per
# process, so more than the cgroup's working set the DaemonSet's 256 MiB limit applies to)
# fails on any growth with the input (per event, per name, per directory).
# (Measured: below 95 MiB at the peak of the flood.)
RSS_LIMIT = 250 * MIB
# How long a bystander's event may take while a hostile container is busy (the design's
# promise is 2 s; this machine has 2 cores shared with other work).
BYSTANDER_DEADLINE = 10.0
FLOOD = 30_000
PATH_MAX = 4096

# --- fimd, its memory, its stdout ---------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (fimd's engines), from /proc/<pid>/task/*/children."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except FileNotFoundError:
                continue
            kids = [int(p) for p in text.split()]
            out += kids
            todo += kids
    return out


def _rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples the summed RSS of fimd and its descendants in a thread; keeps the peak since
    the last `reset` and over the whole run."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.run_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def take(self) -> int:
        total = sum(_rss(pid) for pid in [self.pid, *_children(self.pid)])
        self.samples += 1
        self.peak = max(self.peak, total)
        self.run_peak = max(self.run_peak, total)
        return total

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()


class Stdout:
    """fimd's stdout file read incrementally: every complete line is checked (JSON, one
    line for `str.splitlines()`) and kept parsed, indexed by `path` and by `msg`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.parsed: list[dict[str, Any]] = []
        self.bad: list[str] = []  # descriptions of lines that broke the contract
        self.by_key: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        self.counts: Counter[tuple[Any, Any]] = Counter()  # (watcher, event) of event lines
        self._lock = threading.Lock()

    def poll(self) -> int:
        """Reads what fimd wrote since; returns the number of lines read so far."""
        with self._lock:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n")
            if end >= 0:
                self.offset += end + 1
                for raw in data[: end + 1].split(b"\n")[:-1]:
                    self._check(raw)
            return len(self.parsed)

    def _check(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
            value = json.loads(text)
        except ValueError as err:
            self.bad.append(f"{err}: {raw[:300]!r}")
            return
        if len(text.splitlines()) != 1:
            self.bad.append(f"splitlines() sees {len(text.splitlines())} lines: {raw[:300]!r}")
        if not isinstance(value, dict):
            self.bad.append(f"not an object: {raw[:300]!r}")
            return
        self.parsed.append(value)
        for key in ("path", "msg", "fmt"):
            if key in value:
                self.by_key.setdefault((key, value[key]), []).append(value)
        if "event" in value:
            self.counts[(value.get("watcher"), value["event"])] += 1

    def lines(self, **match: Any) -> list[dict[str, Any]]:
        """Lines with these field values (one of them `path`, `msg` or `fmt`: indexed)."""
        self.poll()
        key = next(k for k in ("path", "msg", "fmt") if k in match)
        found = self.by_key.get((key, match[key]), [])
        return [line for line in found if all(line.get(k) == v for k, v in match.items())]

    def scan(self, **match: Any) -> list[dict[str, Any]]:
        """Lines with these field values, looked for in every line."""
        self.poll()
        return [line for line in self.parsed if all(line.get(k) == v for k, v in match.items())]

    def wait(self, what: str, timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.lines(**match)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no line with {match} after {timeout} s ({what})")
            time.sleep(0.05)


@dataclass
class Fimd:
    process: FimdProcess
    out: Stdout
    rss: RssSampler
    pid: int
    instance: str
    engine_pids: list[int]
    figures: list[str] = field(default_factory=list)

    def create(self, watch: fim_pb2.WatchSpec) -> fim_pb2.WatchStatus:
        self.process.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=10)
        return self.process.wait_active(watch.key, timeout=20)

    def destroy(self, watch: fim_pb2.WatchSpec) -> None:
        self.process.stub.DestroyWatch(fim_pb2.DestroyWatchRequest(key=watch.key), timeout=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def fimd(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, request: pytest.FixtureRequest
) -> Iterator[Fimd]:
    process = FimdProcess(
        tmp_path_factory.mktemp("fimd"), pki, PREFIX,
        "--engines", str(ENGINES), "--max-dirs", str(MAX_DIRS),
    )  # fmt: skip
    try:
        out = Stdout(process.stdout_path)
        (started,) = out.wait("started line", msg="started")
        state = process.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
        rss = RssSampler(process.proc.pid)
        handle = Fimd(
            process, out, rss, process.proc.pid, state.instance_id, started["engine_pids"]
        )
        assert len(handle.engine_pids) == ENGINES
        yield handle
        rss.stop()
        # The figures, also when everything passed (a fixture's output would be captured).
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            for line in [*handle.figures, f"peak RSS {rss.run_peak / MIB:.1f} MiB"]:
                reporter.write_line(f"[hostile] {line}")
    finally:
        if process.proc.poll() is None:
            process.stop()


# --- containers -----------------------------------------------------------------------


def _data(ctr: Container, name: str = "") -> str:
    return str(ctr.root / "data" / name) if name else str(ctr.root / "data")


def run_inside(ctr: Container, code: str, *args: str | bytes) -> subprocess.Popen[bytes]:
    """Starts `python -c code args` in the container's mount namespace (as `kubectl exec`
    would run a process of the container); its stdout is a pipe."""
    return subprocess.Popen(
        ["nsenter", f"--target={ctr.pid}", "--mount", "--", sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
    )


def inside(ctr: Container, code: str, *args: str | bytes, timeout: float = 120) -> str:
    proc = run_inside(ctr, code, *args)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"hostile script failed ({proc.returncode})"
    return out.decode()


def named(
    ctr: Container, name: str, *, paths: tuple[str, ...] | None = None, **kwargs: Any
) -> fim_pb2.WatchSpec:
    """A watch whose FimWatcher and pod are called `name` (so its lines are told apart)."""
    watch = spec(
        container_id=ctr.container_id,
        paths=paths or (_data(ctr),),
        pod_uid=f"pod-{name}",
        watcher_uid=f"uid-{name}",
        **kwargs,
    )
    watch.identity.watcher_name = name
    watch.identity.pod_name = name
    return watch


@dataclass
class Bystanders:
    """Two watches (one per engine) on a calm container; `probe` proves both deliver."""

    fimd: Fimd
    container: Container
    watches: list[fim_pb2.WatchSpec]
    engines: set[int]
    count: int = 0
    latencies: list[float] = field(default_factory=list)

    def touch(self) -> str:
        """Creates a new file in the calm container; returns its path."""
        self.count += 1
        path = _data(self.container, f"probe-{self.count}")
        self.container.write(path)
        return path

    def seen(self, path: str) -> set[str]:
        """Names of the bystander watchers that reported the CREATE of `path`."""
        lines = self.fimd.out.lines(kind="event", event="CREATE", path=path)
        return {str(line["watcher"]) for line in lines}

    def probe(self, deadline: float = BYSTANDER_DEADLINE) -> float:
        """A new file; returns the seconds until both bystanders reported it."""
        started = time.monotonic()
        path = self.touch()
        want = {f"shop/{w.identity.watcher_name}" for w in self.watches}
        while self.seen(path) != want:
            elapsed = time.monotonic() - started
            assert elapsed < deadline, f"bystanders silent for {elapsed:.1f} s: {self.seen(path)}"
            time.sleep(0.02)
        latency = time.monotonic() - started
        self.latencies.append(latency)
        return latency


@pytest.fixture(scope="module")
def bystanders(fimd: Fimd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bystanders]:
    ctr = Container(tmp_path_factory.mktemp("bystander")).start()
    try:
        watches = [named(ctr, f"bystander-{i}", events=("create",)) for i in range(ENGINES)]
        engines = {fimd.create(w).watcher_pid for w in watches}
        assert len(engines) == ENGINES  # fewest watches first: one on each engine
        calm = Bystanders(fimd, ctr, watches, engines)
        calm.probe()
        yield calm
        fimd.figures.append(
            f"bystander latency: {len(calm.latencies)} probes, max {max(calm.latencies):.3f} s"
        )
    finally:
        ctr.close()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Container]:
    ctr = Container(tmp_path / "hostile").start()
    yield ctr
    ctr.close()


def healthy(fimd: Fimd, bystanders: Bystanders, case: str) -> None:
    """What every case asserts at its end (see the module docstring)."""
    assert fimd.process.proc.poll() is None, "fimd exited"
    state = fimd.process.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=10)
    assert (fimd.process.proc.pid, state.instance_id) == (fimd.pid, fimd.instance)
    assert not fimd.out.lines(msg="engine_exited")
    for watch in bystanders.watches:
        status = fimd.process.watch(watch.key)
        assert status is not None
        assert status.phase == fim_pb2.WATCH_PHASE_ACTIVE
        assert status.watcher_pid in fimd.engine_pids  # never restarted
        assert status.restarts == 0
    bystanders.probe()
    fimd.out.poll()
    assert fimd.out.bad == [], fimd.out.bad[:5]
    data = fimd.process.stdout_path.read_bytes()
    assert data.endswith(b"\n")
    count = len(data.split(b"\n")) - 1
    assert len(data.decode("utf-8").splitlines()) == count
    assert len(fimd.out.parsed) == count  # every line parsed, as an object
    peak = max(fimd.rss.peak, fimd.rss.take())
    fimd.figures.append(
        f"{case}: {count} lines ({len(data) / MIB:.1f} MiB) so far, peak RSS {peak / MIB:.1f} MiB"
    )
    assert peak < RSS_LIMIT, f"fimd + engines RSS peaked at {peak / MIB:.1f} MiB"
    fimd.rss.reset()


def _raw(line: dict[str, Any]) -> bytes:
    return raw_path(str(line["path"]), str(line.get("pathBytes", "")))


# --- (a) long non-UTF-8 names beyond PATH_MAX --------------------------------------------

LEVELS = 20


def _dir_name(level: int) -> bytes:
    return bytes([0x80 + level]) + b"\xff" * 254  # 255 bytes, not UTF-8


def _file_name(level: int) -> bytes:
    return b"\xfe" * 200 + bytes([0x80 + level])  # 201 bytes, not UTF-8


NEST = f"""
import os, sys
os.chdir(sys.argv[1])
for level in range({LEVELS}):
    name = bytes([0x80 + level]) + b"\\xff" * 254
    os.mkdir(name)
    os.chdir(name)  # relative: no path is ever longer than one name
    open(b"\\xfe" * 200 + bytes([0x80 + level]), "wb").close()
print(len(os.getcwdb()))
"""


def test_long_non_utf8_names_beyond_path_max(
    fimd: Fimd, bystanders: Bystanders, hostile: Container
) -> None:
    watch = named(hostile, "deep", events=("create",), recursive=True)
    fimd.create(watch)
    deepest = int(inside(hostile, NEST, _data(hostile)))
    assert deepest > PATH_MAX + 500
    base = os.fsencode(_data(hostile))
    expected, here = set(), base
    for level in range(LEVELS):
        here += b"/" + _dir_name(level)
        expected |= {here, here + b"/" + _file_name(level)}
    bystanders.probe()
    top = base + b"/" + _dir_name(0)
    fimd.out.wait("the first level", watcher="shop/deep", path=top.decode("utf-8", "replace"))
    # The deepest reportable file: its directory's path is short enough to be watched.
    reportable = max(
        (p for p in expected if len(p) <= PATH_MAX and len(p.rpartition(b"/")[0]) < PATH_MAX),
        key=len,
    )
    deadline = time.monotonic() + 15
    while reportable not in {_raw(e) for e in fimd.out.scan(kind="event", watcher="shop/deep")}:
        assert time.monotonic() < deadline, "the deepest reportable path was not reported"
        time.sleep(0.05)
    events = fimd.out.scan(kind="event", watcher="shop/deep")
    for line in events:
        raw = _raw(line)
        assert raw in expected
        assert line["path"] == raw.decode("utf-8", "replace")
        assert base64.b64decode(line["pathBytes"]) == raw  # not UTF-8: always pathBytes
        assert "\ufffd" in line["path"]
    assert {_raw(e) for e in events} >= {top, top + b"/" + _file_name(0), reportable}
    assert max(len(_raw(e)) for e in events) > PATH_MAX - 300
    # What lies beyond PATH_MAX is reported as bounded errors, cut at 1024 bytes.
    errors = fimd.out.lines(msg="watch_error", watcher="shop/deep")
    assert errors
    assert {e["code"] for e in errors} == {"ENAMETOOLONG"}
    for error in errors:
        cut = base64.b64decode(error["pathBytes"])
        assert error["pathTruncated"] is True
        assert len(cut) == 1024
        assert any(p[:1024] == cut and len(p) == error["pathSize"] for p in expected)
    status = fimd.process.watch(watch.key)
    assert status is not None
    assert (status.phase, status.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "PathError")
    assert status.restarts == 0
    healthy(fimd, bystanders, "(a) names beyond PATH_MAX")
    fimd.destroy(watch)


# --- (b) names that try to forge fields or break lines ------------------------------------

FORGE = 'x","event":"ACCESS","path":"'
NAMES = [
    "line\nbreak",
    "carriage\rreturn",
    "vt\x0bff\x0cfs\x1cgs\x1drs\x1e",
    "nel\u0085",
    "ls\u2028ps\u2029",
    "csi\u009b31m-c1\u0080\u009f",
    "del\x7fesc\x1b[2J",
    "bidi\u202etxt.exe\u2066",
    'quote"back\\slash\ttab',
    '{"kind":"event"}',
]
# Not UTF-8 and forging: the raw bytes only survive in pathBytes.
FORGE_BYTES = b'\xff","event":"ACCESS","path":"\xfe'
LOG_FORMAT = (
    '{{"fmt":"hostile","event":"{event}","path":"{path}","pathBytes":"{pathBytes}",'
    '"dir":"{dir}","file":"{file}","pod":"{pod}"}}'
)

FORGING = """
import os, sys
os.chdir(sys.argv[1])
os.mkdir(sys.argv[2])
open(os.path.join(sys.argv[2], "inside"), "w").close()
for name in sys.argv[3:]:
    open(os.fsencode(name), "w").close()
"""


def test_names_that_forge_fields_or_break_lines(
    fimd: Fimd, bystanders: Bystanders, hostile: Container
) -> None:
    plain = named(hostile, "forge-json", events=("create",), recursive=True)
    shaped = named(hostile, "forge-fmt", events=("create",), recursive=True, log_format=LOG_FORMAT)
    for watch in (plain, shaped):
        fimd.create(watch)
    names = [*NAMES, os.fsdecode(FORGE_BYTES)]
    inside(hostile, FORGING, _data(hostile), FORGE, *names)
    bystanders.probe()
    base = os.fsencode(_data(hostile))
    forged = base + b"/" + FORGE.encode()
    want = [forged, forged + b"/inside", *(base + b"/" + os.fsencode(n) for n in names)]

    def lines_of(watcher: str) -> dict[bytes, dict[str, Any]]:
        if watcher == "fmt":
            found = fimd.out.lines(fmt="hostile")
        else:
            found = fimd.out.scan(kind="event", watcher="shop/forge-json")
        return {_raw(line): line for line in found}

    deadline = time.monotonic() + 15
    while not (set(want) <= set(lines_of("json")) and set(want) <= set(lines_of("fmt"))):
        assert time.monotonic() < deadline, "not every hostile name reported by both watches"
        time.sleep(0.05)
    plain_lines, shaped_lines = lines_of("json"), lines_of("fmt")
    for raw in want:
        text = raw.decode("utf-8", "replace")
        for line in (plain_lines[raw], shaped_lines[raw]):
            # The true event and the true path, whatever the name tried to write.
            assert (line["event"], line["path"]) == ("CREATE", text), line
        assert set(plain_lines[raw]) == {
            "kind", "time", "node", "namespace", "pod", "container", "watcher", "event",
            "path", "isDir", "tags", *(["pathBytes"] if raw != text.encode() else []),
        }  # fmt: skip
        shaped_line = shaped_lines[raw]
        assert set(shaped_line) == {"fmt", "event", "path", "pathBytes", "dir", "file", "pod"}
        assert shaped_line["dir"] + "/" + shaped_line["file"] == text
        assert shaped_line["pod"] == "forge-fmt"
        assert (shaped_line["pathBytes"] != "") == (raw != text.encode())
    assert plain_lines[forged]["isDir"] is True
    assert not fimd.out.scan(event="ACCESS")
    # The raw bytes of fimd's stdout hold none of the characters in the names: escaped.
    data = fimd.process.stdout_path.read_bytes()
    for char in "\r\x0b\x0c\x1c\x1d\x1e\x1b\x7f\u0085\u2028\u2029\u009b\u202e\u2066":
        assert char.encode() not in data, repr(char)
    for watch in (plain, shaped):
        status = fimd.process.watch(watch.key)
        assert status is not None
        assert (status.phase, status.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "")
    healthy(fimd, bystanders, "(b) forging names")
    for watch in (plain, shaped):
        fimd.destroy(watch)


# --- (c) a tree wider than the per-watch directory cap -------------------------------------

WIDE = 300
# Not UTF-8 (watch_limited carries pathBytes), a newline, and an attempt to forge `msg`.
WIDE_NAME = b'\xfe","msg":"ok\n%04d'
WIDEN = f"""
import os, sys
os.chdir(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    os.mkdir({WIDE_NAME!r} % i)
"""


def test_tree_wider_than_the_directory_cap(
    fimd: Fimd, bystanders: Bystanders, hostile: Container
) -> None:
    inside(hostile, WIDEN, _data(hostile), "0", str(WIDE))
    watch = named(hostile, "wide", events=("create",), recursive=True)
    status = fimd.create(watch)
    assert status.reason == "WatchLimited", status
    assert 0 < status.inotify_watches <= MAX_DIRS
    base = os.fsencode(_data(hostile))
    names = {base + b"/" + WIDE_NAME % i for i in range(WIDE * 2)}
    (limited,) = fimd.out.wait("watch_limited", msg="watch_limited", watcher="shop/wide")
    assert limited["level"] == "error"
    assert limited["code"] == "EDIRCAP"
    assert _raw(limited) in names  # names the left-out directory, raw bytes included
    assert "pathBytes" in limited
    # The container keeps widening the tree under the running watch.
    inside(hostile, WIDEN, _data(hostile), str(WIDE), str(WIDE * 2))
    hostile.write(_data(hostile, "after"))
    fimd.out.wait("the top of the tree still watched", path=_data(hostile, "after"))
    bystanders.probe()
    now = fimd.process.watch(watch.key)
    assert now is not None
    assert (now.phase, now.reason) == (fim_pb2.WATCH_PHASE_ACTIVE, "WatchLimited")
    assert 0 < now.inotify_watches <= MAX_DIRS
    state = fimd.process.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=5)
    others = len(bystanders.watches)  # one directory each
    assert state.limits.inotify_watches_in_use <= MAX_DIRS + others
    healthy(fimd, bystanders, "(c) wider than the directory cap")
    fimd.destroy(watch)


# --- (d) an event flood ---------------------------------------------------------------------

FLOOD_REARM = 10.0  # seconds without a new flood line before the count is final


def _losses(fimd: Fimd) -> list[dict[str, Any]]:
    """fimd's reports of lost events so far: overflows, dropped records, dropped output."""
    return [
        line
        for msg in ("inotify_overflow", "events_dropped", "output_dropped")
        for line in fimd.out.lines(msg=msg)
    ]


FLOOD_SCRIPT = """
import os, sys, time
os.chdir(sys.argv[1])
names = [b"f0", b"f1"]  # alternating: the kernel merges no two events
start = time.monotonic()
for i in range(int(sys.argv[2])):
    fd = os.open(names[i & 1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"x\\n")
    os.close(fd)
print(time.monotonic() - start)
"""


def test_event_flood(fimd: Fimd, bystanders: Bystanders, hostile: Container) -> None:
    watch = named(hostile, "flood", events=("create", "modify"))
    engine = fimd.create(watch).watcher_pid
    shared = next(w for w in bystanders.watches if fimd.process.watch(w.key).watcher_pid == engine)  # type: ignore[union-attr]
    lines_before = fimd.out.poll()
    flood = run_inside(hostile, FLOOD_SCRIPT, _data(hostile), str(FLOOD))
    # Meanwhile the calm container keeps creating files, each one once every 0.1 s.
    probes: list[tuple[str, float]] = []
    while flood.poll() is None:
        probes.append((bystanders.touch(), time.monotonic()))
        time.sleep(0.1)
    out, _ = flood.communicate()
    assert flood.returncode == 0
    seconds = float(out)
    # Every probe reaches both bystanders unless its loss is reported: an overflow of the
    # inotify queue shared with the flood (then rescanned) or events fimnotify dropped.
    want = {f"shop/{w.identity.watcher_name}" for w in bystanders.watches}
    other = f"shop/{next(w for w in bystanders.watches if w is not shared).identity.watcher_name}"
    deadline = time.monotonic() + 60
    for path, _ in probes:
        while bystanders.seen(path) != want and time.monotonic() < deadline:
            time.sleep(0.05)
    missing = {path: want - bystanders.seen(path) for path, _ in probes}
    missing = {path: who for path, who in missing.items() if who}
    if missing:
        assert all(who == {f"shop/{shared.identity.watcher_name}"} for who in missing.values())
        assert any(line.get("pod") == shared.identity.pod_name for line in _losses(fimd)), missing
    assert not any(other in who for who in missing.values())
    # The flood's own events: all of them, or the loss reported. The wait re-arms while lines
    # keep coming (a loaded machine writes them slowly), so it ends only once they stop.
    modifies = 0
    deadline = time.monotonic() + FLOOD_REARM
    while time.monotonic() < deadline:
        fimd.out.poll()
        seen = fimd.out.counts[("shop/flood", "MODIFY")]
        if seen >= FLOOD:
            modifies = seen
            break
        if seen > modifies:
            modifies, deadline = seen, time.monotonic() + FLOOD_REARM
        time.sleep(0.2)
    # Read after the wait: a loss line (an overflow rescan) can come after the probes' checks.
    losses = _losses(fimd)
    flood_losses = [line for line in losses if line.get("pod") == "flood"]
    assert modifies == FLOOD or flood_losses, (
        f"{modifies} of {FLOOD} MODIFY lines, no loss reported"
    )
    status = fimd.process.watch(watch.key)
    assert status is not None
    assert status.phase == fim_pb2.WATCH_PHASE_ACTIVE
    fimd.figures.append(
        f"(d) flood: {FLOOD} appends in {seconds:.2f} s, {modifies} MODIFY lines, "
        f"{fimd.out.poll() - lines_before} lines in all, "
        f"{len(probes)} bystander probes ({len(missing)} lost), "
        f"losses reported: {sorted({str(line['msg']) for line in losses})}"
    )
    healthy(fimd, bystanders, "(d) flood")
    fimd.destroy(watch)


# --- (e) the container's init exits and is replaced -----------------------------------------


def test_init_exits_and_is_replaced_again_and_again(
    fimd: Fimd, bystanders: Bystanders, hostile: Container
) -> None:
    watch = named(hostile, "phoenix", events=("create",))
    first = fimd.create(watch)
    pids = [hostile.pid]
    for _ in range(5):
        hostile.replace()
        pids.append(hostile.pid)
        time.sleep(0.1)
    deadline = time.monotonic() + 20
    while True:
        status = fimd.process.watch(watch.key)
        assert status is not None
        if status.pid == hostile.pid and status.phase == fim_pb2.WATCH_PHASE_ACTIVE:
            break
        assert time.monotonic() < deadline, f"not ACTIVE on the last process: {status}"
        time.sleep(0.05)
    assert first.pid == pids[0]
    assert status.restarts >= 1
    hostile.write(_data(hostile, "reborn"))
    fimd.out.wait("event from the last process", path=_data(hostile, "reborn"), event="CREATE")
    gone = fimd.out.lines(msg="target_gone", watcher="shop/phoenix")
    assert gone
    healthy(fimd, bystanders, "(e) init replaced")
    fimd.destroy(watch)
