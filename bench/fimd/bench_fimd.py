"""fimd benchmarks: end-to-end throughput, write-to-line latency, and fimd RSS.

Everything is real: `python -m services.fimd` over mTLS (127.0.0.1) with its pool of real
fimnotify engines, writers in namespaced "container" processes in real kubepods cgroups
(services/fimd/tests/container.py), stdout to a file. Needs root. Run from the repository
root with the protobuf modules on PYTHONPATH (see docs/performance.md, section fimd):

    python -m bench.fimd.bench_fimd throughput --watches 1 10 100 --rate 50000 --seconds 4
    python -m bench.fimd.bench_fimd latency --rate 5000 --seconds 5
    python -m bench.fimd.bench_fimd capacity --containers 200 --watches 2000
    python -m bench.fimd.bench_fimd noisy --rate 50000 --seconds 60 --quiet 500
    python -m bench.fimd.bench_fimd volume --rate 50000 --seconds 10 --files 10
    python -m bench.fimd.bench_fimd hashing --rate 10000 --seconds 10 --files 1000 --size 4096
    python -m bench.fimd.bench_fimd baseline --files 100000 --size 4096
    python -m bench.fimd.bench_fimd seal --rate 50000 --seconds 4 --runs 3

Each prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import calendar
import collections
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fim.v1 import fim_pb2
from libs.auditstream import keys
from libs.auditstream.collect import records
from libs.auditstream.seal import Sealer
from libs.auditstream.verify import verify
from libs.rootfs.walk import Entry, Rules, Walk, walk
from services.fimd.baseline import compare
from services.fimd.baseline_store import BaselineKey, Store, summaries
from services.fimd.tests.certs import make_pki
from services.fimd.tests.container import Container
from services.fimd.tests.fimd_process import FimdProcess
from services.fimd.tests.specs import spec

#: Extra fimd flags for every benchmark (--fimd-arg), e.g. to compare queue geometries.
FIMD_ARGS: list[str] = []


@contextmanager
def _fimd(workdir: Path, *extra: str) -> Iterator[FimdProcess]:
    prefix = f"/fimk8s-bench.{os.getpid()}."
    fimd = FimdProcess(workdir, make_pki(workdir), prefix, *extra, *FIMD_ARGS)
    try:
        yield fimd
    finally:
        fimd.stop()


def _watch(fimd: FimdProcess, ctr: Container, index: int, hash_: str = "") -> None:
    watch = spec(
        container_id=ctr.container_id,
        paths=(str(ctr.root / "data"),),
        events=("closewrite",),
        pod_uid=f"bench-{index}",
    )
    watch.subjects[0].hash = hash_
    fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=30)
    fimd.wait_active(watch.key, timeout=60)


def _containers(stack: ExitStack, workdir: Path, count: int) -> list[Container]:
    out = []
    for i in range(count):
        ctr = Container(workdir / f"ctr{i}", cpu=True).start()
        stack.callback(ctr.close)
        out.append(ctr)
    return out


_LOSS_MESSAGES = (b'"msg":"events_dropped"', b'"msg":"output_dropped"', b'"msg":"inotify_overflow"')


class _Counter:
    """Counts event lines and loss reports in fimd's stdout, reading only what is new (so
    the benchmark does not compete with fimd for CPU by re-reading the file)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._partial = b""
        self.events = 0
        self.loss_reports = 0
        self.losses: collections.Counter[str] = collections.Counter()

    def update(self) -> int:
        data = self._partial + self._file.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.startswith(b'{"kind":"event"'):
                self.events += 1
            elif any(m in line for m in _LOSS_MESSAGES):
                self.loss_reports += 1
                self.losses[json.loads(line)["msg"]] += 1
        return self.events

    def close(self) -> None:
        self._file.close()


def throughput(
    watches: int, rate: int, seconds: float, ring: keys.KeyRing | None = None
) -> dict[str, object]:
    """`watches` containers with one watch each write `rate` events/s in total; with `ring`
    fimd seals its lines (--audit-key) and the whole stdout is verified afterwards."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        extra: list[str] = []
        if ring is not None:
            (workdir / "keys.json").write_bytes(ring.dumps())
            extra = ["--audit-key", str(workdir / "keys.json")]
        fimd = stack.enter_context(_fimd(workdir, *extra))
        ctrs = _containers(stack, workdir, watches)
        for i, ctr in enumerate(ctrs):
            _watch(fimd, ctr, i)
        per_writer = max(1, rate // watches)
        count = int(per_writer * seconds)
        cpu0 = _cpu_seconds(fimd.proc.pid)
        start = time.monotonic()
        for ctr in ctrs:
            ctr.command(f"b {ctr.root / 'data'} {count} {per_writer} 1000")
        write_seconds = max(ctr.result() for ctr in ctrs)
        expected = count * len(ctrs)
        counter = _Counter(fimd.stdout_path)
        stack.callback(counter.close)
        last_change, previous = time.monotonic(), -1
        while counter.update() < expected and time.monotonic() - last_change < 5:
            if counter.events != previous:
                previous, last_change = counter.events, time.monotonic()
            time.sleep(0.05)
        if counter.events != previous:
            last_change = time.monotonic()
        got, lost_lines = counter.events, counter.loss_reports
        elapsed = last_change - start
        fimd_cpu = _cpu_seconds(fimd.proc.pid) - cpu0
        checked: dict[str, object] = {}
        if ring is not None:
            reports = verify(records(fimd.stdout_path.read_bytes(), "fimd.out"), ring)
            checked = {
                "verified": all(r.ok for r in reports) and len(reports) == 1,
                "verified_lines": sum(r.verified for r in reports),
            }
        return {
            "bench": "throughput",
            "sealed": ring is not None,
            **checked,
            "fimd_cpu_us_per_event": round(fimd_cpu / max(got, 1) * 1e6, 2),
            "watches": watches,
            "target_rate": rate,
            "written": expected,
            "lines": got,
            "lost": expected - got,
            "loss_reports": lost_lines,
            "losses": dict(counter.losses),
            "write_rate": round(expected / write_seconds),
            "end_to_end_rate": round(got / elapsed),
            "fimd_rss_mib": round(_rss_mib(fimd.proc.pid), 1),
        }


def seal_cost(rate: int, seconds: float, runs: int) -> dict[str, object]:
    """The MAC chain's cost: one watch at `rate`, fimd without and with --audit-key,
    alternating `runs` times (medians), plus the sealer alone on fimd-sized lines."""
    ring = keys.new_ring(datetime.datetime.now(datetime.UTC))
    plain: list[dict[str, Any]] = []
    sealed: list[dict[str, Any]] = []
    for _ in range(runs):
        plain.append(throughput(1, rate, seconds))
        sealed.append(throughput(1, rate, seconds, ring))

    def median(results: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in results))

    rate_plain, rate_sealed = (median(x, "end_to_end_rate") for x in (plain, sealed))
    cpu_plain, cpu_sealed = (median(x, "fimd_cpu_us_per_event") for x in (plain, sealed))
    return {
        "bench": "seal",
        "target_rate": rate,
        "runs": runs,
        "lost_unsealed": [r["lost"] for r in plain],
        "lost_sealed": [r["lost"] for r in sealed],
        "all_verified": all(r["verified"] for r in sealed),
        "end_to_end_rate_unsealed": rate_plain,
        "end_to_end_rate_sealed": rate_sealed,
        "throughput_cost_pct": round((rate_plain - rate_sealed) / rate_plain * 100, 1),
        "fimd_cpu_us_per_event_unsealed": cpu_plain,
        "fimd_cpu_us_per_event_sealed": cpu_sealed,
        "fimd_cpu_cost_pct": round((cpu_sealed - cpu_plain) / cpu_plain * 100, 1),
        **_sealer_alone(ring),
    }


def _sealer_alone(ring: keys.KeyRing) -> dict[str, object]:
    """Lines per second of Sealer.seal_block alone on 256 KiB batches of event lines."""
    line = (
        b'{"kind":"event","time":"2026-12-01T10:00:00.000001Z","node":"node-1",'
        b'"namespace":"shop","pod":"web-0","container":"app","watcher":"shop/myapp-logs",'
        b'"event":"CLOSEWRITE","path":"/data/f-000123","isDir":false,"tags":{}}\n'
    )
    batch = line * ((256 << 10) // len(line))
    sealer = Sealer(ring.node_key("node-1"))
    lines, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        sealer.seal_block(batch)
        lines += batch.count(b"\n")
    per_second = lines / (time.perf_counter() - start)
    return {
        "sealer_lines_per_s": round(per_second),
        "sealer_us_per_line": round(1e6 / per_second, 2),
        "line_bytes_unsealed": len(line) - 1,
        "line_bytes_sealed": len(Sealer(ring.node_key("node-1")).seal(line[:-1])),
    }


def _parse_time(text: str) -> int:
    """Nanoseconds of an event line's RFC 3339 `time` (microsecond precision)."""
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = calendar.timegm(stamp.timetuple())
    return seconds * 1_000_000_000 + stamp.microsecond * 1000


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


#: How long the latency bench waits for lines still missing 5 s after its writer ended.
LATE_WAIT_S = 60.0


def _wait_lines(samples: list[float], count: int, seconds: float) -> int:
    """Waits until `samples` holds `count` lines or `seconds` passed; returns how many."""
    deadline = time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(samples)


def latency(rate: int, seconds: float) -> dict[str, object]:
    """One writer creating files named by their creation time; a tail of fimd's stdout
    timestamps each line as it appears."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir))
        (ctr,) = _containers(stack, workdir, 1)
        _watch(fimd, ctr, 0)
        samples: list[float] = []
        to_read: list[float] = []  # write -> fimnotify read (the event's `time`)
        done = threading.Event()

        def tail() -> None:
            with open(fimd.stdout_path, "rb") as f:
                buffer = b""
                while not done.is_set():
                    chunk = f.read()
                    if not chunk:
                        time.sleep(0.0002)
                        continue
                    now = time.time_ns()
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        if line.startswith(b'{"kind":"event"'):
                            event = json.loads(line)
                            written = int(event["path"].rsplit("/", 1)[1])
                            read = _parse_time(event["time"])
                            samples.append((now - written) / 1e6)
                            to_read.append((read - written) / 1e6)

        reader = threading.Thread(target=tail)
        reader.start()
        count = int(rate * seconds)
        ctr.command(f"l {ctr.root / 'data'} {count} {rate}")
        ctr.result()
        # Lines still missing 5 s after the writer ended are waited for (up to LATE_WAIT_S
        # more) and counted, never left out of the percentiles unsaid.
        on_time = _wait_lines(samples, count, 5.0)
        received = _wait_lines(samples, count, LATE_WAIT_S)
        done.set()
        reader.join()
        return {
            "bench": "latency",
            "rate": rate,
            "events": count,
            "lines": len(samples),
            "lines_later_than_5s": received - on_time,
            "lines_missing": count - len(samples),
            "p50_ms": round(_percentile(samples, 0.50), 2),
            "p99_ms": round(_percentile(samples, 0.99), 2),
            "max_ms": round(max(samples), 2),
            "write_to_fimnotify_read_p99_ms": round(_percentile(to_read, 0.99), 2),
        }


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _tree_rss_mib(pid: int) -> float:
    """Summed RSS of `pid` and its descendants (fimd and its engines)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += _rss_mib(current)
        except (OSError, RuntimeError):
            continue  # exited meanwhile
        todo += children.get(current, [])
    return total


def _inotify_instances(pid: int) -> int:
    """inotify instances held by `pid` and its descendants."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(entry.name) != pid and int(stat[1]) != pid:
                continue
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except (OSError, ValueError, IndexError):
            continue
        count += sum(1 for link in links if link == "anon_inode:inotify")
    return count


def _named_spec(ctr: Container, watcher: int, path: str) -> fim_pb2.WatchSpec:
    """A watch of `path` in `ctr` with an identity of its own (lines are counted per watch)."""
    watch = spec(
        container_id=ctr.container_id,
        paths=(str(ctr.root / path.lstrip("/")),),
        events=("create", "closewrite"),
        pod_uid=f"pod-{ctr.id[:12]}",
        watcher_uid=f"watcher-{watcher}",
    )
    watch.identity.watcher_name = f"w{watcher}"
    watch.identity.pod_name = f"p{ctr.id[:12]}"
    return watch


#: CreateWatch calls in flight at once, as the controller keeps per node.
WINDOW = 32


def _create_all(fimd: FimdProcess, specs: list[fim_pb2.WatchSpec], timeout: float) -> float:
    """CreateWatch for every spec (WINDOW calls in flight, like the controller), then waits
    until all are ACTIVE; returns the seconds from the first call until the last is ACTIVE."""
    start = time.monotonic()
    pending: list[Any] = []
    for watch in specs:
        if len(pending) >= WINDOW:
            pending.pop(0).result()
        request = fim_pb2.CreateWatchRequest(spec=watch)
        pending.append(fimd.stub.CreateWatch.future(request, timeout=120))
    for future in pending:
        future.result()
    print(f"# CreateWatch calls done after {time.monotonic() - start:.2f}s", file=sys.stderr)
    deadline = start + timeout
    active = 0
    while time.monotonic() < deadline:
        state = fimd.stub.GetWatchState(fim_pb2.GetWatchStateRequest(), timeout=30)
        active = sum(1 for w in state.watches if w.phase == fim_pb2.WATCH_PHASE_ACTIVE)
        if active >= len(specs):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"only {active} of {len(specs)} watches ACTIVE after {timeout}s")


def capacity(containers: int, watches: int) -> dict[str, object]:
    """`watches` watches spread evenly over `containers` containers (several watchers per
    container path, as FimWatchers selecting the same pods); fimd + engines RSS and
    inotify instances before and after, the set-up rate, and one write reaching every
    watch of its container."""
    per = max(1, watches // containers)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir, "--max-watches", str(watches + 10)))
        ctrs = _containers(stack, workdir, containers)
        time.sleep(1.0)
        before = _tree_rss_mib(fimd.proc.pid)
        specs = [_named_spec(c, w, "/data") for c in ctrs for w in range(per)][:watches]
        seconds = _create_all(fimd, specs, timeout=600)
        time.sleep(1.0)
        after = _tree_rss_mib(fimd.proc.pid)
        last = ctrs[-1]
        last.write(str(last.root / "data" / "probe"))
        probe = str(last.root / "data" / "probe")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = [e for e in fimd.events(probe) if e["event"] == "CLOSEWRITE"]
            if len(seen) >= per:
                break
            time.sleep(0.1)
        instances = _inotify_instances(fimd.proc.pid)
        stop_start = time.monotonic()
        fimd.stop()
        return {
            "bench": "capacity",
            "stop_seconds": round(time.monotonic() - stop_start, 2),
            "containers": containers,
            "watches": len(specs),
            "setup_seconds": round(seconds, 2),
            "watches_per_second": round(len(specs) / seconds),
            "rss_mib_before": round(before, 1),
            "rss_mib_after": round(after, 1),
            "kib_per_watch": round((after - before) * 1024 / len(specs), 1),
            "inotify_instances": instances,
            "probe_lines": len(seen),
            "probe_watchers": sorted({e["watcher"] for e in seen})
            == sorted({f"shop/w{w}" for w in range(per)}),
        }


class _PerWatch:
    """Event lines per watcher and write-to-line latency of the quiet ones, from a tail of
    fimd's stdout."""

    def __init__(self, path: Path, noisy: str) -> None:
        self._path = path
        self._noisy_field = b'"watcher":"' + noisy.encode() + b'"'
        self.noisy = 0
        self.counts: dict[str, int] = {}
        self.quiet_ms: list[float] = []
        self.loss_reports = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with open(self._path, "rb") as f:
            buffer = b""
            while not self.done.is_set() or buffer:
                chunk = f.read()
                if not chunk:
                    if self.done.is_set():
                        break
                    time.sleep(0.0005)
                    continue
                now = time.time_ns()
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self._line(line, now)

    def _line(self, line: bytes, now: int) -> None:
        if not line.startswith(b'{"kind":"event"'):
            if any(m in line for m in _LOSS_MESSAGES):
                self.loss_reports += 1
            return
        if self._noisy_field in line:  # counted without parsing: the bench must stay cheap
            self.noisy += 1
            return
        event = json.loads(line)
        watcher = event["watcher"]
        self.counts[watcher] = self.counts.get(watcher, 0) + 1
        if event["event"] == "CREATE":
            written = int(event["path"].rsplit("/", 1)[1])
            self.quiet_ms.append((now - written) / 1e6)

    def stop(self) -> None:
        self.done.set()
        self._thread.join()


def noisy(rate: int, seconds: float, quiet: int, per_container: int) -> dict[str, object]:
    """One watch gets `rate` events/s for `seconds` while `quiet` other watches (sharing
    containers, `per_container` watchers on each container's /data) get 1 event/s each."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir))
        groups = max(1, quiet // per_container)
        noisy_ctr, *quiet_ctrs = _containers(stack, workdir, 1 + groups)
        noisy_spec = spec(
            container_id=noisy_ctr.container_id,
            paths=(str(noisy_ctr.root / "data"),),
            events=("closewrite",),
            pod_uid="noisy",
            watcher_uid="noisy",
        )
        noisy_spec.identity.watcher_name = "noisy"
        specs = [noisy_spec] + [
            _named_spec(c, g * per_container + w, "/data")
            for g, c in enumerate(quiet_ctrs)
            for w in range(per_container)
        ]
        _create_all(fimd, specs, timeout=300)
        tail = _PerWatch(fimd.stdout_path, "shop/noisy")
        count = int(rate * seconds)
        ticks = int(seconds)
        noisy_ctr.command(f"b {noisy_ctr.root / 'data'} {count} {rate} 10")
        for ctr in quiet_ctrs:
            ctr.command(f"l {ctr.root / 'data'} {ticks} 1")
        write_seconds = max(c.result() for c in [noisy_ctr, *quiet_ctrs])
        expected_quiet = ticks * 2  # CREATE and CLOSE_WRITE of each new file
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tail.noisy < count:
            time.sleep(0.2)
        time.sleep(1.0)
        tail.stop()
        quiet_counts = [tail.counts.get(f"shop/w{i}", 0) for i in range(len(specs) - 1)]
        return {
            "bench": "noisy",
            "rate": rate,
            "seconds": seconds,
            "write_seconds": round(write_seconds, 1),
            "noisy_written": count,
            "noisy_lines": tail.noisy,
            "quiet_watches": len(quiet_counts),
            "quiet_expected_each": expected_quiet,
            "quiet_min": min(quiet_counts),
            "quiet_max": max(quiet_counts),
            "loss_reports": tail.loss_reports,
            "quiet_p50_ms": round(_percentile(tail.quiet_ms, 0.50), 2),
            "quiet_p99_ms": round(_percentile(tail.quiet_ms, 0.99), 2),
            "quiet_max_ms": round(max(tail.quiet_ms), 2),
            "rss_mib": round(_tree_rss_mib(fimd.proc.pid), 1),
        }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


class _VolumeTail:
    """fimd's stdout, followed: per watcher its event and summary lines, their bytes, the
    events they account for (count, 1 if absent) and the most lines in one second."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.lines: collections.Counter[str] = collections.Counter()
        self.summaries: collections.Counter[str] = collections.Counter()
        self.bytes: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.per_second: collections.Counter[tuple[str, int]] = collections.Counter()
        self.paths: dict[str, set[str]] = collections.defaultdict(set)
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with open(self._path, "rb") as f:
            buffer = b""
            while True:
                chunk = f.read()
                if not chunk:
                    if self.done.is_set():
                        return
                    time.sleep(0.01)
                    continue
                second = int(time.monotonic())
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self._line(line, second)

    def _line(self, line: bytes, second: int) -> None:
        if line.startswith(b'{"kind":"op"'):
            if b'"msg":"events_dropped"' in line:
                record = json.loads(line)
                self.dropped[record["watcher"]] += record["count"]
            return
        if b'"count":' not in line and line.startswith(b'{"kind":"event"'):
            # A plain event line: one event. Only the watcher is read (cheaply).
            start = line.index(b'"watcher":"') + 11
            watcher = line[start : line.index(b'"', start)].decode()
            count, kind, path = 1, "event", ""
        else:
            record = json.loads(line)
            watcher, kind, count = record["watcher"], record["kind"], record["count"]
            path = record.get("path", "")
            for entry in record.get("paths", ()):
                self.paths[watcher].add(entry["path"])
        if path:
            self.paths[watcher].add(path)
        self.lines[watcher] += 1
        self.summaries[watcher] += kind == "summary"
        self.bytes[watcher] += len(line) + 1
        self.events[watcher] += count
        self.per_second[watcher, second] += 1

    def max_per_second(self, watcher: str) -> int:
        return max((n for (w, _), n in self.per_second.items() if w == watcher), default=0)

    def stop(self) -> None:
        self.done.set()
        self._thread.join()


class _Inotifywait:
    """`inotifywait -m -e close_write` on the container's /data, inside its mount namespace,
    its lines counted (read as they come, so it never blocks on a full pipe)."""

    def __init__(self, ctr: Container) -> None:
        import subprocess  # noqa: PLC0415 - only this benchmark starts a program

        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(ctr.pid), "-m", "inotifywait", "-m", "-q", "-e",
             "close_write", str(ctr.root / "data")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.lines = 0
        self._thread = threading.Thread(target=self._count)
        self._thread.start()

    def _count(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 1 << 16):
            self.lines += chunk.count(b"\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self._thread.join()


def volume(rate: int, seconds: float, files: int, window_ms: int, budget: int) -> dict[str, object]:
    """Issue 15: one watch at `rate` events/s on `files` files with coalescing (`window_ms`,
    line budget `budget`), then the same workload on a watch without either, in one fimd:
    lines/s, bytes/s, exact accounting, and CPU per event of fimd, its engines and an
    `inotifywait -m` on the same files during the plain phase."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir, "--line-budget=0"))
        coalesced_ctr, plain_ctr = _containers(stack, workdir, 2)
        specs = []
        for name, ctr, window, lines in (
            ("coalesced", coalesced_ctr, window_ms, budget),
            ("plain", plain_ctr, 0, 0),
        ):
            watch = spec(
                container_id=ctr.container_id, paths=(str(ctr.root / "data"),),
                events=("closewrite",), pod_uid=name, watcher_uid=name,
            )  # fmt: skip
            watch.identity.watcher_name = name
            watch.subjects[0].coalesce_ms = window
            watch.line_budget = lines
            specs.append(watch)
        _create_all(fimd, specs, timeout=60)
        tail = _VolumeTail(fimd.stdout_path)
        stack.callback(tail.stop)
        count = int(rate * seconds)
        result: dict[str, object] = {
            "bench": "volume", "rate": rate, "seconds": seconds, "files": files,
            "coalesce_ms": window_ms, "budget": budget,
        }  # fmt: skip
        for name, ctr in (("coalesced", coalesced_ctr), ("plain", plain_ctr)):
            watcher = f"shop/{name}"
            engines = _children(fimd.proc.pid)
            iw: _Inotifywait | None = _Inotifywait(ctr)
            if iw is not None:
                time.sleep(1.0)  # inotifywait -q says nothing when ready
            cpu0 = [_cpu_seconds(pid) for pid in (fimd.proc.pid, *engines)]
            iw0 = _cpu_seconds(iw.proc.pid) if iw is not None else 0.0
            ctr.command(f"b {ctr.root / 'data'} {count} {rate} {files}")
            write_seconds = ctr.result()
            deadline = time.monotonic() + 30 + window_ms / 1000
            while time.monotonic() < deadline and (
                tail.events[watcher] + tail.dropped[watcher] < count
                or (iw is not None and iw.lines < count)
            ):
                time.sleep(0.1)
            cpu = [_cpu_seconds(pid) for pid in (fimd.proc.pid, *engines)]
            fimd_cpu, engines_cpu = cpu[0] - cpu0[0], sum(cpu[1:]) - sum(cpu0[1:])
            phase: dict[str, object] = {
                "written": count,
                "write_rate": round(count / write_seconds),
                "lines": tail.lines[watcher],
                "summaries": tail.summaries[watcher],
                "events_accounted": tail.events[watcher] + tail.dropped[watcher],
                "exact": tail.events[watcher] + tail.dropped[watcher] == count,
                # Plain lines are counted without parsing their paths.
                "distinct_paths_seen": len(tail.paths[watcher]) if name != "plain" else None,
                "lines_per_s": round(tail.lines[watcher] / write_seconds, 1),
                "max_lines_in_a_second": tail.max_per_second(watcher),
                "bytes_per_s": round(tail.bytes[watcher] / write_seconds),
                "fimd_cpu_us_per_event": round(fimd_cpu / count * 1e6, 2),
                "engines_cpu_us_per_event": round(engines_cpu / count * 1e6, 2),
            }
            if iw is not None:
                iw_cpu = _cpu_seconds(iw.proc.pid) - iw0
                iw.stop()
                phase["inotifywait_lines"] = iw.lines
                phase["inotifywait_cpu_us_per_event"] = round(iw_cpu / count * 1e6, 2)
                per_event = max(iw_cpu / count, 1e-12)
                phase["engines_vs_inotifywait"] = round(engines_cpu / count / per_event, 2)
                total = (fimd_cpu + engines_cpu) / count
                phase["fimd_and_engines_vs_inotifywait"] = round(total / per_event, 2)
            result[name] = phase
        return result


def _with_baseline(fimd: FimdProcess, ctr: Container, files: int, size: int) -> float:
    """Writes the files before the watch, creates it and waits for its first comparison
    (the baseline that the first event of each file takes `previous` from); its seconds."""
    ctr.command(f"h {ctr.root / 'data'} {files} 0 {files} {size}")
    ctr.result()
    _watch(fimd, ctr, 0, hash_="sha256")
    deadline = time.monotonic() + 120
    while not any(line.get("kind") == "scan" for line in fimd.lines()):
        assert time.monotonic() < deadline, "no scan line"
        time.sleep(0.1)
    (scan,) = (line for line in fimd.lines() if line.get("kind") == "scan")
    assert scan["scanned"] == files + 1, scan
    return float(scan["durationSeconds"])


def hashing(
    rate: int, seconds: float, files: int, size: int, baseline: bool = False
) -> dict[str, object]:
    """One container rewrites `files` files of `size` bytes `rate` times a second under a
    subject with hash: sha256; every event line must carry the file's hash. With
    `baseline`, fimd keeps baselines (--baseline-db) and the files exist before the watch,
    so the first line of each file takes `previous` from the baseline."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        extra = ("--baseline-db", str(workdir / "baselines.sqlite")) if baseline else ()
        fimd = stack.enter_context(_fimd(workdir, *extra))
        (ctr,) = _containers(stack, workdir, 1)
        scan_seconds = None
        if baseline:
            scan_seconds = _with_baseline(fimd, ctr, files, size)
        else:
            _watch(fimd, ctr, 0, hash_="sha256")
        count = int(rate * seconds)
        start = time.monotonic()
        ctr.command(f"h {ctr.root / 'data'} {count} {rate} {files} {size}")
        write_seconds = ctr.result()
        counter = _Counter(fimd.stdout_path)
        stack.callback(counter.close)
        last_change, previous = time.monotonic(), -1
        while counter.update() < count and time.monotonic() - last_change < 5:
            if counter.events != previous:
                previous, last_change = counter.events, time.monotonic()
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        hashed = with_previous = first_with_previous = 0
        seen: set[str] = set()
        skipped: collections.Counter[str] = collections.Counter()
        with open(fimd.stdout_path, "rb") as out:
            for raw in out:
                if raw.startswith(b'{"kind":"event"'):
                    line = json.loads(raw)
                    hashed += "sha256" in line
                    with_previous += "previous" in line
                    if line["path"] not in seen:
                        seen.add(line["path"])
                        first_with_previous += "previous" in line
                    if "hashSkipped" in line:
                        skipped[line["hashSkipped"]] += 1
        return {
            "bench": "hashing",
            "baseline": baseline,
            "baseline_scan_seconds": scan_seconds,
            "with_previous": with_previous,
            "first_lines_with_previous": f"{first_with_previous}/{len(seen)}",
            "target_rate": rate,
            "file_bytes": size,
            "written": count,
            "lines": counter.events,
            "lost": count - counter.events,
            "loss_reports": counter.loss_reports,
            "with_sha256": hashed,
            "hash_skipped": dict(skipped),
            "write_rate": round(count / write_seconds),
            "end_to_end_rate": round(counter.events / elapsed),
            "fimd_cpu_seconds": round(_cpu_seconds(fimd.proc.pid), 1),
            "fimd_rss_mib": round(_rss_mib(fimd.proc.pid), 1),
        }


def _tree(top: Path, files: int, size: int, per_dir: int = 1000) -> None:
    block = os.urandom(size)
    for i in range(files):
        directory = top / f"d{i // per_dir}"
        if i % per_dir == 0:
            directory.mkdir(parents=True)
        (directory / f"f{i}").write_bytes(i.to_bytes(8, "little") + block[8:])


def _sha256deep(top: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["sha256deep", "-r", str(top)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _ours(root: int, db: Path) -> tuple[float, float, Walk]:
    """(walk and hash seconds, total with the SQLite write, the walk)."""
    key = BaselineKey("bench", "pod", "app", "watcher", "subject")
    start = time.perf_counter()
    walked = walk(root, [b"/data"], Rules(recursive=True, hash_content=True))
    walked_at = time.perf_counter()
    store = Store(str(db))
    store.replace(key, walked.entries, 1)
    store.close()
    return walked_at - start, time.perf_counter() - start, walked


def _recompare(root: int, db: Path) -> tuple[float, int]:
    """A comparison of the unchanged tree with its stored baseline, as the scanner makes it
    (a scheduled scan): load, walk reusing the stored hashes, diff, store; (seconds, drift)."""
    key = BaselineKey("bench", "pod", "app", "watcher", "subject")
    start = time.perf_counter()
    store = Store(str(db))
    before = store.open(key)
    assert before is not None
    walked = walk(root, [b"/data"], Rules(recursive=True, hash_content=True), before.get)
    found = compare(before.entries(), walked)
    store.update(key, 2, found.write, found.gone)
    store.close()
    return time.perf_counter() - start, len(found.changes)


def baseline(files: int, size: int, rounds: int) -> dict[str, object]:
    """A baseline of `files` files of `size` bytes (what fimd's scanner thread does: the
    walk inside a root with openat2, SHA-256 of every file, the SQLite write) against
    `sha256deep -r` on the same tree, alternating, page cache warm for both."""
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / "root"
        _tree(top / "data", files, size)
        root = os.open(top, os.O_PATH | os.O_DIRECTORY)
        deep: list[float] = []
        ours: list[float] = []
        walks: list[float] = []
        again: list[float] = []
        try:
            _sha256deep(top / "data")  # warms the page cache
            for i in range(rounds):
                deep.append(_sha256deep(top / "data"))
                walk_seconds, total, walked = _ours(root, Path(tmp) / f"b{i}.sqlite")
                walks.append(walk_seconds)
                ours.append(total)
                seconds, drift = _recompare(root, Path(tmp) / f"b{i}.sqlite")
                assert drift == 0, drift
                again.append(seconds)
            db_bytes = sum(p.stat().st_size for p in Path(tmp).glob(f"b{rounds - 1}.sqlite*"))
        finally:
            os.close(root)
        assert len(walked.entries) == files + -(-files // 1000) + 1
        assert all(e.sha256 for e in walked.entries.values() if e.kind == "file")
        return {
            "bench": "baseline",
            "files": files,
            "file_bytes": size,
            "rounds": rounds,
            "sha256deep_seconds": [round(x, 2) for x in deep],
            "baseline_seconds": [round(x, 2) for x in ours],
            "walk_and_hash_seconds": [round(x, 2) for x in walks],
            "unchanged_recompare_seconds": [round(x, 2) for x in again],
            "ratio_best": round(min(ours) / min(deep), 2),
            "ratio_median": round(sorted(ours)[rounds // 2] / sorted(deep)[rounds // 2], 2),
            "sqlite_bytes": db_bytes,
            "sqlite_bytes_per_entry": round(db_bytes / len(walked.entries)),
        }


def _synthetic(count: int, salt: int) -> dict[bytes, Entry]:
    entry = Entry("file", 0o100644, 0, 0, 4096, salt, sha256="a" * 64)
    return {f"/data/{i // 1000:04}/{i:07}".encode(): entry for i in range(count)}


def baseline_report(baselines: int, entries: int, rounds: int) -> dict[str, object]:
    """The /baselines query (`baseline_store.summaries`, one aggregate over every entry of a
    watcher's baselines) on a store of `baselines` baselines of `entries` entries: alone,
    and while the scanner's writer replaces another watcher's baseline of `entries` entries
    over and over (the reader must not wait for it, nor it for the reader)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "b.sqlite")
        store = Store(path)
        for n in range(baselines):
            key = BaselineKey("bench", f"pod-{n}", "app", "watcher", "subject")
            store.replace(key, _synthetic(entries, 1), 1)
        other = BaselineKey("bench", "pod-x", "app", "writer", "subject")
        store.replace(other, _synthetic(entries, 1), 1)

        def query() -> float:
            start = time.perf_counter()
            found = summaries(path, "watcher", limit=2001, seconds=60)
            assert sum(s.entries for s in found) == baselines * entries
            return time.perf_counter() - start

        store.close()
        alone = [query() for _ in range(rounds)]
        writes: list[float] = []
        stop = threading.Event()
        started = threading.Event()

        def writer() -> None:  # SQLite connections stay in their thread: its own Store
            mine = Store(path)
            salt = 2
            try:
                while not stop.is_set():
                    begin = time.perf_counter()
                    mine.replace(other, _synthetic(entries, salt), salt)
                    writes.append(time.perf_counter() - begin)
                    started.set()
                    salt += 1
            finally:
                mine.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            started.wait(60)
            busy = [query() for _ in range(rounds)]
        finally:
            stop.set()
            thread.join()
        return {
            "bench": "baseline-report",
            "baselines": baselines,
            "entries_each": entries,
            "query_seconds_alone": [round(x, 3) for x in alone],
            "query_seconds_beside_writer": [round(x, 3) for x in busy],
            "writer_replaces_meanwhile": len(writes),
            "writer_replace_seconds_median": round(sorted(writes)[len(writes) // 2], 3)
            if writes
            else None,
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fimd-arg", action="append", default=[], help="extra fimd flag (repeatable)"
    )
    sub = parser.add_subparsers(dest="bench", required=True)
    tput = sub.add_parser("throughput")
    tput.add_argument("--watches", type=int, nargs="+", default=[1, 10, 100])
    tput.add_argument("--rate", type=int, default=50_000)
    tput.add_argument("--seconds", type=float, default=4)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=5_000)
    lat.add_argument("--seconds", type=float, default=5)
    cap = sub.add_parser("capacity")
    cap.add_argument("--containers", type=int, default=200)
    cap.add_argument("--watches", type=int, default=2000)
    loud = sub.add_parser("noisy")
    loud.add_argument("--rate", type=int, default=50_000)
    loud.add_argument("--seconds", type=float, default=60)
    loud.add_argument("--quiet", type=int, default=500)
    loud.add_argument("--per-container", type=int, default=10)
    cost = sub.add_parser("seal")
    cost.add_argument("--rate", type=int, default=50_000)
    cost.add_argument("--seconds", type=float, default=4)
    cost.add_argument("--runs", type=int, default=3)
    vol = sub.add_parser("volume")
    vol.add_argument("--rate", type=int, default=50_000)
    vol.add_argument("--seconds", type=float, default=10)
    vol.add_argument("--files", type=int, default=10)
    vol.add_argument("--coalesce-ms", type=int, default=1000)
    vol.add_argument("--budget", type=int, default=100)
    hsh = sub.add_parser("hashing")
    hsh.add_argument("--rate", type=int, default=10_000)
    hsh.add_argument("--seconds", type=float, default=10)
    hsh.add_argument("--files", type=int, default=1000)
    hsh.add_argument("--size", type=int, default=4096)
    hsh.add_argument(
        "--baseline", action="store_true", help="with --baseline-db, files in the baseline"
    )
    base = sub.add_parser("baseline")
    base.add_argument("--files", type=int, default=100_000)
    base.add_argument("--size", type=int, default=4096)
    base.add_argument("--rounds", type=int, default=3)
    report = sub.add_parser("baseline-report")
    report.add_argument("--baselines", type=int, default=10)
    report.add_argument("--entries", type=int, default=20_000)
    report.add_argument("--rounds", type=int, default=5)
    return parser


def main() -> None:
    args = _parser().parse_args()
    FIMD_ARGS.extend(args.fimd_arg)
    if args.bench == "throughput":
        for watches in args.watches:
            print(json.dumps(throughput(watches, args.rate, args.seconds)), flush=True)
    elif args.bench == "seal":
        print(json.dumps(seal_cost(args.rate, args.seconds, args.runs)), flush=True)
    elif args.bench == "latency":
        print(json.dumps(latency(args.rate, args.seconds)), flush=True)
    elif args.bench == "capacity":
        print(json.dumps(capacity(args.containers, args.watches)), flush=True)
    elif args.bench == "hashing":
        result = hashing(args.rate, args.seconds, args.files, args.size, args.baseline)
        print(json.dumps(result), flush=True)
    elif args.bench == "baseline":
        print(json.dumps(baseline(args.files, args.size, args.rounds)), flush=True)
    elif args.bench == "baseline-report":
        result = baseline_report(args.baselines, args.entries, args.rounds)
        print(json.dumps(result), flush=True)
    elif args.bench == "volume":
        result = volume(args.rate, args.seconds, args.files, args.coalesce_ms, args.budget)
        print(json.dumps(result), flush=True)
    else:
        print(json.dumps(noisy(args.rate, args.seconds, args.quiet, args.per_container)))


if __name__ == "__main__":
    main()
