"""fimnotify benchmarks, side by side with `inotifywait` on the identical workload.

    cd <repo> && bazel run //bench/fimnotify:bench -- [throughput|setup|all]
        [--rate 50000] [--seconds 60] [--dirs 100000]

Needs root (mount namespaces). The workload runs in a namespaced "container" (own mount
namespace, private tmpfs root, see services/fimnotify/tests/harness.py); both watchers
watch it through /proc/<pid>/root.

* throughput: a writer inside the container does open/append/close on 1000 files at a
  fixed rate (3 inotify events per operation: OPEN, MODIFY, CLOSE_WRITE) for --seconds.
  fimnotify (records counted from its queue by this process, like fimd) and
  `inotifywait -m` (lines counted) run at the same time. Reports received/expected,
  overflow/drops, and CPU per event (utime+stime from /proc) with the ratio.
* setup: a tree of --dirs directories; time from spawn until watches are established
  (fimnotify: READY record; inotifywait -r: "Watches established." on stderr), run one
  after the other, plus fimnotify's RSS (VmRSS/VmHWM) once ready.

fimnotify runs as fimd runs it: an engine process holding the one watch (added with a control
message), its directory cap raised above --dirs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import posix_ipc

from libs.fimnotify_api import control
from libs.fimnotify_api.control import AddWatch, EngineConfig
from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import DroppedRecord, EventRecord, OverflowRecord, ReadyRecord, decode
from services.fimnotify.tests.harness import Container, python_env

CLK_TCK = os.sysconf("SC_CLK_TCK")

WRITER = """
import os, time
n = {ops}
rate = {rate}
paths = ['/data/f%d' % i for i in range(1000)]
start = time.monotonic()
for i in range(n):
    f = open(paths[i % 1000], 'a'); f.write('x'); f.close()
    if i % 500 == 0:
        ahead = start + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
"""


def ensure_inotifywait() -> str:
    path = shutil.which("inotifywait")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "inotify-tools"], check=True)
        path = shutil.which("inotifywait")
    assert path is not None
    return path


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Counter:
    """fimd's side of the queue, counting instead of storing."""

    def __init__(self) -> None:
        self.name = f"/fimk8s.bench.{os.getpid()}"
        self.queue = posix_ipc.MessageQueue(
            self.name, posix_ipc.O_CREX, mode=0o600, max_messages=10, max_message_size=8192
        )
        self.events = 0
        self.overflows = 0
        self.dropped = 0
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.watches = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                message, _ = self.queue.receive(0.05)
            except posix_ipc.BusyError:
                continue
            for record in decode(message):
                if isinstance(record, EventRecord):
                    self.events += 1
                elif isinstance(record, OverflowRecord):
                    self.overflows += 1
                elif isinstance(record, DroppedRecord):
                    self.dropped += record.count
                elif isinstance(record, ReadyRecord) and not self.ready.is_set():
                    self.ready_at = time.monotonic()
                    self.watches = record.watches
                    self.ready.set()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.queue.close()
        self.queue.unlink()


def spawn_fimnotify(container: Container, counter: Counter, subject: SubjectConfig) -> Any:
    """An engine (as fimd starts it) holding one watch of the container."""
    config = EngineConfig(counter.name, max_dirs=1_000_000, name="bench")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.fimnotify", *config.argv()],
        stdin=subprocess.PIPE,
        env=python_env(),
    )
    assert proc.stdin is not None
    proc.stdin.write(control.encode(AddWatch(1, container.pid, "bench", (subject,))))
    proc.stdin.flush()
    return proc


def stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class LineCounter:
    def __init__(self, stream: Any) -> None:
        self.lines = 0
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._stream.read1(1 << 16):
            self.lines += chunk.count(b"\n")

    def join(self) -> None:
        self._thread.join(10)


def us_per_event(cpu_s: float, received: int) -> float | None:
    """Microseconds of CPU per event received; None when nothing was received."""
    return round(cpu_s / received * 1e6, 3) if received else None


def read_until(stream: Any, marker: bytes, proc: subprocess.Popen[bytes], name: str) -> None:
    """Reads lines of `stream` until one holds `marker`; raises if the stream ends first
    (the process exited: readline would return b"" forever)."""
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"{name} ended (status {proc.wait(10)}) before {marker!r}")
        if marker in line:
            return


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def throughput(rate: int, seconds: int) -> dict[str, Any]:
    inotifywait = ensure_inotifywait()
    ops = rate * seconds // 3
    expected = ops * 3
    container = Container()
    counter = Counter()
    fim = iw = None
    try:
        container.run("os.makedirs('/data')\nfor i in range(1000): open('/data/f%d' % i, 'w')")
        events = (EventName.OPEN, EventName.MODIFY, EventName.CLOSEWRITE)
        fim = spawn_fimnotify(container, counter, SubjectConfig(paths=("/data",), events=events))
        assert counter.ready.wait(30), "fimnotify not ready"
        iw = subprocess.Popen(
            [
                inotifywait,
                "-m",
                "-q",
                "-e",
                "open,modify,close_write",
                f"{container.host_root}/data",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        lines = LineCounter(iw.stdout)
        time.sleep(1.0)  # inotifywait -q prints nothing when ready; give it a moment
        cpu0 = {"fim": cpu_seconds(fim.pid), "iw": cpu_seconds(iw.pid)}
        t0 = time.monotonic()
        container.run(WRITER.format(ops=ops, rate=rate / 3))
        elapsed = time.monotonic() - t0
        wait_for(lambda: counter.events >= expected and lines.lines >= expected, 30)
        cpu = {k: cpu_seconds(p.pid) - cpu0[k] for k, p in (("fim", fim), ("iw", iw))}
        result = {
            "events_expected": expected,
            "writer_seconds": round(elapsed, 2),
            "events_per_s": round(expected / elapsed),
            "fimnotify_received": counter.events,
            "fimnotify_overflows": counter.overflows,
            "fimnotify_dropped": counter.dropped,
            "inotifywait_received": lines.lines,
            "fimnotify_cpu_s": round(cpu["fim"], 2),
            "inotifywait_cpu_s": round(cpu["iw"], 2),
            # CPU per event each of them really received (a lossy one does less work).
            "fimnotify_us_per_event": us_per_event(cpu["fim"], counter.events),
            "inotifywait_us_per_event": us_per_event(cpu["iw"], lines.lines),
        }
        result["cpu_ratio"] = round(cpu["fim"] / max(cpu["iw"], 1e-9), 2)
        return result
    finally:
        for proc in (fim, iw):
            if proc is not None:
                stop(proc)
        counter.close()
        container.close()


def setup_time(dirs: int) -> dict[str, Any]:
    inotifywait = ensure_inotifywait()
    width = 1000
    container = Container()
    try:
        container.run(
            f"for i in range({(dirs + width - 1) // width}):\n"
            f"    for j in range(min({width}, {dirs} - i * {width})):\n"
            "        os.makedirs('/tree/a%d/b%d' % (i, j))\n"
        )
        events = (EventName.CREATE, EventName.MODIFY, EventName.DELETE, EventName.MOVE)
        subject = SubjectConfig(paths=("/tree",), events=events, recursive=True)
        results: dict[str, Any] = {"dirs": dirs}
        counter = Counter()
        fim = None
        try:
            t0 = time.monotonic()
            fim = spawn_fimnotify(container, counter, subject)
            assert counter.ready.wait(600), "fimnotify not ready"
            results["fimnotify_s"] = round(counter.ready_at - t0, 2)
            results["fimnotify_watches"] = counter.watches
            rss, hwm = rss_mb(fim.pid)
            results["fimnotify_rss_mb"] = round(rss, 1)
            results["fimnotify_peak_rss_mb"] = round(hwm, 1)
        finally:
            if fim is not None:
                stop(fim)
            counter.close()
        t0 = time.monotonic()
        iw = subprocess.Popen(
            [
                inotifywait,
                "-m",
                "-r",
                "-e",
                "create,modify,delete,move",
                f"{container.host_root}/tree",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert iw.stderr is not None
            read_until(iw.stderr, b"Watches established", iw, "inotifywait")
            results["inotifywait_s"] = round(time.monotonic() - t0, 2)
            results["inotifywait_rss_mb"] = round(rss_mb(iw.pid)[0], 1)
        finally:
            stop(iw)
        results["time_ratio"] = round(results["fimnotify_s"] / results["inotifywait_s"], 2)
        return results
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=("throughput", "setup", "all"), default="all", nargs="?")
    parser.add_argument("--rate", type=int, default=50_000, help="events per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--dirs", type=int, default=100_000)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.which in ("setup", "all"):
        out["setup"] = setup_time(args.dirs)
        print(json.dumps(out["setup"]), flush=True)
    if args.which in ("throughput", "all"):
        out["throughput"] = throughput(args.rate, args.seconds)
        print(json.dumps(out["throughput"]), flush=True)


if __name__ == "__main__":
    main()
