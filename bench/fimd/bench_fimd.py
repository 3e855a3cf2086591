"""fimd benchmarks: end-to-end throughput, write-to-line latency, and fimd RSS.

Everything is real: `python -m services.fimd` over mTLS (127.0.0.1), one real fimnotify per
watch, writers in namespaced "container" processes in real kubepods cgroups
(services/fimd/tests/container.py), stdout to a file. Needs root. Run from the repository
root with the protobuf modules on PYTHONPATH (see docs/performance.md, section fimd):

    python -m bench.fimd.bench_fimd throughput --watches 1 10 100 --rate 50000 --seconds 4
    python -m bench.fimd.bench_fimd latency --rate 5000 --seconds 5
    python -m bench.fimd.bench_fimd rss --watches 0 50 100 150

Each prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fim.v1 import fim_pb2
from services.fimd.tests.certs import make_pki
from services.fimd.tests.container import Container
from services.fimd.tests.fimd_process import FimdProcess
from services.fimd.tests.specs import spec

_STUB = r"""
import signal, sys, time, posix_ipc
from libs.fimnotify_api.config import loads
from libs.fimnotify_api.wire import Packer, ReadyRecord
config = loads(sys.stdin.buffer.read())
queue = posix_ipc.MessageQueue(config.queue_name, write=True, read=False)
queue.send(Packer().pack([ReadyRecord(time.time_ns(), 1, 0)])[0])
signal.sigwait({signal.SIGTERM})
"""


@contextmanager
def _fimd(workdir: Path, *extra: str) -> Iterator[FimdProcess]:
    fimd = FimdProcess(workdir, make_pki(workdir), f"/fimk8s-bench.{os.getpid()}.", *extra)
    try:
        yield fimd
    finally:
        fimd.stop()


def _watch(fimd: FimdProcess, ctr: Container, index: int) -> None:
    watch = spec(
        container_id=ctr.container_id,
        paths=(str(ctr.root / "data"),),
        events=("closewrite",),
        pod_uid=f"bench-{index}",
    )
    fimd.stub.CreateWatch(fim_pb2.CreateWatchRequest(spec=watch), timeout=30)
    fimd.wait_active(watch.key, timeout=60)


def _containers(stack: ExitStack, workdir: Path, count: int) -> list[Container]:
    out = []
    for i in range(count):
        ctr = Container(workdir / f"ctr{i}").start()
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

    def update(self) -> int:
        data = self._partial + self._file.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.startswith(b'{"kind":"event"'):
                self.events += 1
            elif any(m in line for m in _LOSS_MESSAGES):
                self.loss_reports += 1
        return self.events

    def close(self) -> None:
        self._file.close()


def throughput(watches: int, rate: int, seconds: float) -> dict[str, object]:
    """`watches` containers with one watch each write `rate` events/s in total."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir))
        ctrs = _containers(stack, workdir, watches)
        for i, ctr in enumerate(ctrs):
            _watch(fimd, ctr, i)
        per_writer = max(1, rate // watches)
        count = int(per_writer * seconds)
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
        return {
            "bench": "throughput",
            "watches": watches,
            "target_rate": rate,
            "written": expected,
            "lines": got,
            "lost": expected - got,
            "loss_reports": lost_lines,
            "write_rate": round(expected / write_seconds),
            "end_to_end_rate": round(got / elapsed),
            "fimd_rss_mib": round(_rss_mib(fimd.proc.pid), 1),
        }


def _parse_time(text: str) -> int:
    """Nanoseconds of an event line's RFC 3339 `time` (microsecond precision)."""
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = calendar.timegm(stamp.timetuple())
    return seconds * 1_000_000_000 + stamp.microsecond * 1000


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


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
        deadline = time.monotonic() + 5
        while len(samples) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        reader.join()
        return {
            "bench": "latency",
            "rate": rate,
            "events": count,
            "lines": len(samples),
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


def rss(checkpoints: list[int]) -> dict[str, object]:
    """fimd's own RSS as watches are added, at each checkpoint. The children are a stub that
    only reports READY (fimd's memory does not depend on what a child watches), because
    this node cannot hold 200 real watches: one inotify instance each exceeds
    max_user_instances (128), and 200 queues exceed RLIMIT_MSGQUEUE (see the docs)."""
    stub = f"{shlex.quote(sys.executable)} -c {shlex.quote(_STUB)}"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        fimd = stack.enter_context(_fimd(workdir, "--fimnotify-cmd", stub))
        (ctr,) = _containers(stack, workdir, 1)
        result: dict[str, object] = {"bench": "rss"}
        created = 0
        for target in sorted(checkpoints):
            while created < target:
                _watch(fimd, ctr, created)
                created += 1
            result[f"fimd_rss_mib_{target}_watches"] = round(_rss_mib(fimd.proc.pid), 1)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    tput = sub.add_parser("throughput")
    tput.add_argument("--watches", type=int, nargs="+", default=[1, 10, 100])
    tput.add_argument("--rate", type=int, default=50_000)
    tput.add_argument("--seconds", type=float, default=4)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=int, default=5_000)
    lat.add_argument("--seconds", type=float, default=5)
    mem = sub.add_parser("rss")
    mem.add_argument("--watches", type=int, nargs="+", default=[0, 50, 100, 150])
    args = parser.parse_args()
    if args.bench == "throughput":
        for watches in args.watches:
            print(json.dumps(throughput(watches, args.rate, args.seconds)), flush=True)
    elif args.bench == "latency":
        print(json.dumps(latency(args.rate, args.seconds)), flush=True)
    else:
        print(json.dumps(rss(args.watches)), flush=True)


if __name__ == "__main__":
    main()
