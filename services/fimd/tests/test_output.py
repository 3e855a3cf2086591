"""LineWriter: batching, byte bounds, never waiting, and counted, reported losses."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter

OVERHEAD = LineWriter.CHUNK_OVERHEAD


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.005)


class Capture:
    """Reads a pipe in a thread: what a LineWriter writes, as lines (without newlines)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while chunk := os.read(self.read_fd, 1 << 16):
            *complete, buffer = (buffer + chunk).split(b"\n")
            self.lines.extend(line.decode() for line in complete)
        os.close(self.read_fd)

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def close(self) -> None:
        os.close(self.write_fd)
        self._thread.join(5)


class Drops:
    """An on_drop hook that counts (kind, stage) -> lines."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, kind: str, stage: str, count: int) -> None:
        with self._lock:
            self.counts[kind, stage] += count

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full of empty lines: the next write blocks."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for size in (1 << 16, 1):
        try:
            while True:
                os.write(write_fd, b"\n" * size)
        except BlockingIOError:
            pass
    os.set_blocking(write_fd, True)
    return read_fd, write_fd


@contextmanager
def drained(read_fd: int) -> Iterator[list[str]]:
    """Reads `read_fd` to its end in a thread; yields the list the lines end up in."""
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 1 << 20), b""))
    )
    reader.start()
    result: list[str] = []
    try:
        yield result
    finally:
        reader.join(10)
        os.close(read_fd)
        result.extend(line for line in b"".join(chunks).decode().split("\n") if line)


def reports(text: list[str]) -> list[dict[str, Any]]:
    parsed = [json.loads(t) for t in text if t.startswith("{")]
    return [p for p in parsed if p.get("msg") == "output_dropped"]


def test_lines_arrive_in_order() -> None:
    capture = Capture()
    writer = LineWriter(capture.write_fd, "n1")
    for i in range(1000):
        assert writer.put_events([f'{{"i":{i}}}\n'])
    writer.op("hello", "info", x=1)
    writer.close()
    capture.close()
    parsed = capture.json()
    assert [p["i"] for p in parsed if "i" in p] == list(range(1000))
    assert [p["msg"] for p in parsed if p.get("kind") == "op"] == ["hello"]


def test_buffers_are_bounded_in_bytes_and_every_drop_is_counted_and_reported() -> None:
    read_fd, write_fd = full_pipe()
    drops = Drops()
    line = "e" * 99 + "\n"  # 100 bytes, charged 100 + OVERHEAD
    op_line = json.dumps({"kind": "op", "msg": "x" * 72}) + "\n"
    writer = LineWriter(
        write_fd,
        "n1",
        max_event_bytes=10 * (100 + OVERHEAD),
        max_op_bytes=3 * (len(op_line) + OVERHEAD),
        on_drop=drops,
    )
    assert writer.put_events(["first\n"])
    wait_for(lambda: writer.buffered() == (0, 0))  # the writer is stuck writing it
    events = [writer.put_events([line]) for _ in range(30)]
    assert events == [True] * 10 + [False] * 20
    assert writer.buffered() == (10 * (100 + OVERHEAD), 0)
    # A batch is kept or dropped whole: 3 lines that would not all fit.
    assert not writer.put_events([line, line, line])
    ops = [writer.put_op(op_line) for _ in range(5)]
    assert ops == [True] * 3 + [False] * 2
    assert drops.counts == {("event", "buffer"): 23, ("op", "buffer"): 2}
    with drained(read_fd) as text:
        writer.close()
        os.close(write_fd)
    assert text[0] == "first"
    assert text.count(line[:-1]) == 10
    assert text.count(op_line[:-1]) == 3
    (report,) = reports(text)
    assert report["level"] == "error"
    assert (report["count"], report["events"], report["ops"], report["writeFailed"]) == (
        25,
        23,
        2,
        0,
    )
    assert "error" not in report


def test_a_pipe_nobody_reads_never_blocks_the_producer() -> None:
    read_fd, write_fd = os.pipe()
    drops = Drops()
    writer = LineWriter(
        write_fd, "n1", max_event_bytes=1 << 20, max_op_bytes=64 << 10, on_drop=drops
    )
    line = "x" * 1023 + "\n"
    slowest = 0.0
    results = []
    start = time.monotonic()
    for i in range(5000):  # 5 MB: far beyond the pipe and the buffer
        before = time.monotonic()
        results.append(writer.put_events([line]))
        if i % 10 == 0:
            writer.op("tick", "info", i=i)
        slowest = max(slowest, time.monotonic() - before)
    elapsed = time.monotonic() - start
    assert slowest < 0.25, slowest
    assert elapsed < 5, elapsed
    dropped = results.count(False)
    assert dropped > 3000
    assert drops.counts["event", "buffer"] == dropped
    # Then a reader comes: every line is either written or counted, and reported.
    with drained(read_fd) as text:
        writer.close()
        os.close(write_fd)
    assert text.count(line[:-1]) == 5000 - dropped
    ticks = sum(1 for t in text if '"msg":"tick"' in t)
    assert ticks + drops.counts["op", "buffer"] == 500
    assert sum(r["count"] for r in reports(text)) == drops.total()
    assert sum(r["events"] for r in reports(text)) == dropped


class ScriptedWrite:
    """os.write with a script: an int writes at most that many bytes, an errno fails."""

    def __init__(self) -> None:
        self.script: list[int | OSError] = []
        self.calls = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        self.calls += 1
        if not self.script:
            return os.write(fd, data)
        step = self.script.pop(0)
        if isinstance(step, OSError):
            raise step
        return os.write(fd, data[:step])


def test_partial_writes_are_continued() -> None:
    capture = Capture()
    write = ScriptedWrite()
    write.script = [7] * 1000
    writer = LineWriter(capture.write_fd, "n1", write=write)
    for i in range(100):
        writer.put_events([f'{{"i":{i}}}\n', f'{{"j":{i}}}\n'])
    writer.close()
    capture.close()
    parsed = capture.json()
    assert [p["i"] for p in parsed if "i" in p] == list(range(100))
    assert [p["j"] for p in parsed if "j" in p] == list(range(100))
    assert write.calls > 200


def test_a_failed_write_counts_and_reports_the_lines_it_lost() -> None:
    capture = Capture()
    write = ScriptedWrite()
    drops = Drops()
    writer = LineWriter(capture.write_fd, "n1", write=write, on_drop=drops, retry_interval=60)
    # 15 bytes out (line 0 and half of line 1), then EIO: lines 1 and 2 are lost.
    write.script = [15, OSError(errno.EIO, "I/O error")]
    assert writer.put_events(["line-0000\n", "line-0001\n", "line-0002\n"])
    wait_for(lambda: drops.total() == 2)
    assert drops.counts == {("event", "write"): 2}
    # A failed write of an operational line.
    write.script = [OSError(errno.ENOSPC, "No space left on device")]
    writer.op("lost")
    wait_for(lambda: drops.total() == 3)
    assert writer.put_events(["line-0003\n"])
    writer.close()
    capture.close()
    # The fragment of line 1 ends with a newline of its own: line 3 stays whole.
    assert capture.lines[:2] == ["line-0000", "line-"]
    assert capture.lines[-1] == "line-0003"
    (report,) = reports(capture.lines)
    assert (report["count"], report["events"], report["ops"], report["writeFailed"]) == (
        3,
        2,
        1,
        3,
    )
    assert report["error"] == "ENOSPC"
    assert drops.counts == {("event", "write"): 2, ("op", "write"): 1}


def test_after_a_failed_write_the_report_is_retried_alone() -> None:
    capture = Capture()
    write = ScriptedWrite()
    drops = Drops()
    writer = LineWriter(capture.write_fd, "n1", write=write, on_drop=drops, retry_interval=0.05)
    write.script = [OSError(errno.EIO, "I/O error"), OSError(errno.EIO, "I/O error")]
    assert writer.put_events(["line-0000\n"])
    # The first write loses the line, the first retry of the report fails too, then it works.
    wait_for(lambda: len(reports(capture.lines)) == 1, timeout=5)
    (report,) = reports(capture.lines)
    assert (report["count"], report["writeFailed"], report["error"]) == (1, 1, "EIO")
    writer.close()
    capture.close()
    assert len(reports(capture.lines)) == 1
    assert drops.counts == {("event", "write"): 1}


def test_a_closed_stdout_loses_lines_counted_and_never_blocks() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    drops = Drops()
    writer = LineWriter(write_fd, "n1", on_drop=drops)
    start = time.monotonic()
    accepted = sum(writer.put_events([f"line {i}\n"]) for i in range(1000))
    for _ in range(10):
        writer.op("x")
    writer.close()
    assert time.monotonic() - start < 5
    assert drops.counts["event", "write"] + drops.counts["event", "buffer"] == 1000
    assert drops.counts["event", "write"] == accepted
    assert drops.counts["op", "write"] + drops.counts["op", "buffer"] == 10
    os.close(write_fd)


def test_lines_put_after_close_are_dropped_and_counted() -> None:
    capture = Capture()
    drops = Drops()
    writer = LineWriter(capture.write_fd, "n1", on_drop=drops)
    writer.close()
    assert not writer.put_events(["a\n", "b\n"])
    assert not writer.put_op("c\n")
    assert drops.counts == {("event", "buffer"): 2, ("op", "buffer"): 1}
    capture.close()


def test_a_non_blocking_stdout_is_waited_for_by_the_writer_thread_only() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # as a shared, non-blocking stdout may be
    drops = Drops()
    writer = LineWriter(write_fd, "n1", on_drop=drops, retry_interval=0.01)
    line = "n" * 1023 + "\n"
    start = time.monotonic()
    assert all(writer.put_events([line] * 16) for _ in range(64))  # 1 MiB, 16 x the pipe
    assert time.monotonic() - start < 1
    time.sleep(0.1)  # the writer meets EAGAIN and polls
    with drained(read_fd) as text:
        writer.close()
        os.close(write_fd)
    assert text == [line[:-1]] * 1024
    assert drops.total() == 0


def test_drops_reach_fimd_metrics() -> None:
    metrics = Metrics()
    capture = Capture()
    writer = LineWriter(capture.write_fd, "n1", on_drop=metrics.output_drop)
    writer.close()
    writer.put_events(["a\n", "b\n", "c\n"])
    writer.put_op("d\n")
    sample = metrics.registry.get_sample_value
    assert sample("fimd_output_lines_dropped_total", {"kind": "event", "stage": "buffer"}) == 3
    assert sample("fimd_output_lines_dropped_total", {"kind": "op", "stage": "buffer"}) == 1
    capture.close()
